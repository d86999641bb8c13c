"""Dask reads and writes datashard tables through datashard's own read path and commit.

One ``distributed.LocalCluster`` (two worker processes on 127.0.0.1) serves the whole session.
The table read is the one of ``scaleout_tables.py``: renamed, dropped and re-added, widened
columns, partitions, position and equality deletes. Dask's own ``read_parquet`` of the same
files gets it wrong (it reads by name and applies no delete file); datashard's reader must
return exactly ``table.to_arrow()``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

distributed = pytest.importorskip("distributed")
import dask.dataframe as dd  # noqa: E402

import datashard.dask as dsd  # noqa: E402
from datashard import create_table, load_table  # noqa: E402
from datashard.errors import CommitConflictError, SchemaError  # noqa: E402
from datashard.iceberg.expressions import col  # noqa: E402

from . import scaleout_tables as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """Two worker processes on 127.0.0.1 (no dashboard), importing this checkout's datashard."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    try:
        cluster = distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = distributed.Client(cluster)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _arrow(frame: pd.DataFrame, like: pa.Table) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False).cast(
        pa.schema([pa.field(f.name, f.type) for f in like.schema])
    )


# --------------------------------------------------------------------------------------------
# reads


@BOTH
def test_dask_reads_an_evolved_table_with_deletes_exactly_as_to_arrow(
    warehouse: Any, dask_client: Any
) -> None:
    table = st.evolved_table(warehouse)
    want = st.expected_facts(table)
    ddf = dsd.read_table(table)
    assert ddf.npartitions == len(list(table.scan().plan_files()))
    # meta: the columns and types before anything is computed
    assert list(ddf.columns) == want.column_names
    got = _arrow(ddf.compute(), want)
    st.same_rows(got, want)
    # the graph Dask shows and logs holds no credential (workers got the endpoint config)
    secret = warehouse.options.get("secret_access_key")
    if secret:
        shown = [repr(ddf), str(ddf.dask if hasattr(ddf, "dask") else "")]
        shown += [f"{k!r} {v!r} {v}" for k, v in dict(ddf.__dask_graph__()).items()]
        assert not any(secret in s for s in shown)


@BOTH
def test_dask_projection_and_filter_match_the_scan(warehouse: Any, dask_client: Any) -> None:
    table = st.evolved_table(warehouse)
    where = (col("id") >= 250) & (col("region") == "eu")
    want = table.scan(["id", "label", "n"], where).to_arrow()
    assert 0 < want.num_rows < table.count()
    ddf = table.to_dask(["id", "label", "n"], where)
    assert list(ddf.columns) == ["id", "label", "n"]
    st.same_rows(_arrow(ddf.compute(), want), want)
    # the same through a scan, narrowed further by read_table
    scan = table.scan(filter=col("id") >= 250)
    narrowed = dsd.read_table(scan, columns=["id", "a"], filter=col("region") == "eu")
    want2 = table.scan(["id", "a"], where).to_arrow()
    st.same_rows(_arrow(narrowed.compute(), want2), want2)


def test_files_cut_into_row_group_pieces_read_every_row_once(
    local_wh: Any, dask_client: Any
) -> None:
    table = st.evolved_table(local_wh)
    want = table.to_arrow()
    files = len(list(table.scan().plan_files()))
    ddf = dsd.read_table(table, piece_bytes=1)  # every row group its own partition
    assert ddf.npartitions > 2 * files
    st.same_rows(_arrow(ddf.compute(), want), want)


def test_time_travel_reads_the_old_snapshot_with_its_schema(
    local_wh: Any, dask_client: Any
) -> None:
    table = st.evolved_table(local_wh)
    first = table.snapshots()[0]
    want = table.scan(snapshot_id=first.snapshot_id).to_arrow()
    assert "name" in want.column_names  # the schema of then
    ddf = dsd.read_table(table, snapshot_id=first.snapshot_id)
    st.same_rows(_arrow(ddf.compute(), want), want)


# --------------------------------------------------------------------------------------------
# writes


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    ids = range(start, start + n)
    return pd.DataFrame(
        {
            "id": pd.array(list(ids), dtype="int64"),
            "label": [f"w{i}" for i in ids],
            "n": pd.array([i * 3 for i in ids], dtype="int64"),
            "region": ["eu" if i % 2 else "us" for i in ids],
        }
    )


