"""Schema evolution by field id: old files read under the new schema (by us and by PyIceberg),
incompatible changes refused with the column and types named, and nothing written then."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import CommitConflictError, SchemaError
from datashard.iceberg.expressions import col
from datashard.table import Table

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
        {"id": 3, "name": "count", "type": "int", "required": False},
        {"id": 4, "name": "ratio", "type": "float", "required": False},
        {"id": 5, "name": "price", "type": "decimal(6,2)", "required": False},
        {"id": 6, "name": "legacy", "type": "string", "required": False},
    ],
)
BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "event": f"e{i}",
            "count": i * 2,
            "ratio": 0.5,
            "price": Decimal("1.25"),
            "legacy": "old",
        }
        for i in range(start, start + n)
    ]


def _static(table: Table, wh: Any) -> pa.Table:
    static = StaticTable.from_metadata(table.metadata_location, properties=wh.pyiceberg_props)
    result: pa.Table = static.scan().to_arrow()
    return result


def _plain(arrow: pa.Table) -> list[dict[str, Any]]:
    return sorted(arrow.to_pylist(), key=lambda r: r["id"])


@BOTH
def test_every_kind_of_change_reads_old_files_by_field_id(warehouse: Any) -> None:
    table = create_table("e", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append_records(_rows(3))
    first = table.current_snapshot()
    assert first is not None
    with table.update_schema() as u:
        u.add_column("country", "string")
        u.add_column("version", "long", required=True, default=7)
        u.rename_column("event", "event_name")
        u.drop_column("legacy")
        u.update_column("count", "long")
        u.update_column("ratio", "double")
        u.update_column("price", "decimal(10,2)")
        u.move_first("event_name")
        u.move_after("version", "id")
    schema = table.schema()
    assert schema.schema_id == 1
    assert schema.column_names == [
        "event_name",
        "id",
        "version",
        "count",
        "ratio",
        "price",
        "country",
    ]
    assert [f.field_id for f in schema.fields] == [2, 1, 8, 3, 4, 5, 7]
    assert table.metadata.last_column_id == 8
    # new rows may leave out the column with a write default
    table.append_records(
        [
            {
                "id": 3,
                "event_name": "e3",
                "count": 2**40,
                "ratio": 0.25,
                "price": Decimal("12345.67"),
                "country": "NO",
            }
        ]
    )
    expected = [
        {
            "event_name": f"e{i}",
            "id": i,
            "version": 7,
            "count": i * 2,
            "ratio": 0.5,
            "price": Decimal("1.25"),
            "country": None,
        }
        for i in range(3)
    ] + [
        {
            "event_name": "e3",
            "id": 3,
            "version": 7,
            "count": 2**40,
            "ratio": 0.25,
            "price": Decimal("12345.67"),
            "country": "NO",
        }
    ]
    ours = table.to_arrow()
    assert ours.schema.names == schema.column_names
    assert ours.schema.field("count").type == pa.int64()
    assert ours.schema.field("price").type == pa.decimal128(10, 2)
    assert _plain(ours) == expected
    reloaded = load_table("e", warehouse=warehouse.uri, **warehouse.options)
    assert _plain(reloaded.to_arrow()) == expected
    theirs = _static(table, warehouse)
    assert theirs.schema.names == schema.column_names
    assert _plain(theirs) == expected
    # a filter on a renamed column prunes and matches by field id
    found = table.scan(filter=col("event_name") == "e1").to_arrow()
    assert found.column("id").to_pylist() == [1]
    # time travel reads the schema of then
    old = table.scan(snapshot_id=first.snapshot_id).to_arrow()
    assert old.schema.names == [f.name for f in SCHEMA.fields]
    assert old.column("legacy").to_pylist() == ["old"] * 3


@BOTH
def test_a_dropped_then_re_added_name_is_a_new_column(warehouse: Any) -> None:
    table = create_table("e", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append_records(_rows(2))
    table.update_schema().drop_column("legacy").commit()
    table.update_schema().add_column("legacy", "string").commit()
    assert table.schema().find_field("legacy").field_id == 7
    assert table.to_arrow().column("legacy").to_pylist() == [None, None]
    assert _static(table, warehouse).column("legacy").to_pylist() == [None, None]


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda u: u.update_column("count", "string"), "'count' from int to string"),
        (lambda u: u.update_column("id", "int"), "'id' from long to int"),
        (lambda u: u.update_column("ratio", "int"), "'ratio' from float to int"),
        (lambda u: u.update_column("price", "decimal(8,3)"), r"decimal\(6,2\) to decimal\(8,3\)"),
        (lambda u: u.update_column("price", "decimal(5,2)"), r"decimal\(6,2\) to decimal\(5,2\)"),
        (lambda u: u.update_column("count", required=True), r"optional column 'count' \(int\)"),
        (lambda u: u.add_column("n", "long", required=True), "'n' \\(long\\) without a default"),
        (lambda u: u.add_column("id", "long"), "'id' already exists"),
        (lambda u: u.add_column("n", "long", default="x"), "default 'x'.*long"),
        (lambda u: u.rename_column("nope", "x"), "no column 'nope'"),
        (lambda u: u.rename_column("event", "id"), "'id' already exists"),
        (lambda u: u.drop_column("nope"), "no column 'nope'"),
        (lambda u: u.move_before("id", "nope"), "no column 'nope'"),
        (lambda u: u.add_column("n", "geometry"), "geometry"),
    ],
)
def test_incompatible_changes_are_refused_and_change_nothing(
    local_wh: Any, change: Any, match: str
) -> None:
    table = create_table("e", SCHEMA, warehouse=local_wh.uri)
    table.append_records(_rows(2))
    table.flush()
    before = local_wh.snapshot_of_storage()
    with pytest.raises(SchemaError, match=match):
        with table.update_schema() as u:
            change(u)
    assert local_wh.snapshot_of_storage() == before
    assert table.schema() == SCHEMA


def test_a_partition_source_cannot_be_dropped(local_wh: Any) -> None:
    table = create_table(
        "e", SCHEMA, warehouse=local_wh.uri, partition_spec=[("event", "truncate[1]")]
    )
    table.append_records(_rows(2))
    table.flush()
    before = local_wh.snapshot_of_storage()
    with pytest.raises(SchemaError, match="'event'.*partition spec"):
        table.update_schema().drop_column("event").commit()
    assert local_wh.snapshot_of_storage() == before


def test_a_concurrent_schema_change_is_a_conflict_not_a_clobber(local_wh: Any) -> None:
    a = create_table("e", SCHEMA, warehouse=local_wh.uri)
    b = load_table("e", warehouse=local_wh.uri)
    a.update_schema().add_column("x", "long").commit()
    with pytest.raises(CommitConflictError, match="schema"):
        b.update_schema().add_column("y", "long").commit()
    fresh = load_table("e", warehouse=local_wh.uri)
    assert "x" in fresh.schema().column_names and "y" not in fresh.schema().column_names
    # after a refresh the change applies on top
    b.refresh().update_schema().add_column("y", "long").commit()
    assert load_table("e", warehouse=local_wh.uri).schema().column_names[-2:] == ["x", "y"]


def test_appends_with_the_old_writer_still_commit_after_an_added_column(local_wh: Any) -> None:
    writer = create_table("e", SCHEMA, warehouse=local_wh.uri)
    writer.append_records(_rows(1))
    other = load_table("e", warehouse=local_wh.uri)
    other.update_schema().add_column("extra", "string").commit()
    writer.append_records(_rows(1, start=1))  # validated against the schema it holds
    table = load_table("e", warehouse=local_wh.uri)
    assert table.to_arrow().column("extra").to_pylist() == [None, None]


def test_filtered_scans_of_a_partitioned_table_survive_a_dropped_and_re_added_name(
    local_wh: Any,
) -> None:
    table = create_table("e", SCHEMA, warehouse=local_wh.uri, partition_spec=[("id", "bucket[2]")])
    table.append_records(_rows(4))
    table.update_schema().drop_column("legacy").commit()
    table.update_schema().add_column("legacy", "long").commit()
    table.update_schema().rename_column("event", "ev").commit()
    table.append_records([{"id": 9, "ev": "e9", "legacy": 5}])
    assert table.scan(filter=col("id") == 2).to_arrow().column("ev").to_pylist() == ["e2"]
    found = table.scan(filter=col("legacy") == 5).to_arrow()
    assert found.column("id").to_pylist() == [9]
    assert _plain(_static(table, local_wh))[-1]["legacy"] == 5
