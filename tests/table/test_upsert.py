"""``Table.upsert``: matched rows replaced, the rest added, in one snapshot; checked input,
conflicts with concurrent writers, both delete modes; counted against PyIceberg's result."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import CommitConflictError, ValidationError
from datashard.iceberg.expressions import col

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "region", "type": "string", "required": True},
        {"id": 3, "name": "score", "type": "double", "required": False},
    ],
)
MODES = ["copy-on-write", "merge-on-read"]


def _rows(ids: list[int], score: float = 1.0, region: str = "eu") -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "region": pa.array([region] * len(ids)),
            "score": pa.array([score] * len(ids), pa.float64()),
        }
    )


def _state(table: Any) -> dict[tuple[int, str], float | None]:
    rows = table.to_arrow().to_pylist()
    state = {(r["id"], r["region"]): r["score"] for r in rows}
    assert len(state) == len(rows), "a key appears twice"
    return state


def _table(wh: Any, mode: str, partition_spec: Any = None) -> Any:
    return create_table(
        "t",
        SCHEMA,
        warehouse=wh.uri,
        properties={"write.delete.mode": mode},
        partition_spec=partition_spec,
        **wh.options,
    )


@pytest.mark.parametrize("mode", MODES)
def test_upsert_replaces_matches_and_adds_the_rest_in_one_snapshot(
    warehouse: Any, mode: str
) -> None:
    table = _table(warehouse, mode)
    table.append(_rows(list(range(10))))
    table.append(_rows(list(range(10, 20))))
    snapshots = len(table.snapshots())
    source = pa.concat_tables(
        [_rows([3, 15], score=9.0), _rows([4], score=1.0), _rows([20, 21], score=5.0)]
    )
    result = table.upsert(source, join_cols=["id", "region"])
    assert (result.rows_updated, result.rows_inserted) == (2, 2)  # id 4 is unchanged
    assert len(table.snapshots()) == snapshots + 1
    assert result.snapshot == table.current_snapshot()
    expected = {(i, "eu"): 1.0 for i in range(20)} | {(3, "eu"): 9.0, (15, "eu"): 9.0}
    expected |= {(20, "eu"): 5.0, (21, "eu"): 5.0}
    assert _state(table) == expected
    again = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    assert _state(again) == expected
    if mode == "merge-on-read":  # no data file was rewritten: position deletes instead
        files = table.inspect.files()
        assert 1 in files["content"].to_pylist()
    # upserting the same rows again changes nothing and makes no snapshot
    same = table.upsert(source, join_cols=["id", "region"])
    assert (same.rows_updated, same.rows_inserted, same.snapshot) == (0, 0, None)
    assert len(table.snapshots()) == snapshots + 1


@pytest.mark.parametrize("mode", MODES)
def test_upsert_on_a_partitioned_table_with_null_values(local_wh: Any, mode: str) -> None:
    table = _table(local_wh, mode, partition_spec=[("region", "identity")])
    table.append(pa.concat_tables([_rows([1, 2], region="eu"), _rows([1, 2], region="us")]))
    update = pa.table(
        {
            "id": pa.array([2, 3], pa.int64()),
            "region": ["us", "us"],
            "score": pa.array([None, 7.0], pa.float64()),
        }
    )
    result = table.upsert(update, join_cols=["id", "region"])
    assert (result.rows_updated, result.rows_inserted) == (1, 1)
    assert _state(table) == {
        (1, "eu"): 1.0,
        (2, "eu"): 1.0,
        (1, "us"): 1.0,
        (2, "us"): None,
        (3, "us"): 7.0,
    }
    # the eu partition was not touched
    eu = table.inspect.partitions().to_pylist()
    assert {r["partition"]["region"]: r["record_count"] for r in eu}["eu"] == 2


def test_upsert_counts_as_pyiceberg_does(local_wh: Any, tmp_path: Any) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    source = pa.concat_tables([_rows([1, 2], score=3.0), _rows([5], score=1.0)])
    base = _rows([0, 1, 2, 3])
    catalog = SqlCatalog(
        "c", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/pyice"
    )
    catalog.create_namespace("ns")
    theirs = catalog.create_table("ns.t", schema=base.schema)
    theirs.append(base)
    expected = theirs.upsert(source, join_cols=["id"])
    ours = _table(local_wh, "copy-on-write")
    ours.append(base)
    got = ours.upsert(source, join_cols=["id"])
    assert (got.rows_updated, got.rows_inserted) == (
        expected.rows_updated,
        expected.rows_inserted,
    )
    mine = sorted(ours.to_arrow().to_pylist(), key=lambda r: r["id"])
    their_rows = sorted(theirs.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert mine == their_rows


def test_bad_upsert_input_is_refused_and_the_table_is_unchanged(local_wh: Any) -> None:
    table = _table(local_wh, "copy-on-write")
    table.append(_rows([1, 2]))
    table.flush()
    before = local_wh.snapshot_of_storage()
    with pytest.raises(ValidationError, match="'idx' is not in the table schema"):
        table.upsert(_rows([1]), join_cols=["idx"])
    with pytest.raises(ValidationError, match=r"\{'id': 1\} appears 2 times"):
        table.upsert(_rows([1, 1, 3]), join_cols=["id"])
    nulls = _rows([1, 2]).set_column(2, "score", pa.array([1.0, None]))
    with pytest.raises(ValidationError, match="'score' is null in 1 input row"):
        table.upsert(nulls, join_cols=["id", "score"])
    with pytest.raises(ValidationError, match="join_cols"):
        table.upsert(_rows([1]))  # no identifier fields to default to
    with pytest.raises(ValidationError, match="join_cols"):
        table.upsert(_rows([1]), join_cols="id")  # type: ignore[arg-type]
    assert local_wh.snapshot_of_storage() == before
    assert _state(table) == {(1, "eu"): 1.0, (2, "eu"): 1.0}


@pytest.mark.parametrize("mode", MODES)
def test_upsert_conflicts_with_a_writer_that_added_one_of_its_keys(
    local_wh: Any, mode: str
) -> None:
    table = _table(local_wh, mode)
    table.append(_rows([1, 2, 3]))
    other = load_table("t", warehouse=local_wh.uri)
    other.append(_rows([7], score=2.0))  # lands first, with a key the upsert inserts
    with pytest.raises(CommitConflictError):
        table.upsert(_rows([2, 7], score=5.0), join_cols=["id"])
    table.refresh()
    assert _state(table) == {(1, "eu"): 1.0, (2, "eu"): 1.0, (3, "eu"): 1.0, (7, "eu"): 2.0}
    # a concurrent append of other keys does not conflict (its file cannot hold them)
    other.refresh().append(_rows([100], score=0.5))
    result = table.upsert(_rows([2], score=5.0), join_cols=["id"])
    assert result.rows_updated == 1
    table.refresh()
    assert _state(table)[(2, "eu")] == 5.0 and _state(table)[(100, "eu")] == 0.5


def test_upsert_does_not_bring_back_deleted_rows(local_wh: Any) -> None:
    table = _table(local_wh, "merge-on-read")
    table.append(_rows(list(range(6))))
    table.delete(col("id") == 4)
    result = table.upsert(_rows([4, 5], score=2.0), join_cols=["id"])
    assert (result.rows_updated, result.rows_inserted) == (1, 1)
    assert _state(table) == {(i, "eu"): 1.0 for i in range(4)} | {
        (4, "eu"): 2.0,
        (5, "eu"): 2.0,
    }


def test_upsert_into_an_empty_table_inserts_every_row(local_wh: Any) -> None:
    table = _table(local_wh, "copy-on-write")
    result = table.upsert(_rows([1, 2, 3]), join_cols=["id"])
    assert (result.rows_updated, result.rows_inserted) == (0, 3)
    assert table.current_snapshot().operation == "append"
    assert _state(table) == {(i, "eu"): 1.0 for i in (1, 2, 3)}