@BOTH
def test_eight_partitions_land_as_one_snapshot_with_every_row(
    warehouse: Any, dask_client: Any
) -> None:
    table = st.evolved_table(warehouse)
    before = table.to_arrow()
    snapshots = len(table.snapshots())
    ddf = dd.from_pandas(_frame(4000, start=10_000), npartitions=8)
    assert ddf.npartitions == 8
    snap = dsd.write_table(ddf, table)
    assert snap is not None
    fresh = load_table("events", warehouse=warehouse.uri, **warehouse.options)
    assert len(fresh.snapshots()) == snapshots + 1
    assert fresh.current_snapshot().snapshot_id == snap.snapshot_id  # type: ignore[union-attr]
    ids = sorted(fresh.to_arrow().column("id").to_pylist())
    assert ids == sorted(before.column("id").to_pylist() + list(range(10_000, 14_000)))
    # and Dask reads back what it wrote
    assert len(dsd.read_table(fresh, filter=col("id") >= 10_000)) == 4000


def _old_frame(start: int, count: int) -> pd.DataFrame:
    """Rows of the table's first schema (``n`` an int32)."""
    return _old_frame_maker()(start, count)


def _old_frame_maker() -> Any:
    """The function that builds :func:`_old_frame`'s rows, made here so that cloudpickle sends
    it to the workers by value (they cannot import this test module)."""

    def make(start: int, count: int) -> pd.DataFrame:
        ids = list(range(start, start + count))
        return pd.DataFrame(
            {
                "id": pd.array(ids, dtype="int64"),
                "name": [f"n{i}" for i in ids],
                "a": pd.array([i * 10 for i in ids], dtype="int64"),
                "n": pd.array([i % 50 for i in ids], dtype="int32"),
                "region": ["eu" if i % 3 else "us" for i in ids],
            }
        )

    return make


def test_a_concurrent_schema_change_fails_the_commit_and_leaves_no_file(
    local_wh: Any, dask_client: Any
) -> None:
    table = create_table(
        "t", st.SCHEMA, warehouse=local_wh.uri, partition_spec=["region"], **local_wh.options
    )
    table.append(pa.Table.from_pandas(_old_frame(0, 10), preserve_index=False))
    data_before = sorted(k for k in local_wh.keys() if "/data/" in k)
    snapshots = len(table.snapshots())
    uri = local_wh.uri
    make = _old_frame_maker()

    def rows(i: int) -> pd.DataFrame:
        if i == 0:  # another writer widens n while the workers write it as int
            other = load_table("t", warehouse=uri)
            with other.update_schema() as u:
                u.update_column("n", "long")
        return make(100 + 10 * i, 10)

    ddf = dd.from_map(rows, range(8), meta=_old_frame(0, 1).iloc[:0])
    with pytest.raises(CommitConflictError, match="'n'"):
        dsd.write_table(ddf, table)
    fresh = load_table("t", warehouse=uri)
    assert len(fresh.snapshots()) == snapshots
    assert fresh.count() == 10
    assert fresh.schema().find_field("n").field_type.__class__.__name__ == "LongType"
    data_after = sorted(k for k in local_wh.keys() if "/data/" in k)
    assert data_after == data_before  # every file the workers wrote was removed


def test_a_failing_worker_leaves_no_file_and_no_snapshot(local_wh: Any, dask_client: Any) -> None:
    table = create_table("t", st.SCHEMA, warehouse=local_wh.uri, **local_wh.options)
    table.append(pa.Table.from_pandas(_old_frame(0, 10), preserve_index=False))
    data_before = sorted(k for k in local_wh.keys() if "/data/" in k)
    make = _old_frame_maker()

    def rows(i: int) -> pd.DataFrame:
        if i == 7:
            raise RuntimeError("worker 7 failed")
        return make(100 + 10 * i, 10)

    ddf = dd.from_map(rows, range(8), meta=_old_frame(0, 1).iloc[:0])
    with pytest.raises(RuntimeError, match="worker 7 failed"):
        dsd.write_table(ddf, table)
    assert load_table("t", warehouse=local_wh.uri).count() == 10
    assert sorted(k for k in local_wh.keys() if "/data/" in k) == data_before


