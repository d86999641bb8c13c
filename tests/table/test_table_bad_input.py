"""Bad input gets a clear error and leaves the table exactly as it was (every object's bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import CorruptMetadataError, ValidationError
from datashard.iceberg.expressions import col

SCHEMA = Schema(
    schema_id=1,
    fields=[
        {"id": 1, "name": "user_id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
        {"id": 3, "name": "note", "type": "string", "required": False},
    ],
)
GOOD = [{"user_id": 1, "event": "login", "note": None}]

BAD_RECORDS = [
    ("wrong type", [{"user_id": "one", "event": "login"}], r"row 0.*user_id.*long.*str"),
    ("missing required", [{"user_id": 1}], r"row 0.*event"),
    ("unknown field", [{"user_id": 1, "event": "x", "colour": "red"}], r"colour"),
    ("null in required", [{"user_id": 1, "event": None}], r"row 0.*event"),
    ("second row bad", [*GOOD, {"user_id": 2.5, "event": "x"}], r"row 1.*user_id"),
    ("empty", [], r"0 rows"),
]


@pytest.fixture
def table_and_state(warehouse: Any) -> tuple[Any, Any, dict[str, bytes]]:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append_records(GOOD)
    table.flush()  # the version-hint write runs in the background
    return table, warehouse, warehouse.snapshot_of_storage()


def _unchanged(warehouse: Any, before: dict[str, bytes]) -> None:
    assert warehouse.snapshot_of_storage() == before


@pytest.mark.parametrize(
    ("case", "records", "message"), BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS]
)
def test_bad_records_are_rejected_and_nothing_is_written(
    table_and_state: Any, case: str, records: list[dict[str, Any]], message: str
) -> None:
    table, warehouse, before = table_and_state
    with pytest.raises(ValidationError, match=message):
        table.append_records(records)
    _unchanged(warehouse, before)
    assert table.refresh().count() == 1


def test_bad_frames_are_rejected_and_nothing_is_written(table_and_state: Any) -> None:
    table, warehouse, before = table_and_state
    with pytest.raises(ValidationError, match="user_id"):
        table.append(pd.DataFrame({"user_id": ["a"], "event": ["x"]}))
    with pytest.raises(ValidationError, match="event"):
        table.append(pa.table({"user_id": pa.array([1], pa.int64())}))
    with pytest.raises(ValidationError, match="0 rows"):
        table.append(pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "event": []}))
    with pytest.raises(ValidationError, match="DataFrame"):
        table.append([{"user_id": 1}])
    _unchanged(warehouse, before)


def test_a_schema_that_does_not_match_the_table_is_refused(table_and_state: Any) -> None:
    table, warehouse, before = table_and_state
    reordered = Schema(schema_id=1, fields=[SCHEMA.fields[1], SCHEMA.fields[0], SCHEMA.fields[2]])
    with pytest.raises(ValidationError, match="another order"):
        table.append_records(GOOD, reordered)
    other = Schema(
        schema_id=1,
        fields=[
            {"id": 1, "name": "user_id", "type": "int", "required": True},
            {"id": 2, "name": "event", "type": "string", "required": True},
            {"id": 3, "name": "note", "type": "string", "required": False},
        ],
    )
    with pytest.raises(ValidationError, match="does not match"):
        table.append_records(GOOD, other)
    _unchanged(warehouse, before)


def test_a_failed_record_in_a_transaction_discards_the_whole_transaction(
    table_and_state: Any,
) -> None:
    table, warehouse, before = table_and_state
    with pytest.raises(ValidationError):
        with table.transaction() as tx:
            tx.append_records(GOOD)
            tx.append_records([{"user_id": "bad", "event": "x"}])
    _unchanged(warehouse, before)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_metadata_file_is_named(local_wh: Any, damage: str) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(GOOD)
    table.flush()  # the version-hint write runs in the background
    key = "t/metadata/v2.metadata.json"
    body = local_wh.backend.read(key)
    bad = {"garbage": b"\x00not json{", "truncated": body[: len(body) // 2], "empty": b""}[damage]
    local_wh.backend.write(key, bad)
    before = local_wh.snapshot_of_storage()
    with pytest.raises(CorruptMetadataError, match="v2.metadata.json"):
        load_table("t", warehouse=local_wh.uri)
    _unchanged(local_wh, before)


@pytest.mark.parametrize("what", ["manifest", "manifest list"])
def test_a_corrupt_manifest_is_named_when_read(local_wh: Any, what: str) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(GOOD)
    table.flush()  # the version-hint write runs in the background
    keys = local_wh.keys()
    if what == "manifest":
        key = next(k for k in keys if k.endswith("-m0.avro"))
    else:
        key = next(k for k in keys if "/snap-" in k)
    body = local_wh.backend.read(key)
    local_wh.backend.write(key, body[: len(body) // 2])
    before = local_wh.snapshot_of_storage()
    fresh = load_table("t", warehouse=local_wh.uri)
    with pytest.raises(CorruptMetadataError, match=key.rsplit("/", 1)[-1]):
        fresh.to_arrow()
    _unchanged(local_wh, before)


def test_a_data_file_replaced_by_another_parquet_file_is_refused_not_read(
    tmp_path: Path,
) -> None:
    """Another valid Parquet file put in a data file's place would read as wrong rows: its
    size and row count are checked against the manifest first."""
    schema = Schema(0, [{"id": 1, "name": "n", "type": "long", "required": True}])
    table = create_table("t", schema, warehouse=f"file://{tmp_path}/wh")
    table.append_records([{"n": i} for i in range(10)])
    table.append_records([{"n": i} for i in range(100, 103)])
    first, second = (t.file_path for t in table.scan().plan_files())
    Path(first.removeprefix("file://")).write_bytes(
        Path(second.removeprefix("file://")).read_bytes()
    )
    with pytest.raises(CorruptMetadataError, match="bytes, but the manifest says .* replaced"):
        table.to_arrow()
    with pytest.raises(CorruptMetadataError, match=first.rsplit("/", 1)[-1]):
        table.scan(filter=col("n") < 5).count()


@pytest.mark.parametrize("as_pandas", [False, True])
def test_an_optional_struct_with_required_children_may_be_left_out(
    tmp_path: Path, as_pandas: bool
) -> None:
    """Leaving out an optional struct column is valid (its rows are null), also when the struct
    has required children of every kind."""
    child_types = [
        "long",
        "int",
        "double",
        "boolean",
        "string",
        "binary",
        "date",
        "timestamp",
        "timestamptz",
        "time",
        "uuid",
        "fixed[4]",
        "decimal(9, 2)",
        {"type": "list", "element-id": 30, "element": "long", "element-required": True},
        {
            "type": "map",
            "key-id": 31,
            "key": "string",
            "value-id": 32,
            "value": "long",
            "value-required": True,
        },
        {
            "type": "struct",
            "fields": [{"id": 33, "name": "inner", "type": "long", "required": True}],
        },
    ]
    children = [
        {"id": 10 + i, "name": f"c{i}", "type": t, "required": True}
        for i, t in enumerate(child_types)
    ]
    schema = Schema(
        0,
        [
            {"id": 1, "name": "id", "type": "long", "required": True},
            {
                "id": 2,
                "name": "st",
                "type": {"type": "struct", "fields": children},
                "required": False,
            },
        ],
    )
    table = create_table("t", schema, warehouse=f"file://{tmp_path}/wh")
    data = pa.table({"id": pa.array([1, 2], pa.int64())})
    table.append(data.to_pandas() if as_pandas else data)
    assert table.to_arrow().to_pylist() == [{"id": 1, "st": None}, {"id": 2, "st": None}]
