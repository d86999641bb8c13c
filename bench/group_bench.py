"""Many writers at cloud latency: group commit against the plain protocol, lance and deltalake.

Every system appends to one table from ``--writers`` processes, ``--appends`` appends of 10
rows each, through a loopback proxy in front of Ceph RGW that holds every request for
``--delay-ms`` (a latency-bound setting: what makes commit rates measurable on 2 cores).
Writers start together once all are ready (imports and table load excluded). For each system:
appends acknowledged per second, failed appends, rows lost or duplicated (counted in the final
table), the median and p99 latency of one append, and the CPU spent per acknowledged append
by the writers and by the whole machine (writers, RGW, proxy; from ``/proc/stat``) with how busy
the machine's cores were: a rate whose machine is near 100% busy is bound by CPU, at
cores / machine CPU per append; and the requests the writers sent per acknowledged append
(counted at the proxy while they ran).

    .venv/bin/python bench/group_bench.py --writers 32,64 --appends 10 --delay-ms 15
    .venv/bin/python bench/group_bench.py --systems ds-group,ds-plain --writers 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from table_bench import IMPLS, SCHEMA, Root, rows  # noqa: E402

SYSTEMS = ("ds-group", "ds-plain", "lance", "deltalake")
#: a writer stops after this long, whatever it has left (the bench stays bounded)
WRITER_BUDGET_S = 240.0


def _create(system: str, root: Root, name: str) -> None:
    if system.startswith("ds-"):
        from datashard import Schema, create_table

        impl = IMPLS["datashard"](root)
        create_table(
            name,
            Schema.from_arrow(SCHEMA),
            warehouse=impl._wh(),  # noqa: SLF001 - the bench's own helper
            properties={
                "commit.group.enabled": "true" if system == "ds-group" else "false",
                "commit.retry.num-retries": "100",
            },
            **impl._options(),  # noqa: SLF001
        )
    else:
        IMPLS[system](root).create(name)


def _worker(
    system: str, root: Root, name: str, writer: int, appends: int, barrier: Any
) -> tuple[int, float, float, list[float]]:
    impl = IMPLS["datashard" if system.startswith("ds-") else system](root)
    handle = impl.open(name)
    barrier.wait(timeout=600)
    began, cpu = time.time(), time.process_time()
    done, latencies = 0, []
    for c in range(appends):
        if time.time() - began > WRITER_BUDGET_S:
            break
        t0 = time.perf_counter()
        try:
            impl.append(handle, rows(10, start=writer * 1_000_000 + c * 10, writer=writer))
            done += 1
            latencies.append(time.perf_counter() - t0)
        except Exception as exc:
            print(f"  {system} w{writer}: {type(exc).__name__}: {str(exc)[:100]}", file=sys.stderr)
            if not system.startswith("ds-"):
                handle = impl.open(name)
    if system.startswith("ds-"):
        handle.flush()
    return done, began, time.time(), latencies, time.process_time() - cpu


class MachineCpu:
    """Samples the machine's busy and total CPU time (``/proc/stat``) every 50 ms in a thread,
    so the CPU the whole machine spent (writers, RGW, the proxy) can be read for a window
    known only afterwards."""

    def __init__(self) -> None:
        import threading

        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MachineCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            with open("/proc/stat") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
            idle = fields[3] + fields[4]  # idle + iowait
            self.samples.append((time.time(), (sum(fields) - idle) / tick, sum(fields) / tick))
            if self._stop.wait(0.05):
                return

    def between(self, start: float, end: float) -> tuple[float, float]:
        """CPU seconds the machine was busy, and available, from ``start`` to ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        first, last = inside[0], inside[-1]
        return last[1] - first[1], last[2] - first[2]


def run(system: str, root: Root, writers: int, appends: int, proxy: Any = None) -> dict[str, float]:
    name = f"g-{system}-{writers}-{uuid.uuid4().hex[:6]}"
    _create(system, root, name)
    seen = 0 if proxy is None else len(proxy.arrivals)
    wall_minus_mono = time.time() - time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with (
        ctx.Manager() as manager,
        ProcessPoolExecutor(writers, mp_context=ctx) as pool,
        MachineCpu() as machine,
    ):
        barrier = manager.Barrier(writers)
        futures = [
            pool.submit(_worker, system, root, name, w, appends, barrier) for w in range(writers)
        ]
        results = [f.result() for f in futures]
    acked = sum(r[0] for r in results)
    start, end = min(r[1] for r in results), max(r[2] for r in results)
    elapsed = end - start
    busy, available = machine.between(start, end)
    # the requests that reached the proxy while the writers ran (creation and the check excluded)
    sent = 0
    if proxy is not None:
        sent = sum(1 for t, _, _ in proxy.arrivals[seen:] if start <= t + wall_minus_mono <= end)
    impl = IMPLS["datashard" if system.startswith("ds-") else system](root)
    final = impl.read(impl.open(name))
    ids = final["id"].tolist()
    lat = sorted(x for r in results for x in r[3])
    return {
        "acked_per_s": acked / elapsed,
        "failed": writers * appends - acked,
        "rows_missing": acked * 10 - len(set(ids)),
        "rows_duplicated": len(ids) - len(set(ids)),
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        # CPU per acknowledged append: the writers' own, and the whole machine's (RGW, proxy)
        "writer_cpu_ms": 1000 * sum(r[4] for r in results) / max(acked, 1),
        "machine_cpu_ms": 1000 * busy / max(acked, 1),
        "busy": busy / available if available else float("nan"),
        "requests": sent / max(acked, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", default="32,64")
    p.add_argument("--appends", type=int, default=10)
    p.add_argument("--delay-ms", type=float, default=15.0)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    args = p.parse_args()
    from datashard.testing.faultproxy import FaultProxy
    from datashard.testing.servers import new_s3_bucket, start_ceph, stop_server

    server = start_ceph()
    try:
        bucket = new_s3_bucket(server, "group")
        with FaultProxy(server.endpoint_url) as proxy:
            proxy.delay(args.delay_ms / 1000.0, n=10**9)
            root = Root(
                "s3",
                f"{bucket}/bench",
                proxy.url,
                server.access_key,
                server.secret_key,
                server.region,
            )
            print(
                f"Ceph RGW + {args.delay_ms:g} ms per request, {args.appends} appends of 10 "
                "rows per writer"
            )
            print(
                f"{'system':<10} {'writers':>7} {'acked/s':>8} {'failed':>6} {'missing':>7} "
                f"{'dup':>4} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/append: writers':>22} "
                f"{'machine':>7} {'busy':>5} {'requests/append':>15}"
            )
            for writers in [int(w) for w in args.writers.split(",")]:
                rates: dict[str, float] = {}
                for system in args.systems.split(","):
                    r = run(system, root, writers, args.appends, proxy)
                    rates[system] = r["acked_per_s"]
                    print(
                        f"{system:<10} {writers:>7} {r['acked_per_s']:>8.1f} {r['failed']:>6.0f} "
                        f"{r['rows_missing']:>7.0f} {r['rows_duplicated']:>4.0f} "
                        f"{r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['writer_cpu_ms']:>22.0f} "
                        f"{r['machine_cpu_ms']:>7.0f} {r['busy']:>5.0%} {r['requests']:>15.1f}",
                        flush=True,
                    )
                if "ds-group" in rates:
                    ratios = ", ".join(
                        f"{rates['ds-group'] / v:.1f}x {k}"
                        for k, v in rates.items()
                        if k != "ds-group" and v
                    )
                    print(f"  ds-group rate with {writers} writers: {ratios}")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