def test_the_schema_is_checked_before_any_worker_writes(local_wh: Any, dask_client: Any) -> None:
    table = st.evolved_table(local_wh)
    listing = local_wh.snapshot_of_storage()
    extra = dd.from_pandas(_frame(10).assign(zzz=1), npartitions=2)
    with pytest.raises(SchemaError, match="'zzz'"):
        dsd.write_table(extra, table)
    wrong = dd.from_pandas(_frame(10).assign(n=[f"x{i}" for i in range(10)]), npartitions=2)
    with pytest.raises(SchemaError, match="'n'"):
        dsd.write_table(wrong, table)
    assert local_wh.snapshot_of_storage() == listing


def test_an_index_in_key_order_gets_divisions_from_the_manifests(
    local_wh: Any, dask_client: Any
) -> None:
    table = create_table("keys", st.SCHEMA, warehouse=local_wh.uri, **local_wh.options)
    for start in (200, 0, 100, 300):  # appended out of order, each file one key range
        table.append(st._old_rows(start, 100))
    table.delete(col("id") == 150)  # copy-on-write: the file's range shrinks to the bounds
    ddf = dsd.read_table(table, columns=["id", "name"], index="id")
    assert ddf.known_divisions
    assert ddf.divisions == (0, 100, 200, 300, 399)
    # Dask reads only the partition holding the keys
    part = ddf.loc[140:160]
    assert part.npartitions == 1
    got = part.compute()
    assert got.index.tolist() == [i for i in range(140, 161) if i != 150]
    assert got["name"].tolist()[0] == "n140"
    # overlapping key ranges: no divisions, every row still there, each partition sorted
    table.append(st._old_rows(50, 10))
    overlapping = dsd.read_table(table, columns=["id"], index="id")
    assert not overlapping.known_divisions
    frame = overlapping.compute()
    assert len(frame) == 409


def test_a_retried_write_with_an_idempotency_key_lands_once(
    local_wh: Any, dask_client: Any
) -> None:
    table = create_table("t", st.SCHEMA, warehouse=local_wh.uri, **local_wh.options)
    table.append(pa.Table.from_pandas(_old_frame(0, 10), preserve_index=False))
    uri = local_wh.uri
    make = _old_frame_maker()

    def rows(i: int) -> pd.DataFrame:
        if i == 0:  # an earlier attempt of this job lands the key while the workers write
            other = load_table("t", warehouse=uri)
            other.append(make(1000, 5), idempotency_key="job-7")
        return make(100 + 10 * i, 10)

    ddf = dd.from_map(rows, range(4), meta=_old_frame(0, 1).iloc[:0])
    data_before = {k for k in local_wh.keys() if "/data/" in k}
    snap = dsd.write_table(ddf, table, idempotency_key="job-7")
    assert snap is not None and snap.summary["added-records"] == "5"  # the other attempt's
    fresh = load_table("t", warehouse=uri)
    assert fresh.count() == 15
    new_files = {k for k in local_wh.keys() if "/data/" in k} - data_before
    assert len(new_files) == 1  # the other attempt's file; ours were removed
    # run again: the key has landed, nothing is written or computed
    again = dsd.write_table(
        dd.from_map(rows, range(4), meta=ddf._meta), fresh, idempotency_key="job-7"
    )
    assert again is not None and again.snapshot_id == snap.snapshot_id
    assert load_table("t", warehouse=uri).count() == 15
    assert {k for k in local_wh.keys() if "/data/" in k} - data_before == new_files


def test_a_table_without_rows_reads_as_an_empty_frame_with_its_columns(
    local_wh: Any, dask_client: Any
) -> None:
    table = create_table("empty", st.SCHEMA, warehouse=local_wh.uri, **local_wh.options)
    ddf = dsd.read_table(table, columns=["id", "n"])
    frame = ddf.compute()
    assert list(frame.columns) == ["id", "n"] and len(frame) == 0
    assert str(frame["n"].dtype) == "int32[pyarrow]"


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_without_the_extra_the_error_names_the_pip_install(
    local_wh: Any, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = create_table("t", st.SCHEMA, warehouse=local_wh.uri, **local_wh.options)
    monkeypatch.setitem(sys.modules, engine, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, f"datashard.{engine}", raising=False)
    with pytest.raises(ImportError, match=rf'pip install "datashard-iceberg\[{engine}\]"'):
        getattr(table, f"to_{engine}")()
