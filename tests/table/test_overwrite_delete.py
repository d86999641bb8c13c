"""``overwrite`` and ``delete``: whole files dropped, partly matching files rewritten, PyIceberg
reads the same rows; a concurrent commit in the filter's range makes the rewrite fail with
CommitConflictError (nothing clobbered), appends elsewhere still commit; bad filters change
nothing."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import CommitConflictError, ValidationError
from datashard.iceberg.expressions import col
from datashard.table import Table

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "region", "type": "string", "required": False},
        {"id": 3, "name": "v", "type": "double", "required": False},
    ],
)
BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)


def _rows(ids: range, region: str | None = "eu") -> list[dict[str, Any]]:
    return [{"id": i, "region": region, "v": i * 1.5} for i in ids]


def _ids(arrow: pa.Table) -> list[int]:
    return sorted(arrow.column("id").to_pylist())


def _theirs(table: Table, wh: Any) -> pa.Table:
    static = StaticTable.from_metadata(table.metadata_location, properties=wh.pyiceberg_props)
    result: pa.Table = static.scan().to_arrow()
    return result


def _files(table: Table) -> set[str]:
    return {t.file_path for t in table.scan().plan_files()}


def _make(wh: Any, **kw: Any) -> Table:
    table = create_table("t", SCHEMA, warehouse=wh.uri, **kw, **wh.options)
    table.append_records(_rows(range(0, 10)))  # file A: ids 0-9
    table.append_records(_rows(range(10, 20)))  # file B: ids 10-19
    table.append_records(_rows(range(20, 30), "us"))  # file C: ids 20-29
    return table


@BOTH
def test_delete_drops_whole_files_and_rewrites_partial_ones(warehouse: Any) -> None:
    table = _make(warehouse)
    files = _files(table)
    snap = table.delete((col("id") >= 5) & (col("id") < 20))
    assert snap is not None and snap.operation == "delete"
    assert snap.summary["deleted-data-files"] == "2"  # A rewritten, B dropped whole
    assert snap.summary["added-data-files"] == "1"  # A's rows 0-4
    assert snap.summary["deleted-records"] == "20"
    assert snap.summary["total-records"] == "15"
    after = _files(table)
    assert len(files & after) == 1  # file C untouched
    expected = [*range(0, 5), *range(20, 30)]
    assert _ids(table.to_arrow()) == expected
    assert _ids(load_table("t", warehouse=warehouse.uri, **warehouse.options).to_arrow()) == (
        expected
    )
    theirs = _theirs(table, warehouse)
    assert sorted(theirs.to_pylist(), key=lambda r: r["id"]) == sorted(
        table.to_arrow().to_pylist(), key=lambda r: r["id"]
    )
    # nothing matches: no commit
    assert table.delete(col("id") > 1000) is None


@BOTH
def test_overwrite_replaces_the_filtered_rows_and_everything_without_filter(warehouse: Any) -> None:
    table = _make(warehouse)
    new = pa.table(
        {"id": pa.array([100, 101], pa.int64()), "region": ["us", "us"], "v": [0.0, 1.0]}
    )
    snap = table.overwrite(new, filter=col("region") == "us")
    assert snap is not None and snap.operation == "overwrite"
    assert _ids(table.to_arrow()) == [*range(0, 20), 100, 101]
    assert _ids(_theirs(table, warehouse)) == [*range(0, 20), 100, 101]
    table.overwrite(pa.table({"id": pa.array([7], pa.int64())}))
    assert table.to_arrow().to_pylist() == [{"id": 7, "region": None, "v": None}]
    assert _theirs(table, warehouse).to_pylist() == [{"id": 7, "region": None, "v": None}]


def test_null_rows_do_not_match_a_comparison_and_are_kept(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(
        [{"id": 1, "region": None, "v": None}, {"id": 2, "region": "eu", "v": 2.0}]
    )
    table.delete(col("region") != "us")
    assert table.to_arrow().to_pylist() == [{"id": 1, "region": None, "v": None}]
    table.delete(col("region").is_null())
    assert table.count() == 0


def test_delete_on_a_partitioned_table_drops_partitions_by_value(local_wh: Any) -> None:
    table = _make(local_wh, partition_spec=[("region", "identity")])
    table.append_records(_rows(range(30, 33), "us") + _rows(range(33, 35), "eu"))
    snap = table.delete(col("region") == "us")
    assert snap is not None
    assert snap.summary["added-data-files"] == "0"  # every "us" file dropped whole
    assert _ids(table.to_arrow()) == [*range(0, 20), 33, 34]
    assert _ids(_theirs(table, local_wh)) == [*range(0, 20), 33, 34]


@BOTH
def test_a_concurrent_append_in_the_range_fails_the_delete(warehouse: Any) -> None:
    table = _make(warehouse)
    other = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    other.append_records(_rows(range(12, 14)))  # lands in the range the delete reads
    table.flush()
    with pytest.raises(CommitConflictError, match="added .*filter's range"):
        table.delete(col("id") < 15)
    fresh = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    assert _ids(fresh.to_arrow()) == sorted([*range(0, 30), 12, 13])
    # no file of the failed delete is left behind: every data file is referenced
    data_keys = {k for k in warehouse.keys() if "/data/" in k}
    assert data_keys == {fresh.backend.key_for(f) for f in _files(fresh)}


@BOTH
def test_a_concurrent_append_elsewhere_keeps_both_commits(warehouse: Any) -> None:
    table = _make(warehouse)
    other = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    other.append_records(_rows(range(500, 505)))  # outside the range
    snap = table.delete(col("id") < 15)
    assert snap is not None
    fresh = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    assert _ids(fresh.to_arrow()) == [*range(15, 30), *range(500, 505)]
    assert _ids(_theirs(fresh, warehouse)) == [*range(15, 30), *range(500, 505)]


def test_two_deletes_of_the_same_file_conflict(local_wh: Any) -> None:
    table = _make(local_wh)
    other = load_table("t", warehouse=local_wh.uri)
    other.delete(col("id") == 3)
    with pytest.raises(CommitConflictError, match="removed"):
        table.delete(col("id") == 4)
    assert _ids(load_table("t", warehouse=local_wh.uri).to_arrow()) == [
        i for i in range(30) if i != 3
    ]


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda t: t.delete(col("nope") == 1), ValidationError, "unknown column 'nope'"),
        (lambda t: t.delete(col("id") == "x"), ValidationError, "'x'.*'id'"),
        (lambda t: t.delete(None), ValidationError, "filter"),
        (lambda t: t.overwrite(pa.table({"id": ["a"]}), col("id") == 1), ValidationError, "'id'"),
        (
            lambda t: t.overwrite(pa.table({"id": pa.array([1], pa.int64())}), col("zz") == 1),
            ValidationError,
            "unknown column 'zz'",
        ),
        (lambda t: t.overwrite(pa.table({"region": ["x"]}), None), ValidationError, "id"),
    ],
)
def test_bad_input_raises_and_changes_nothing(
    local_wh: Any, call: Any, error: type[Exception], match: str
) -> None:
    table = _make(local_wh)
    table.flush()
    before = local_wh.snapshot_of_storage()
    with pytest.raises(error, match=match):
        call(table)
    assert local_wh.snapshot_of_storage() == before


def test_files_whose_statistics_prove_a_full_match_are_dropped_unread(local_wh: Any) -> None:
    from datashard.testing.faults import FaultyBackend

    _make(local_wh)
    faulty = FaultyBackend(local_wh.backend)
    table = load_table("t", warehouse=faulty)
    assert [t.record_count for t in table.scan().plan_files()] == [10, 10, 10]
    faulty.reset()
    snap = table.delete((col("id") >= 10) & (col("id") <= 25))
    assert snap is not None
    reads = {k for m, k in faulty.calls if m.startswith("read") and "/data/" in k}
    assert len(reads) == 1  # file C (20-29) is read and rewritten; file B (10-19) is not read
    assert _ids(table.to_arrow()) == [*range(0, 10), *range(26, 30)]


@pytest.mark.parametrize(
    "expr",
    [
        col("id") < 5,
        col("id") >= 0,
        col("v") > -1.0,
        col("region") == "eu",
        col("id").isin([1, 2]),
        col("id").not_in([100]),
        col("id") != 100,
        col("v").is_null(),
        col("v").not_null(),
        (col("id") < 3) | (col("id") > 0),
    ],
)
def test_the_strict_check_never_drops_a_file_with_a_row_that_does_not_match(
    local_wh: Any, expr: Any
) -> None:
    from datashard.iceberg.conversions import from_bytes
    from datashard.iceberg.expressions import bind_schema, must_match

    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(
        [{"id": 1, "region": "eu", "v": 1.0}, {"id": 2, "region": None, "v": None}]
    )
    table.append_records([{"id": 3, "region": "eu", "v": 2.0}])
    bound = bind_schema(expr, table.schema())
    matching = set(table.scan(filter=expr).to_arrow().column("id").to_pylist())
    for task in table.scan().plan_files():
        if must_match(bound, task.data_file, from_bytes):
            in_file = {1, 2} if task.record_count == 2 else {3}
            assert in_file <= matching, (expr, in_file)


def _busy(local_wh: Any, readers: int) -> list[Table]:
    """Table ``t`` keeping 3 snapshots, ``readers`` tables loaded now, then 6 appends of ids
    100-105 by another writer: the snapshot the readers hold is expired by retention."""
    _make(local_wh, properties={"history.expire.max-snapshots": "3"})
    stale = [load_table("t", warehouse=local_wh.uri) for _ in range(readers)]
    other = load_table("t", warehouse=local_wh.uri)
    for i in range(6):
        other.append_records(_rows(range(100 + i, 101 + i)))
    kept = {s.snapshot_id for s in load_table("t", warehouse=local_wh.uri).snapshots()}
    assert stale[0].current_snapshot().snapshot_id not in kept  # type: ignore[union-attr]
    return stale


def test_a_delete_commits_after_retention_dropped_the_snapshot_it_read(local_wh: Any) -> None:
    """Conflicts are judged on files, not on the snapshot history: the rewrite commits when
    nothing in its range changed, and conflicts when an append touched its range."""
    outside, inside = _busy(local_wh, 2)
    assert outside.delete(col("id") < 5) is not None  # the new rows are outside: commits
    with pytest.raises(CommitConflictError, match="added .*filter's range"):
        inside.delete(col("id") >= 25)  # ids 100-105 arrived in its range meanwhile
    final = load_table("t", warehouse=local_wh.uri)
    assert _ids(final.to_arrow()) == [*range(5, 30), *range(100, 106)]


def test_a_compaction_commits_after_retention_dropped_the_snapshot_it_read(
    local_wh: Any,
) -> None:
    (stale,) = _busy(local_wh, 1)
    result = stale.compact(min_input_files=2)
    assert result.rewritten_files == 3 and result.snapshot_id is not None
    final = load_table("t", warehouse=local_wh.uri)
    assert _ids(final.to_arrow()) == [*range(30), *range(100, 106)]
