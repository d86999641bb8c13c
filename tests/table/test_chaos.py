"""Chaos, bounded: writer processes SIGKILLed at random and restarted, about 10% of S3 requests
failed, reset or losing their response at a fault proxy, and a maintenance loop compacting,
expiring and removing orphans (with the default grace) all the while, and the automatic
metadata upkeep (retired versions, unreferenced manifests removed) on. At the end every
acknowledged append is in the table exactly once, no batch twice, and the table loads and
reads whole."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import DataShardError
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.writers import chaos_writer

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "writer", "type": "int", "required": True},
        {"id": 2, "name": "batch", "type": "int", "required": True},
        {"id": 3, "name": "row", "type": "int", "required": True},
    ],
)
PROPS = {
    "commit.retry.num-retries": "200",
    "commit.retry.min-wait-ms": "1",
    "commit.retry.max-wait-ms": "50",
    "commit.manifest.min-count-to-merge": "8",
    # the metadata upkeep runs all the while too: versions retired out of a 3-entry log, and
    # unreferenced manifest lists and manifests removed after 10 s (commits give up after 10 s)
    "write.metadata.previous-versions-max": "3",
    "write.upkeep.remove-orphans.enabled": "true",
    "write.upkeep.remove-orphans.older-than-ms": "10000",
    "commit.max-duration-ms": "10000",
}
WRITERS = 3
ROWS = 4
BATCHES = 400  # more than a writer gets through before it is killed or the time is up
CHAOS_SECONDS = 40
FAULT_EVERY = 10  # one fault per this many requests at the proxy


def _inject(proxy: FaultProxy, stop: threading.Event, seed: int) -> None:
    """Fail, reset or drop the response of about one request in ``FAULT_EVERY``."""
    rng = random.Random(seed)
    injected = 0
    while not stop.wait(0.01):
        total = sum(proxy.requests.values())
        while injected < total // FAULT_EVERY:
            injected += 1
            kind = rng.choice(("fail", "reset", "drop_response"))
            if kind == "fail":
                proxy.fail(n=1)
            elif kind == "reset":
                proxy.reset(n=1)
            else:
                proxy.drop_response(n=1)


def _run_chaos(
    uri: str, options: dict[str, Any], tmp: Path, seed: int, group: bool = False
) -> set[tuple[int, ...]]:
    """Writers, killer and maintenance for ``CHAOS_SECONDS``; the acknowledged batches.
    With ``group``, the appends use group commit (``commit.group.enabled``)."""
    props = {**PROPS, "commit.group.enabled": "true" if group else "false"}
    create_table("c", SCHEMA, warehouse=uri, properties=props, **options)
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("spawn")
    acks = tmp / "acks.txt"
    acks.write_text("")
    next_id = 0
    procs: list[Any] = []

    def start() -> None:
        nonlocal next_id
        p = ctx.Process(
            target=chaos_writer,
            args=(uri, options, "c", next_id, BATCHES, ROWS, str(acks)),
            daemon=True,
        )
        p.start()
        procs.append(p)
        next_id += 1

    lock = threading.Lock()
    for _ in range(WRITERS):
        start()
    kills = 0
    stop = threading.Event()

    def killer() -> None:
        nonlocal kills
        while not stop.wait(rng.uniform(0.5, 2.0)):
            with lock:
                alive = [p for p in procs if p.is_alive()]
                if not alive:
                    continue
                victim = rng.choice(alive)
                os.kill(victim.pid, signal.SIGKILL)  # wherever it is: mid-write, mid-commit
                victim.join(10)
                kills += 1
                start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    maint = load_table("c", warehouse=uri, **options)
    maintenance_runs = 0
    deadline = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < deadline:
        try:
            maint.refresh()
            maint.compact(target_file_size=1 << 20)
            maint.expire_snapshots(older_than=dt.timedelta(0), retain_last=10)
            maint.remove_orphan_files()  # the default grace: nothing a writer has in flight
            maintenance_runs += 1
        except DataShardError:
            pass  # a conflict or a fault: the next round tries again
        time.sleep(0.2)
    stop.set()
    thread.join(30)
    with lock:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)
    assert kills >= 5 and maintenance_runs >= 3, (kills, maintenance_runs)

    lines = [tuple(map(int, line.split())) for line in acks.read_text().splitlines()]
    acknowledged = {line[:2] for line in lines}
    assert len(acknowledged) >= 20  # the writers did get appends through
    folded = sum(line[2] for line in lines)
    print(
        f"chaos: {kills} kills, {maintenance_runs} maintenance rounds, {len(acknowledged)} acks,"
        f" {folded} in snapshots that folded appends in"
    )
    if group:  # the writers met contention: some appends were folded into others' snapshots
        assert folded > 0
    else:
        assert folded == 0
    return acknowledged


def _verify(uri: str, options: dict[str, Any], acknowledged: set[tuple[int, ...]]) -> None:
    table = load_table("c", warehouse=uri, **options)
    rows = Counter((r["writer"], r["batch"], r["row"]) for r in table.to_arrow().to_pylist())
    assert max(rows.values()) == 1, "a row appears twice"
    batches = Counter((w, b) for w, b, _ in rows)
    assert all(n == ROWS for n in batches.values()), "a batch landed in part"
    missing = acknowledged - set(batches)
    assert not missing, f"acknowledged appends lost: {sorted(missing)[:5]}"
    assert table.count() == sum(rows.values())
    for snap in table.snapshots():  # every snapshot the table keeps reads whole
        table.scan(snapshot_id=snap.snapshot_id).count()


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["plain", "group-commit"])
def test_chaos_on_the_local_disk_loses_and_doubles_nothing(tmp_path: Path, group: bool) -> None:
    uri = f"file://{tmp_path}/wh"
    _verify(uri, {}, _run_chaos(uri, {}, tmp_path, seed=1, group=group))


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.parametrize("group", [False, True], ids=["plain", "group-commit"])
def test_chaos_on_ceph_behind_a_faulty_proxy_loses_and_doubles_nothing(
    ceph_s3: Any, ceph_bucket: str, tmp_path: Path, group: bool
) -> None:
    with FaultProxy(ceph_s3.endpoint_url) as proxy:
        options = {
            "endpoint_url": proxy.url,
            "access_key_id": ceph_s3.access_key_id,
            "secret_access_key": ceph_s3.secret_access_key,
            "region": ceph_s3.region,
            "path_style": True,
            "retry_first_delay": 0.01,
            "retry_max_delay": 0.2,
        }
        stop = threading.Event()
        injector = threading.Thread(target=_inject, args=(proxy, stop, 2), daemon=True)
        injector.start()
        try:
            acknowledged = _run_chaos(
                f"s3://{ceph_bucket}/chaos", options, tmp_path, seed=3, group=group
            )
        finally:
            stop.set()
            injector.join(5)
        assert sum(proxy.requests.values()) > 200
    direct = {**options, "endpoint_url": ceph_s3.endpoint_url}  # read back without faults
    _verify(f"s3://{ceph_bucket}/chaos", direct, acknowledged)
