"""Ray Data reads and writes datashard tables through datashard's own read path and commit.

One local Ray instance (2 CPUs, no dashboard, 127.0.0.1) serves the session. The table read is
the one of ``scaleout_tables.py`` (renamed, dropped and re-added, widened columns; partitions;
position and equality deletes): Ray's own ``read_parquet`` of those files returns the old
column's values under the new name and applies no delete file; ``datashard.ray`` must return
exactly ``table.to_arrow()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

# Ray 2.60 turns a localhost node address into the machine's address unless it runs as a
# one-machine Ray: with this set (before ray is imported) every Ray process listens on 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import datashard.ray as dsr  # noqa: E402
from datashard import create_table, load_table  # noqa: E402
from datashard.errors import CommitConflictError, SchemaError  # noqa: E402
from datashard.iceberg.expressions import col  # noqa: E402

from . import scaleout_tables as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray on 127.0.0.1 (2 CPUs, no dashboard) whose workers import this checkout."""
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": path}},
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        yield ray
    finally:
        ray.shutdown()


def _arrow(ds: Any) -> pa.Table:
    refs = ds.to_arrow_refs()
    tables = ray.get(refs)
    return pa.concat_tables(tables) if tables else pa.table({})


@BOTH
def test_ray_reads_an_evolved_table_with_deletes_exactly_as_to_arrow(
    warehouse: Any, ray_local: Any
) -> None:
    table = st.evolved_table(warehouse)
    table.append(st._new_rows(1000, 4))  # files no delete file applies to
    want = st.expected_facts(table)
    ds = dsr.read_table(table)
    tasks = dsr.DatashardDatasource(table.scan()).get_read_tasks(2)
    files = list(table.scan().plan_files())
    assert len(tasks) == len(files)
    # sizes come from the manifests (Ray plans without opening a file); a row count only where
    # the manifest's is the answer (no delete file): Ray's count() may add them up
    assert sum(t.metadata.size_bytes for t in tasks) == sum(f.file_size_in_bytes for f in files)
    counts = [(t.metadata.num_rows, f) for t, f in zip(tasks, files, strict=True)]
    assert all(n == (None if f.deletes else f.record_count) for n, f in counts)
    assert any(n is not None for n, _ in counts) and any(n is None for n, _ in counts)
    st.same_rows(_arrow(ds), want)
    assert ds.count() == want.num_rows
    assert dsr.read_table(table, filter=col("id") < 100).count() == len(
        [i for i in want.column("id").to_pylist() if i < 100]
    )
    secret = warehouse.options.get("secret_access_key")
    if secret:
        assert not any(secret in f"{t!r} {t.read_fn!r}" for t in tasks)


def test_ray_projection_filter_and_row_group_pieces(local_wh: Any, ray_local: Any) -> None:
    table = st.evolved_table(local_wh)
    where = (col("id") < 120) | (col("label") == "n333")
    want = table.scan(["label", "id"], where).to_arrow()
    assert 0 < want.num_rows < table.count()
    got = _arrow(table.to_ray(["label", "id"], where))
    assert got.column_names == ["label", "id"]
    st.same_rows(got, want)
    whole = table.to_arrow()
    pieces = dsr.read_table(table.scan(), piece_bytes=1)  # each row group its own task
    st.same_rows(_arrow(pieces), whole)


@BOTH
def test_eight_blocks_land_as_one_snapshot_with_every_row(warehouse: Any, ray_local: Any) -> None:
    table = st.evolved_table(warehouse)
    before = table.to_arrow().column("id").to_pylist()
    snapshots = len(table.snapshots())
    blocks = [
        pa.table(
            {
                "id": pa.array(range(10_000 + 500 * b, 10_500 + 500 * b), pa.int64()),
                "label": [f"r{i}" for i in range(500)],
                "region": ["eu" if i % 2 else "us" for i in range(500)],
            }
        )
        for b in range(8)
    ]
    ds = ray.data.from_arrow(blocks)
    assert ds.num_blocks() == 8
    snap = dsr.write_table(ds, table)
    assert snap is not None
    fresh = load_table("events", warehouse=warehouse.uri, **warehouse.options)
    assert len(fresh.snapshots()) == snapshots + 1
    ids = sorted(fresh.to_arrow().column("id").to_pylist())
    assert ids == sorted(before + list(range(10_000, 14_000)))


def test_a_concurrent_schema_change_fails_the_commit_and_leaves_no_file(
    local_wh: Any, ray_local: Any
) -> None:
    table = create_table(
        "t", st.SCHEMA, warehouse=local_wh.uri, partition_spec=["region"], **local_wh.options
    )
    table.append(st._old_rows(0, 10))
    data_before = sorted(k for k in local_wh.keys() if "/data/" in k)
    snapshots = len(table.snapshots())
    ds = ray.data.from_arrow([st._old_rows(100 + 10 * b, 10) for b in range(4)])
    ds = ds.materialize()
    # the workers will write with the schema the driver's table holds; another writer widens
    # n before the commit
    other = load_table("t", warehouse=local_wh.uri)
    with other.update_schema() as u:
        u.update_column("n", "long")
    with pytest.raises(CommitConflictError, match="'n'"):
        dsr.write_table(ds, table)
    assert len(load_table("t", warehouse=local_wh.uri).snapshots()) == snapshots
    assert sorted(k for k in local_wh.keys() if "/data/" in k) == data_before


def test_the_schema_is_checked_before_any_block_is_written(local_wh: Any, ray_local: Any) -> None:
    table = st.evolved_table(local_wh)
    storage = local_wh.snapshot_of_storage()
    ds = ray.data.from_arrow(pa.table({"id": pa.array([1], pa.int64()), "zzz": [1]}))
    with pytest.raises(SchemaError, match="'zzz'"):
        dsr.write_table(ds, table)
    assert local_wh.snapshot_of_storage() == storage


def test_a_table_without_rows_reads_as_an_empty_dataset(local_wh: Any, ray_local: Any) -> None:
    table = create_table("empty", st.SCHEMA, warehouse=local_wh.uri, **local_wh.options)
    ds = dsr.read_table(table)
    assert ds.count() == 0
    assert ds.take_all() == []
