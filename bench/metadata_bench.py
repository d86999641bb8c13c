"""Metadata that stays small: many tiny appends with default settings and no maintenance call.

For datashard, on each backend (local disk, Ceph RGW): ``--appends`` appends of ``--rows`` rows
into a table with default properties (the automatic upkeep on, its grace period for leftovers
3 days: what it removes in this run are the files of dropped snapshots), and side by side into a
table with the upkeep off (``write.upkeep.remove-orphans.enabled=false``). Prints the metadata
directory's bytes by kind (whole versions, retired stubs, manifest lists, manifests), the mean
append latency, process CPU and storage requests per append early (appends 64-127) and late (the
last 64; with fewer than 256 appends, 20-39 and the last 20: windows of the sweep period), the
requests of a cold
``load_table`` at 10 appends and at the end. Then the early window again, side by side with the
late one: appends 64-127 of a new table, each next to one more append of the big table, so both
windows meet the same machine. And it checks that a writer which loaded the table
before all the appends still commits on the newest version.

The same appends go, on the local disk, through PyIceberg (SQL catalog), deltalake and lance,
each with its defaults and then with its own cleanup: metadata bytes per append.

    .venv/bin/python bench/metadata_bench.py --appends 1000
    .venv/bin/python bench/metadata_bench.py --appends 10000 --backends local --peers ""

Needs the peers of bench/requirements.txt. A benchmark, not a test: the only assertions are
that every library returns every row.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from datashard import Schema, create_table, load_table
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.table.versions import STUB_MAX_BYTES
from datashard.testing.faults import FaultyBackend

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "ts", "type": "long", "required": True},
        {"id": 2, "name": "task", "type": "string", "required": True},
        {"id": 3, "name": "message", "type": "string", "required": False},
    ],
)
NO_UPKEEP = {"write.upkeep.remove-orphans.enabled": "false"}
#: seconds one peer may spend appending before it stops (and reports per append)
PEER_BUDGET = 240.0


def batch(i: int, rows: int) -> pa.Table:
    base = i * rows
    return pa.table(
        {
            "ts": pa.array(range(base, base + rows), pa.int64()),
            "task": [f"task-{i % 97}"] * rows,
            "message": [f"step {r} of batch {i} finished" for r in range(rows)],
        }
    )


def metadata_bytes(backend: StorageBackend, prefix: str) -> dict[str, tuple[int, int]]:
    """(files, bytes) under ``prefix`` by kind."""
    out: dict[str, list[int]] = {}
    for meta in backend.list(prefix):
        name = meta.key.rsplit("/", 1)[-1]
        if name.endswith(".metadata.json"):
            kind = "stub" if meta.size <= STUB_MAX_BYTES else "version"
        elif name.startswith("snap-"):
            kind = "list"
        elif name.endswith(".avro"):
            kind = "manifest"
        else:
            kind = "other"
        entry = out.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += meta.size
    return {k: (v[0], v[1]) for k, v in out.items()}


def cold_load_requests(backend: StorageBackend) -> int:
    counting = FaultyBackend(backend)
    load_table("t", warehouse=counting)
    return len(counting.calls)


def run_datashard(
    backend: StorageBackend, appends: int, rows: int, props: dict[str, str]
) -> dict[str, Any]:
    batches = [batch(i, rows) for i in range(appends)]
    counting = FaultyBackend(backend)
    table = create_table("t", SCHEMA, warehouse=counting, properties=props)
    stale = load_table("t", warehouse=backend)  # holds v1 through every append below
    latency: list[float] = []
    cpu: list[float] = []  # process CPU per append: less moved by other work on the machine
    calls: list[int] = []
    cold_10 = 0
    for i, data in enumerate(batches):
        calls.append(len(counting.calls))
        start, cpu_start = time.perf_counter(), time.process_time()
        table.append(data)
        latency.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        if i == 9:
            table.flush()
            cold_10 = cold_load_requests(backend)
    table.flush()
    calls.append(len(counting.calls))
    # windows of 64 appends (the sweep period), so each holds one sweep
    width = 64 if appends >= 256 else 20
    early, late = slice(width, 2 * width), slice(appends - width, appends)
    per_append = [calls[i + 1] - calls[i] for i in range(appends)]
    cold_end = cold_load_requests(backend)
    sizes = metadata_bytes(backend, "t/metadata/")
    # Side by side: the early window again, on a new table, each of its appends next to one
    # more append of this table, so both windows see the same machine (a shared one moves
    # timings by half between minutes apart).
    fresh = create_table("fresh", SCHEMA, warehouse=backend, properties=props)
    side: dict[str, tuple[list[float], list[float]]] = {"early": ([], []), "late": ([], [])}
    for j in range(2 * width):
        for tag, target, data in (
            ("early", fresh, batch(appends + 1 + j, rows)),
            ("late", table, batch(appends + 1 + 2 * width + j, rows)),
        ):
            start, cpu_start = time.perf_counter(), time.process_time()
            target.append(data)
            if j >= width:
                side[tag][0].append(time.perf_counter() - start)
                side[tag][1].append(time.process_time() - cpu_start)
    fresh.flush()
    table.flush()
    stale.append(batch(appends, rows))  # commits on the newest version, across retired ones
    total = load_table("t", warehouse=backend).count()
    assert total == (appends + 1 + 2 * width) * rows, (total, appends)
    return {
        "side_early_ms": statistics.mean(side["early"][0]) * 1000,
        "side_late_ms": statistics.mean(side["late"][0]) * 1000,
        "side_early_cpu": statistics.mean(side["early"][1]) * 1000,
        "side_late_cpu": statistics.mean(side["late"][1]) * 1000,
        "sizes": sizes,
        "early_ms": statistics.mean(latency[early]) * 1000,
        "late_ms": statistics.mean(latency[late]) * 1000,
        "early_cpu": statistics.mean(cpu[early]) * 1000,
        "late_cpu": statistics.mean(cpu[late]) * 1000,
        "early_req": statistics.mean(per_append[early]),
        "late_req": statistics.mean(per_append[late]),
        "cold_10": cold_10,
        "cold_end": cold_end,
    }


def report_datashard(backend: str, appends: int, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n## datashard on {backend}: {appends} appends, no maintenance call\n")
    print("| table | whole versions | stubs | manifest lists | manifests | metadata/ MB |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        s = r["sizes"]

        def cell(kind: str, s: dict[str, tuple[int, int]] = s) -> str:
            n, b = s.get(kind, (0, 0))
            return f"{n} ({b / 1e6:.2f} MB)"

        total = sum(b for _, b in s.values()) / 1e6
        print(
            f"| {name} | {cell('version')} | {cell('stub')} | {cell('list')} "
            f"| {cell('manifest')} | {total:.2f} |"
        )
    print(
        "\n| table | append ms, early | append ms, late | late/early | CPU ms, early "
        "| CPU ms, late | late/early | requests/append, early | late "
        "| cold load requests at 10 | at the end |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['early_ms']:.1f} | {r['late_ms']:.1f} "
            f"| {r['late_ms'] / r['early_ms']:.2f} | {r['early_cpu']:.1f} | {r['late_cpu']:.1f} "
            f"| {r['late_cpu'] / r['early_cpu']:.2f} | {r['early_req']:.1f} | {r['late_req']:.1f} "
            f"| {r['cold_10']} | {r['cold_end']} |"
        )
    print(
        "\nSide by side, each append of appends 64-127 of a new table next to one more of this "
        "one (late):\n\n| table | append ms, early | late | late/early | CPU ms, early | late "
        "| late/early |\n|---|---|---|---|---|---|---|"
    )
    for name, r in results.items():
        print(
            f"| {name} | {r['side_early_ms']:.1f} | {r['side_late_ms']:.1f} "
            f"| {r['side_late_ms'] / r['side_early_ms']:.2f} | {r['side_early_cpu']:.1f} "
            f"| {r['side_late_cpu']:.1f} | {r['side_late_cpu'] / r['side_early_cpu']:.2f} |"
        )
    base = results.get("upkeep off")
    upkeep = results.get("defaults")
    if base and upkeep:
        print(
            f"\nappend latency with the upkeep on / off: "
            f"{upkeep['late_ms'] / base['late_ms']:.2f} (late), "
            f"{upkeep['early_ms'] / base['early_ms']:.2f} (early); CPU "
            f"{upkeep['late_cpu'] / base['late_cpu']:.2f} (late)"
        )


def dir_bytes(path: Path, under: str = "") -> int:
    root = path / under if under else path
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed_appends(append: Any, batches: list[pa.Table]) -> int:
    start = time.perf_counter()
    done = 0
    for data in batches:
        append(data)
        done += 1
        if time.perf_counter() - start > PEER_BUDGET:
            break
    return done


def peer_pyiceberg(root: Path, batches: list[pa.Table], cleanup: bool) -> tuple[int, int]:
    from pyiceberg.catalog.sql import SqlCatalog

    where = root / ("pyiceberg-clean" if cleanup else "pyiceberg")
    where.mkdir()
    catalog = SqlCatalog("b", uri=f"sqlite:///{where}/c.db", warehouse=f"file://{where}")
    catalog.create_namespace("n")
    props = (
        {
            "write.metadata.delete-after-commit.enabled": "true",
            "write.metadata.previous-versions-max": "10",
        }
        if cleanup
        else {}
    )
    table = catalog.create_table("n.t", schema=batches[0].schema, properties=props)
    done = timed_appends(table.append, batches)
    assert table.scan().to_arrow().num_rows == sum(b.num_rows for b in batches[:done])
    meta = [p for p in where.rglob("*") if p.is_file() and p.parent.name == "metadata"]
    return done, sum(p.stat().st_size for p in meta)


def peer_deltalake(root: Path, batches: list[pa.Table], cleanup: bool) -> tuple[int, int]:
    from deltalake import DeltaTable, write_deltalake

    path = root / ("delta-clean" if cleanup else "delta")
    # with cleanup: a log retention of 0, so cleanup_metadata removes every entry a checkpoint
    # covers (the default retention is 30 days)
    config = {"delta.logRetentionDuration": "interval 0 seconds"} if cleanup else None
    write_deltalake(str(path), batches[0], mode="append", configuration=config)
    done = 1 + timed_appends(lambda d: write_deltalake(str(path), d, mode="append"), batches[1:])
    table = DeltaTable(str(path))
    if cleanup:
        table.create_checkpoint()
        table.cleanup_metadata()
    assert table.to_pyarrow_table().num_rows == sum(b.num_rows for b in batches[:done])
    return done, dir_bytes(path, "_delta_log")


def peer_lance(root: Path, batches: list[pa.Table], cleanup: bool) -> tuple[int, int]:
    import lance

    path = root / ("lance-clean" if cleanup else "lance")
    done = timed_appends(lambda d: lance.write_dataset(d, str(path), mode="append"), batches)
    ds = lance.dataset(str(path))
    if cleanup:
        ds.cleanup_old_versions(older_than=timedelta(0))
    assert ds.count_rows() == sum(b.num_rows for b in batches[:done])
    return done, dir_bytes(path) - dir_bytes(path, "data")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--appends", type=int, default=1000)
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--backends", default="local,ceph")
    p.add_argument("--peers", default="pyiceberg,deltalake,lance")
    a = p.parse_args(argv)
    local: dict[str, dict[str, Any]] = {}
    for backend in [b for b in a.backends.split(",") if b]:
        results: dict[str, dict[str, Any]] = {}
        for name, props in (("defaults", {}), ("upkeep off", NO_UPKEEP)):
            tmp = tempfile.mkdtemp(prefix="ds-meta-bench-")
            server = None
            try:
                if backend == "local":
                    store = open_backend(f"file://{tmp}")
                else:
                    from datashard.testing.servers import new_s3_bucket, start_ceph

                    server = start_ceph()
                    bucket = new_s3_bucket(server, "bench")
                    store = open_backend(
                        f"s3://{bucket}/b",
                        endpoint_url=server.endpoint_url,
                        access_key_id=server.access_key_id,
                        secret_access_key=server.secret_access_key,
                        region=server.region,
                        path_style=True,
                    )
                print(f"[{backend}] datashard, {name} ...", file=sys.stderr, flush=True)
                results[name] = run_datashard(store, a.appends, a.rows, props)
            finally:
                if server is not None:
                    from datashard.testing.servers import stop_server

                    stop_server(server)
                shutil.rmtree(tmp, ignore_errors=True)
        report_datashard(backend, a.appends, results)
        if backend == "local":
            local = results
    peers = [x for x in a.peers.split(",") if x]
    if not peers:
        return
    batches = [batch(i, a.rows) for i in range(a.appends)]
    print(f"\n## peers on the local disk: the same {a.appends} appends\n")
    print("| library | appends made | metadata bytes/append, defaults | after its own cleanup |")
    print("|---|---|---|---|")
    if local:
        plain = sum(b for _, b in local["upkeep off"]["sizes"].values())
        clean = sum(b for _, b in local["defaults"]["sizes"].values())
        print(
            f"| datashard | {a.appends} | {clean / a.appends:,.0f} (the upkeep off: "
            f"{plain / a.appends:,.0f}) | {clean / a.appends:,.0f} (no call) |"
        )
    runners = {"pyiceberg": peer_pyiceberg, "deltalake": peer_deltalake, "lance": peer_lance}
    for peer in peers:
        root = Path(tempfile.mkdtemp(prefix=f"ds-meta-{peer}-"))
        try:
            print(f"[local] {peer} ...", file=sys.stderr, flush=True)
            n1, plain = runners[peer](root, batches, False)
            n2, clean = runners[peer](root, batches, True)
            print(f"| {peer} | {n1} | {plain / n1:,.0f} | {clean / n2:,.0f} |")
        except Exception as exc:  # a peer that fails is reported, the others still run
            print(f"| {peer} | failed: {type(exc).__name__}: {exc} | | |")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
