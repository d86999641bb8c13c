"""Exactly-once appends for retried tasks: ``append(..., idempotency_key=...)`` lands one
snapshot per key, however many attempts of the task run, in one process or racing in many."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import datashard
from datashard import Schema, create_table, load_table
from datashard.errors import ValidationError
from datashard.table.updates import IDEMPOTENCY_KEY
from datashard.table.versions import key_for_uri

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "task", "type": "int", "required": True},
        {"id": 2, "name": "row", "type": "int", "required": True},
    ],
)


def _rows(task: int, n: int = 10) -> pa.Table:
    return pa.table(
        {"task": pa.array([task] * n, pa.int32()), "row": pa.array(range(n), pa.int32())}
    )


def _data_keys(table: Any) -> set[str]:
    return {m.key for m in table.backend.list(f"{table.name}/data/")}


def _referenced(table: Any) -> set[str]:
    paths = table.inspect.files()["file_path"].to_pylist()
    return {key_for_uri(table.backend, p) for p in paths}


def test_a_retried_append_returns_the_first_snapshot_and_writes_nothing(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    first = table.append(_rows(1), idempotency_key="run-17/task-1")
    assert first.summary[IDEMPOTENCY_KEY] == "run-17/task-1"
    table.flush()
    before = local_wh.snapshot_of_storage()
    again = load_table("t", warehouse=local_wh.uri)  # the retried task, in a fresh process
    assert again.append(_rows(1), idempotency_key="run-17/task-1") == first
    assert again.append_records([{"task": 1, "row": 0}], idempotency_key="run-17/task-1") == first
    with again.transaction(idempotency_key="run-17/task-1") as tx:
        assert tx.snapshot == first
        tx.append(_rows(1))
    assert local_wh.snapshot_of_storage() == before
    assert again.count() == 10
    other = again.append(_rows(2), idempotency_key="run-17/task-2")  # another key appends
    assert other != first and again.count() == 20


def test_a_stale_writer_finds_the_key_on_the_newer_version_and_deletes_its_files(
    local_wh: Any,
) -> None:
    """The writer's base predates the winner: the key is found only when its commit attempt
    rebuilds on the newest version; it returns the winner's snapshot and leaves no file."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    stale = load_table("t", warehouse=local_wh.uri)
    won = table.append(_rows(1), idempotency_key="k")
    table.flush()
    assert stale.append(_rows(1), idempotency_key="k") == won
    assert stale.current_snapshot() == won  # the loser sees the table as it is now
    assert _data_keys(stale) == _referenced(stale)
    assert len(stale.snapshots()) == 1 and stale.count() == 10


def test_a_bad_key_is_refused_before_anything_is_written(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    before = local_wh.snapshot_of_storage()
    for bad in ("", "   ", 17, "x" * 513):
        with pytest.raises(ValidationError, match="idempotency_key"):
            table.append(_rows(1), idempotency_key=bad)  # type: ignore[arg-type]
    assert local_wh.snapshot_of_storage() == before


def test_a_key_is_remembered_as_long_as_its_snapshot_is_kept(local_wh: Any) -> None:
    table = create_table(
        "t", SCHEMA, warehouse=local_wh.uri, properties={"history.expire.max-snapshots": "2"}
    )
    table.append(_rows(1), idempotency_key="old")
    table.append(_rows(2))
    assert table.append(_rows(1), idempotency_key="old").summary[IDEMPOTENCY_KEY] == "old"
    assert table.count() == 20
    table.append(_rows(3))  # the snapshot of "old" falls out of the 2 kept
    table.append(_rows(1), idempotency_key="old")  # forgotten: it appends again
    assert table.count() == 40


_WORKER = """
import json, os, sys, time
from datashard import load_table
import pyarrow as pa
uri, options, go, tasks = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
table = load_table("t", warehouse=uri, **options)
open(go + "." + str(os.getpid()), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
out = []
for task in range(tasks):
    rows = pa.table({"task": pa.array([task] * 10, pa.int32()),
                     "row": pa.array(range(10), pa.int32())})
    out.append(table.append(rows, idempotency_key=f"run-1/task-{task}").snapshot_id)
table.flush()
print(json.dumps(out))
"""

PROCESSES, TASKS = 4, 3


@pytest.mark.parametrize("warehouse", ["local", "moto"], indirect=True)
def test_processes_racing_one_key_land_one_snapshot_per_key(warehouse: Any, tmp_path: Path) -> None:
    table = create_table(
        "t",
        SCHEMA,
        warehouse=warehouse.uri,
        properties={"commit.retry.num-retries": "50"},
        **warehouse.options,
    )
    go = str(tmp_path / "go")
    env = {**os.environ, "PYTHONPATH": str(Path(datashard.__file__).parents[1])}
    args = [warehouse.uri, json.dumps(warehouse.options), go, str(TASKS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("go.*"))) < PROCESSES and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        Path(go).touch()  # every writer has loaded the table: they start at once
        results = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # every attempt of a task got the same snapshot: the one the table has for its key
    table.refresh()
    snapshots = table.snapshots()
    assert len(snapshots) == TASKS
    by_key = {s.summary[IDEMPOTENCY_KEY]: s.snapshot_id for s in snapshots}
    for got in results:
        assert got == [by_key[f"run-1/task-{t}"] for t in range(TASKS)]
    rows = Counter((r["task"], r["row"]) for r in table.to_arrow().to_pylist())
    assert rows == Counter({(t, r): 1 for t in range(TASKS) for r in range(10)})
    # the losers deleted the data files they had staged
    assert _data_keys(table) == _referenced(table)


def test_keys_folded_in_by_group_commit_count_as_landed(local_wh: Any) -> None:
    """A snapshot that folded keyed appends in carries their keys: a retry of one of them
    returns that snapshot; a malformed list of folded keys is refused, not read as empty."""
    from dataclasses import replace

    from datashard.errors import CorruptMetadataError
    from datashard.table.updates import FOLDED_KEYS, idempotency_keys, snapshot_with_key

    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    snap = table.append(_rows(1), idempotency_key="own")
    folding = replace(snap, summary={**snap.summary, FOLDED_KEYS: json.dumps(["a,b", "é"])})
    assert idempotency_keys(folding) == ["own", "a,b", "é"]
    md = replace(table.metadata, snapshots=[folding])
    assert snapshot_with_key(md, "a,b") == folding and snapshot_with_key(md, "a") is None
    for bad in ["a,b", "[1]", '{"a": 1}']:
        broken = replace(snap, summary={**snap.summary, FOLDED_KEYS: bad})
        with pytest.raises(CorruptMetadataError, match=FOLDED_KEYS):
            idempotency_keys(broken)
