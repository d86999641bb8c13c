"""Open format, proven by someone else's reader: PyIceberg reads what we write (same rows, same
types), and we read what PyIceberg writes with its SQL catalog."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import TableError
from datashard.iceberg.expressions import col
from datashard.table import Table

ALL_TYPES = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "b", "type": "boolean", "required": True},
        {"id": 2, "name": "i", "type": "int", "required": False},
        {"id": 3, "name": "l", "type": "long", "required": True},
        {"id": 4, "name": "f", "type": "float", "required": False},
        {"id": 5, "name": "d", "type": "double", "required": False},
        {"id": 6, "name": "dec", "type": "decimal(10,2)", "required": False},
        {"id": 7, "name": "day", "type": "date", "required": False},
        {"id": 8, "name": "t", "type": "time", "required": False},
        {"id": 9, "name": "ts", "type": "timestamp", "required": False},
        {"id": 10, "name": "tstz", "type": "timestamptz", "required": False},
        {"id": 11, "name": "s", "type": "string", "required": False},
        {"id": 12, "name": "u", "type": "uuid", "required": False},
        {"id": 13, "name": "bin", "type": "binary", "required": False},
        {"id": 14, "name": "fx", "type": "fixed[4]", "required": False},
        {
            "id": 15,
            "name": "st",
            "required": False,
            "type": {
                "type": "struct",
                "fields": [
                    {"id": 16, "name": "x", "type": "long", "required": False},
                    {"id": 17, "name": "y", "type": "string", "required": False},
                ],
            },
        },
        {
            "id": 18,
            "name": "lst",
            "required": False,
            "type": {
                "type": "list",
                "element-id": 19,
                "element": "long",
                "element-required": False,
            },
        },
        {
            "id": 20,
            "name": "mp",
            "required": False,
            "type": {
                "type": "map",
                "key-id": 21,
                "key": "string",
                "value-id": 22,
                "value": "long",
                "value-required": False,
            },
        },
    ],
)


def _row(n: int) -> dict[str, Any]:
    return {
        "b": n % 2 == 0,
        "i": n,
        "l": 10_000_000_000 + n,
        "f": n + 0.5,
        "d": n / 3,
        "dec": Decimal(f"{n}.25"),
        "day": dt.date(2024, 1, 1) + dt.timedelta(days=n),
        "t": dt.time(12, 0, n % 60),
        "ts": dt.datetime(2024, 1, 1, 0, 0, n % 60),
        "tstz": dt.datetime(2024, 1, 1, 0, 0, n % 60, tzinfo=dt.timezone.utc),
        "s": f"s{n}",
        "u": uuid.UUID(int=n),
        "bin": bytes([n % 256]) * 3,
        "fx": bytes([n % 256]) * 4,
        "st": {"x": n, "y": f"y{n}"},
        "lst": [n, n + 1],
        "mp": {"k": n},
    }


def _normalize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        r = dict(r)
        if isinstance(r.get("mp"), dict):
            r["mp"] = list(r["mp"].items())
        if isinstance(r.get("u"), (bytes, bytearray)):
            r["u"] = uuid.UUID(bytes=bytes(r["u"]))
        out.append(r)
    return out


def _pyiceberg_read(table: Table, props: dict[str, str], **scan: Any) -> pa.Table:
    static = StaticTable.from_metadata(table.metadata_location, properties=props)
    result: pa.Table = static.scan(**scan).to_arrow()
    return result


def test_pyiceberg_reads_every_type_we_write(warehouse: Any) -> None:
    table = create_table("types", ALL_TYPES, warehouse=warehouse.uri, **warehouse.options)
    table.append_records([_row(n) for n in range(5)])
    table.append_records([_row(n) for n in range(5, 8)])
    ours = table.to_arrow()
    theirs = _pyiceberg_read(table, warehouse.pyiceberg_props)
    assert theirs.num_rows == 8
    key = lambda r: r["l"]  # noqa: E731
    assert sorted(_normalize(theirs.to_pylist()), key=key) == sorted(
        _normalize(ours.to_pylist()), key=key
    )
    static = StaticTable.from_metadata(
        table.metadata_location, properties=warehouse.pyiceberg_props
    )
    their_schema = static.schema()
    for ours_f, theirs_f in zip(ALL_TYPES.fields, their_schema.fields, strict=True):
        assert (ours_f.field_id, ours_f.name, ours_f.required) == (
            theirs_f.field_id,
            theirs_f.name,
            theirs_f.required,
        )
        assert str(ours_f.field_type).replace(" ", "") == str(theirs_f.field_type).replace(" ", "")
    assert static.current_snapshot().snapshot_id == table.current_snapshot().snapshot_id


def test_pyiceberg_reads_every_snapshot_and_merged_manifests(local_wh: Any) -> None:
    schema = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long", "required": True}])
    table = create_table(
        "t",
        schema,
        warehouse=local_wh.uri,
        properties={"commit.manifest.min-count-to-merge": "3"},
    )
    snaps = [table.append_records([{"n": i}, {"n": i + 100}]).snapshot_id for i in range(7)]
    manifests = table.scan()
    assert manifests.count() == 14
    for k, sid in enumerate(snaps):
        theirs = _pyiceberg_read(table, {}, snapshot_id=sid)
        assert sorted(theirs.column("n").to_pylist()) == sorted(
            table.scan(snapshot_id=sid).to_arrow().column("n").to_pylist()
        )
        assert theirs.num_rows == 2 * (k + 1)
    theirs = _pyiceberg_read(table, {}, row_filter="n >= 100")
    assert sorted(theirs.column("n").to_pylist()) == list(range(100, 107))
    assert sorted(table.scan(filter=col("n") >= 100).to_arrow().column("n").to_pylist()) == list(
        range(100, 107)
    )


@pytest.fixture
def pyiceberg_table(tmp_path: Path) -> Any:
    warehouse = tmp_path / "pyice"
    warehouse.mkdir()
    catalog = SqlCatalog(
        "default", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{warehouse}"
    )
    catalog.create_namespace("ns")
    arrow_schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("when", pa.timestamp("us")),
        ]
    )
    tbl = catalog.create_table("ns.events", schema=arrow_schema)
    tbl.append(
        pa.table(
            {
                "id": pa.array([1, 2], pa.int64()),
                "name": ["a", "b"],
                "when": pa.array([dt.datetime(2024, 1, 1), None], pa.timestamp("us")),
            },
            schema=arrow_schema,
        )
    )
    tbl.append(
        pa.table(
            {
                "id": pa.array([3], pa.int64()),
                "name": [None],
                "when": pa.array([dt.datetime(2024, 2, 1)], pa.timestamp("us")),
            },
            schema=arrow_schema,
        )
    )
    return catalog.load_table("ns.events"), warehouse


def test_we_read_a_table_pyiceberg_wrote(pyiceberg_table: Any) -> None:
    tbl, warehouse = pyiceberg_table
    assert "/metadata/00002-" in tbl.metadata_location  # their naming, not v<N>
    ours = load_table(tbl.metadata_location)
    assert ours.read_only
    expected = sorted(tbl.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert sorted(ours.to_arrow().to_pylist(), key=lambda r: r["id"]) == expected
    assert len(ours.snapshots()) == 2
    first = ours.snapshots()[0].snapshot_id
    assert ours.scan(snapshot_id=first).count() == 2
    assert ours.scan(filter=col("id") > 1).to_arrow().column("id").to_pylist() == [2, 3]
    # found by name too: the newest of its NNNNN-<uuid>.metadata.json files
    by_name = load_table("events", warehouse=f"file://{warehouse}/ns")
    assert by_name.metadata_location == tbl.metadata_location
    assert by_name.count() == 3
    with pytest.raises(Exception, match="read-only"):
        by_name.append_records([{"id": 9, "name": "z", "when": None}])


def _refused_write(table: Table) -> str:
    with pytest.raises(TableError) as info:
        table.append_records([{"id": 9, "name": "z", "when": None}])
    message = str(info.value)
    assert "read-only" in message
    assert "v<N>.metadata.json" in message  # the naming datashard commits to
    assert "load it by name in its warehouse to write" not in message  # untrue for this table
    return message


def test_pyiceberg_table_opened_by_file_says_it_is_read_only_by_name_too(
    pyiceberg_table: Any,
) -> None:
    tbl, warehouse = pyiceberg_table
    by_file = load_table(tbl.metadata_location)
    message = _refused_write(by_file)
    assert f"opened from its metadata file {tbl.metadata_location}" in message
    assert "loading it by name is read-only too" in message
    # which is true:
    by_name = load_table("events", warehouse=f"file://{warehouse}/ns")
    assert by_name.read_only
    with pytest.raises(TableError):
        by_name.append_records([{"id": 9, "name": "z", "when": None}])
    assert load_table(tbl.metadata_location).count() == 3


def test_pyiceberg_table_loaded_by_name_says_what_does_let_one_write(
    pyiceberg_table: Any, tmp_path: Path
) -> None:
    tbl, warehouse = pyiceberg_table
    by_name = load_table("events", warehouse=f"file://{warehouse}/ns")
    message = _refused_write(by_name)
    assert "load_table('events') found only metadata files" in message
    assert tbl.metadata_location in message
    assert "create_table('<new name>', table.schema(), warehouse=...)" in message
    # the advice works: the rows, copied into a new datashard table, take appends
    copy = create_table("events_copy", by_name.schema(), warehouse=f"file://{tmp_path}/ours")
    copy.append(by_name.to_arrow())
    copy.append_records([{"id": 9, "name": "z", "when": None}])
    assert sorted(copy.to_arrow().column("id").to_pylist()) == [1, 2, 3, 9]
