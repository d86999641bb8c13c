"""Maintenance on local disk and Ceph RGW: compaction rewrites many small files into few (and
never fails or loses a concurrent append), snapshot expiry deletes only what expired snapshots
alone used, orphan cleanup deletes unreferenced old files but never a writer's fresh ones.
PyIceberg reads the result of each. Concurrency runs real processes and counts every row."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import ValidationError
from datashard.iceberg.expressions import col
from datashard.table import Table
from datashard.testing.writers import append_worker

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "writer", "type": "int", "required": True},
        {"id": 2, "name": "commit", "type": "int", "required": True},
        {"id": 3, "name": "row", "type": "int", "required": True},
    ],
)
PROPS = {"commit.retry.num-retries": "200", "history.expire.max-snapshots": "1000"}
BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)
PROCESSES, COMMITS, ROWS = 3, 12, 5


def _records(writer: int, commit: int, rows: int = ROWS) -> list[dict[str, int]]:
    return [{"writer": writer, "commit": commit, "row": r} for r in range(rows)]


def _theirs(table: Table, wh: Any) -> pa.Table:
    static = StaticTable.from_metadata(table.metadata_location, properties=wh.pyiceberg_props)
    result: pa.Table = static.scan().to_arrow()
    return result


def _keys(arrow: pa.Table) -> Counter[tuple[int, int, int]]:
    return Counter((r["writer"], r["commit"], r["row"]) for r in arrow.to_pylist())


def _data_files(table: Table) -> list[Any]:
    return list(table.scan().plan_files())


@BOTH
def test_compaction_rewrites_small_files_into_few_with_the_same_rows(warehouse: Any) -> None:
    table = create_table(
        "m", SCHEMA, warehouse=warehouse.uri, properties=PROPS, **warehouse.options
    )
    for c in range(12):
        table.append_records(_records(0, c))
    assert len(_data_files(table)) == 12
    before = _keys(table.to_arrow())
    dry = table.compact(target_file_size=1 << 20, dry_run=True)
    assert (dry.rewritten_files, dry.snapshot_id) == (12, None)
    assert len(_data_files(table)) == 12
    result = table.compact(target_file_size=1 << 20)
    assert (result.rewritten_files, result.added_files, result.rewritten_rows) == (12, 1, 60)
    snap = table.current_snapshot()
    assert snap is not None and snap.operation == "replace"
    assert len(_data_files(table)) == 1
    assert _keys(table.to_arrow()) == before
    assert _keys(_theirs(table, warehouse)) == before
    assert table.scan(filter=col("commit") == 3).count() == ROWS
    # nothing small left: a second compaction does nothing
    assert table.compact(target_file_size=1 << 20).snapshot_id is None


def test_compaction_respects_partitions_and_target_size(local_wh: Any) -> None:
    table = create_table(
        "m",
        SCHEMA,
        warehouse=local_wh.uri,
        properties=PROPS,
        partition_spec=[("writer", "identity")],
    )
    for c in range(6):
        table.append_records(_records(0, c, 50) + _records(1, c, 50))
    assert len(_data_files(table)) == 12
    table.compact(target_file_size=1 << 20)
    files = _data_files(table)
    assert sorted(f.data_file.partition["writer"] for f in files) == [0, 1]
    assert table.count() == 600
    # a tiny target splits a partition into several files
    table.append_records(_records(0, 99, 2000))
    table.append_records(_records(0, 98, 2000))
    table.compact(target_file_size=6000)
    assert len([f for f in _data_files(table) if f.data_file.partition["writer"] == 0]) > 1
    assert _keys(table.to_arrow()) == _keys(_theirs(table, local_wh))
    assert table.count() == 4600


def _start_writers(wh: Any, pool: ProcessPoolExecutor) -> list[Future[Any]]:
    return [
        pool.submit(append_worker, wh.uri, wh.options, "m", w, COMMITS, ROWS)
        for w in range(1, PROCESSES + 1)
    ]


def _check_every_row(wh: Any, acked: dict[int, list[Any]], seeded: int) -> Table:
    table = load_table("m", warehouse=wh.uri, **wh.options)
    keys = _keys(table.to_arrow())
    assert max(keys.values()) == 1, "a row appears twice"
    assert len(keys) == seeded + PROCESSES * COMMITS * ROWS
    for w, commits in acked.items():
        assert [c for c, _, _ in commits] == list(range(COMMITS))
        for c in range(COMMITS):
            assert all(keys[(w, c, r)] == 1 for r in range(ROWS)), (w, c)
    assert _keys(_theirs(table, wh)) == keys
    return table


@pytest.mark.slow
@BOTH
def test_compaction_while_processes_append_loses_and_doubles_nothing(warehouse: Any) -> None:
    table = create_table(
        "m", SCHEMA, warehouse=warehouse.uri, properties=PROPS, **warehouse.options
    )
    for c in range(10):
        table.append_records(_records(0, c))
    ctx = multiprocessing.get_context("spawn")
    compactions = 0
    with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        futures = _start_writers(warehouse, pool)
        deadline = time.monotonic() + 120
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            table.refresh()
            if table.compact(target_file_size=1 << 20).snapshot_id is not None:
                compactions += 1
            time.sleep(0.05)
        acked = {w + 1: f.result(timeout=600) for w, f in enumerate(futures)}
    assert compactions >= 1
    final = _check_every_row(warehouse, acked, 10 * ROWS)
    final.compact(target_file_size=1 << 20)
    assert len(_data_files(final)) == 1
    assert _check_every_row(warehouse, acked, 10 * ROWS).count() == final.count()


@BOTH
def test_expiry_deletes_only_what_expired_snapshots_alone_used(warehouse: Any) -> None:
    table = create_table(
        "m", SCHEMA, warehouse=warehouse.uri, properties=PROPS, **warehouse.options
    )
    for c in range(4):
        table.append_records(_records(0, c))
    first = table.snapshots()[0]
    table.create_tag("keep", first.snapshot_id)
    table.delete(col("commit") == 1)  # drops one data file from the current snapshot
    dropped = [
        f
        for f in table.scan(snapshot_id=table.snapshots()[-2].snapshot_id).plan_files()
        if f.file_path not in {t.file_path for t in _data_files(table)}
    ]
    assert len(dropped) == 1
    table.flush()
    listing = set(warehouse.keys())
    dry = table.expire_snapshots(older_than=dt.timedelta(0), retain_last=1, dry_run=True)
    assert set(warehouse.keys()) == listing
    result = table.expire_snapshots(older_than=dt.timedelta(0), retain_last=1)
    assert result.expired_snapshot_ids == dry.expired_snapshot_ids
    assert sorted(result.deleted_files) == sorted(dry.deleted_files)
    kept = {s.snapshot_id for s in table.snapshots()}
    assert kept == {first.snapshot_id, table.current_snapshot().snapshot_id}  # type: ignore
    assert len(result.expired_snapshot_ids) == 3
    remaining = set(warehouse.keys())
    backend = table.backend
    assert backend.key_for(dropped[0].file_path) not in remaining
    # the tagged snapshot still reads, the current one too, by us and by PyIceberg
    assert table.scan(snapshot_id=first.snapshot_id).count() == ROWS
    assert _keys(table.to_arrow()) == Counter(
        {(0, c, r): 1 for c in (0, 2, 3) for r in range(ROWS)}
    )
    assert _keys(_theirs(table, warehouse)) == _keys(table.to_arrow())
    with pytest.raises(ValidationError, match="no snapshot"):
        table.scan(snapshot_id=result.expired_snapshot_ids[0])
    # nothing expires when everything is young
    assert table.expire_snapshots(older_than=dt.timedelta(days=1)).expired_snapshot_ids == ()


def test_expiry_refuses_bad_arguments_and_changes_nothing(local_wh: Any) -> None:
    table = create_table("m", SCHEMA, warehouse=local_wh.uri)
    table.append_records(_records(0, 0))
    table.flush()
    before = local_wh.snapshot_of_storage()
    with pytest.raises(ValidationError, match="retain_last"):
        table.expire_snapshots(retain_last=0)
    with pytest.raises(ValidationError, match="older_than"):
        table.expire_snapshots(older_than="yesterday")
    with pytest.raises(ValidationError, match="target_file_size"):
        table.compact(target_file_size=-1)
    with pytest.raises(ValidationError, match="older_than"):
        table.remove_orphan_files(older_than=dt.timedelta(seconds=-1))
    # a number is not an age: 0 read as epoch milliseconds (1970) would silently do nothing
    with pytest.raises(ValidationError, match="older_than must be a timedelta .* got int: 0"):
        table.remove_orphan_files(older_than=0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="older_than must be a timedelta .* got float"):
        table.expire_snapshots(older_than=1.7e12)  # type: ignore[arg-type]
    assert local_wh.snapshot_of_storage() == before


def _plant_orphans(table: Table) -> list[str]:
    keys = [f"m/data/orphan-{i}.parquet" for i in range(3)] + [
        "m/metadata/orphan-m0.avro",
        "m/metadata/snap-1-0-orphan.avro",
    ]
    for k in keys:
        table.backend.write(k, b"not referenced")
    return keys


@BOTH
def test_orphan_cleanup_keeps_referenced_and_young_files(warehouse: Any) -> None:
    table = create_table(
        "m", SCHEMA, warehouse=warehouse.uri, properties=PROPS, **warehouse.options
    )
    for c in range(3):
        table.append_records(_records(0, c))
    table.delete(col("commit") == 0)  # its file is still referenced by an older snapshot
    table.flush()
    orphans = _plant_orphans(table)
    listing = set(warehouse.keys())
    # young orphans survive the default grace period
    assert table.remove_orphan_files() == []
    assert table.remove_orphan_files(older_than=dt.timedelta(days=1)) == []
    time.sleep(2.2)
    # a grace period shorter than the commit bound (one day by default) is refused
    with pytest.raises(ValidationError, match="commit.max-duration-ms"):
        table.remove_orphan_files(older_than=dt.timedelta(seconds=1))
    table.set_properties({"commit.max-duration-ms": 1000})
    listing = set(warehouse.keys())  # plus the new version
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    dry = table.remove_orphan_files(older_than=cutoff, dry_run=True)
    assert sorted(table.backend.key_for(u) for u in dry) == sorted(orphans)
    assert set(warehouse.keys()) == listing
    gone = table.remove_orphan_files(older_than=cutoff)
    assert sorted(gone) == sorted(dry)
    assert set(warehouse.keys()) == listing - set(orphans)
    # every snapshot still reads, metadata versions and the hint are all there
    for snap in table.snapshots():
        table.scan(snapshot_id=snap.snapshot_id).to_arrow()
    assert _keys(_theirs(table, warehouse)) == _keys(table.to_arrow())
    assert all(k in warehouse.keys() for k in listing if k.endswith(".metadata.json"))


@pytest.mark.slow
@BOTH
def test_orphan_cleanup_and_expiry_while_processes_append(warehouse: Any) -> None:
    # commits give up after 8 s, so a grace period of 8 s is safe beside them
    props = {**PROPS, "commit.max-duration-ms": "8000"}
    table = create_table(
        "m", SCHEMA, warehouse=warehouse.uri, properties=props, **warehouse.options
    )
    for c in range(3):
        table.append_records(_records(0, c))
    orphans = _plant_orphans(table)
    planted = time.time()
    time.sleep(9)  # the cutoff below is 8 s or more in the past from here on
    cutoff = dt.datetime.fromtimestamp(planted + 1, dt.timezone.utc)
    ctx = multiprocessing.get_context("spawn")
    removed: set[str] = set()
    with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        futures = _start_writers(warehouse, pool)
        deadline = time.monotonic() + 120
        rounds = 0
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            table.refresh()
            removed.update(table.remove_orphan_files(older_than=cutoff))
            table.refresh()
            table.expire_snapshots(older_than=dt.timedelta(0), retain_last=3)
            rounds += 1
            time.sleep(0.05)
        acked = {w + 1: f.result(timeout=600) for w, f in enumerate(futures)}
    assert rounds >= 1
    assert {table.backend.key_for(u) for u in removed} == set(orphans)
    final = _check_every_row(warehouse, acked, 3 * ROWS)
    for snap in final.snapshots():  # every kept snapshot is whole
        final.scan(snapshot_id=snap.snapshot_id).count()
        final.scan(snapshot_id=snap.snapshot_id).to_arrow()


_FAST = {"commit.retry.min-wait-ms": "1", "commit.retry.max-wait-ms": "5"}


@pytest.mark.parametrize("kind", ["fail", "timeout", "lose"])
@pytest.mark.parametrize(
    "method,key",
    [
        ("put_if_absent", ".metadata.json"),
        ("write", ".avro"),
        ("write", ".parquet"),
        ("read", "snap-"),
    ],
)
@pytest.mark.parametrize("operation", ["compact", "delete"])
def test_a_fault_at_any_call_of_a_rewrite_leaves_the_rows_whole(
    local_wh: Any, kind: Any, method: str, key: str, operation: str
) -> None:
    from datashard.errors import DataShardError
    from datashard.testing.faults import Fault, FaultyBackend

    create_table("m", SCHEMA, warehouse=local_wh.backend, properties=_FAST)
    writer = load_table("m", warehouse=local_wh.backend)
    for c in range(4):
        writer.append_records(_records(0, c))
    writer.flush()
    faulty = FaultyBackend(local_wh.backend, Fault(method, 1, kind, key))
    table = load_table("m", warehouse=faulty)
    try:
        if operation == "compact":
            table.compact(target_file_size=1 << 20)
        else:
            table.delete(col("commit") == 1)
        acknowledged = True
    except DataShardError:
        acknowledged = False
    fresh = load_table("m", warehouse=local_wh.backend)
    keys = _keys(fresh.to_arrow())
    assert max(keys.values()) == 1
    everything = {(0, c, r) for c in range(4) for r in range(ROWS)}
    if operation == "delete" and acknowledged:
        assert set(keys) == everything - {(0, 1, r) for r in range(ROWS)}
    elif operation == "delete":
        assert set(keys) in (everything, everything - {(0, 1, r) for r in range(ROWS)})
    else:
        assert set(keys) == everything
    for snap in fresh.snapshots():  # every snapshot's files are there
        fresh.scan(snapshot_id=snap.snapshot_id).to_arrow()
    assert _keys(_theirs(fresh, local_wh)) == keys


def test_orphan_cleanup_removes_temp_files_a_killed_writer_left(local_wh: Any) -> None:
    """A local writer killed mid-write leaves ``.datashard-tmp-*`` files that ``list`` never
    shows; orphan cleanup removes those older than its grace period, and only those."""
    table = create_table("m", SCHEMA, warehouse=local_wh.uri)
    table.append_records(_records(0, 0))
    root = Path(local_wh.backend.root)
    killer = textwrap.dedent(
        """
        import os, signal, sys
        from datashard.storage.config import open_backend
        backend = open_backend(sys.argv[1])
        def chunks():
            yield b"x" * 1024
            os.kill(os.getpid(), signal.SIGKILL)  # dies with its temp file half written
            yield b"y"
        backend.write("m/data/big.parquet", chunks())
        """
    )
    done = subprocess.run([sys.executable, "-c", killer, local_wh.uri], timeout=60)
    assert done.returncode == -signal.SIGKILL
    left = list((root / "m" / "data").glob(".datashard-tmp-*"))
    assert len(left) == 1 and not (root / "m" / "data" / "big.parquet").exists()
    fresh = root / "m" / "metadata" / ".datashard-tmp-fresh"  # a write in flight right now
    fresh.write_bytes(b"in flight")
    two_days_ago = time.time() - 2 * 86400
    os.utime(left[0], (two_days_ago, two_days_ago))
    assert all(".datashard-tmp-" not in k for k in local_wh.keys())  # list never shows them
    dry = table.remove_orphan_files(older_than=dt.timedelta(days=1), dry_run=True)
    assert dry == [f"{local_wh.uri}/m/data/{left[0].name}"] and left[0].exists()
    assert table.remove_orphan_files(older_than=dt.timedelta(days=1)) == dry
    assert not left[0].exists() and fresh.exists()
    assert table.count() == ROWS
