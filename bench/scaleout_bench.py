"""Reads and writes through Dask and Ray against one process and the peers' Ray paths, side by
side in one run, on the same local disk.

Read: a table of ``--files`` data files (default 50) of ``--rows`` rows in all (default
3,000,000; five columns), read

- by datashard in one process (``table.to_arrow()``, its own thread pool);
- by ``datashard.dask.read_table`` on a ``distributed.LocalCluster`` of 2 worker processes (one
  thread each): the rows brought back to the client (``.compute()``), and a count of the rows
  computed on the workers (``.map_partitions(len).sum()``, nothing sent back but numbers);
- by ``datashard.ray.read_table`` on a local Ray (2 CPUs), and Ray's own ``read_delta`` (over
  deltalake) and ``read_lance`` of the same rows written by deltalake and lance with one file
  per datashard file: each materialized on the workers and counted there.

Write: ``--write-rows`` rows (default 2,000,000) in 8 partitions: ``datashard.dask.write_table``
(2 workers, one commit) against ``table.append`` of the same rows in one process; Ray:
``datashard.ray.write_table`` against Ray's ``write_delta`` and ``write_lance``.

deltalake and lance have no Dask reader or writer of their own (the dask-deltatable package is
separate and not installed), so the Dask rows compare with one process only.

    .venv/bin/python bench/scaleout_bench.py
    .venv/bin/python bench/scaleout_bench.py --rows 1000000 --write-rows 500000 --repeat 1

Prints the best time of ``--repeat`` runs and the ratios. The machine is shared: compare the
ratios of one run, not times across runs. A benchmark, not a test: it only checks that every
reader returns every row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datashard import Schema, create_table  # noqa: E402

SCHEMA = Schema(
    0,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "name", "type": "string", "required": False},
        {"id": 3, "name": "score", "type": "double", "required": False},
        {"id": 4, "name": "n", "type": "int", "required": False},
        {"id": 5, "name": "tag", "type": "string", "required": False},
    ],
)


def rows(start: int, count: int) -> pa.Table:
    ids = np.arange(start, start + count)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"user-{i}" for i in ids]),
            "score": pa.array(ids * 0.5, pa.float64()),
            "n": pa.array(ids % 1000, pa.int32()),
            "tag": pa.array(np.where(ids % 2 == 0, "even", "odd")),
        }
    )


def best(run: Callable[[], Any], repeat: int, check: Callable[[Any], None]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        check(out)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--write-rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    # a one-machine Ray: every Ray process listens on 127.0.0.1 (read when ray is imported)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    root = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    per = args.rows // args.files
    total = per * args.files
    results: dict[str, float] = {}
    try:
        table = create_table("read", SCHEMA, warehouse=str(root / "wh"))
        parts = [rows(i * per, per) for i in range(args.files)]
        for part in parts:
            table.append(part)
        print(f"read: {args.files} files, {total:,} rows; write: {args.write_rows:,} rows")

        def has_all(n: Any) -> None:
            got = n if isinstance(n, int) else len(n)
            assert got == total, (got, total)

        results["read 1 process (to_arrow)"] = best(table.to_arrow, args.repeat, has_all)
        results.update(_dask(table, total, args, has_all))
        results.update(_ray(table, parts, root, args, has_all))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    for name, seconds in results.items():
        print(f"{name:<48} {seconds:8.2f} s")
    print()
    for a, b in RATIOS:
        if a in results and b in results:
            print(f"{a} / {b}: {results[a] / results[b]:.2f}")


RATIOS = [
    ("read dask 2 workers, rows to client", "read 1 process (to_arrow)"),
    ("read dask 2 workers, counted on workers", "read 1 process (to_arrow)"),
    ("read ray 2 CPUs datashard", "read 1 process (to_arrow)"),
    ("read ray 2 CPUs datashard", "read ray 2 CPUs read_delta"),
    ("read ray 2 CPUs datashard", "read ray 2 CPUs read_lance"),
    ("write dask 2 workers, one commit", "write 1 process (append)"),
    ("write ray 2 CPUs datashard", "write 1 process (append)"),
    ("write ray 2 CPUs datashard", "write ray 2 CPUs write_delta"),
    ("write ray 2 CPUs datashard", "write ray 2 CPUs write_lance"),
]


def _frame(n: int) -> pd.DataFrame:
    frame: pd.DataFrame = rows(0, n).to_pandas()
    return frame


def _dask(table: Any, total: int, args: Any, has_all: Callable[[Any], None]) -> dict[str, float]:
    import dask.dataframe as dd
    import distributed

    import datashard.dask as dsd

    out: dict[str, float] = {}
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.run(lambda: None)  # every worker is up
        out["read dask 2 workers, rows to client"] = best(
            lambda: dsd.read_table(table).compute(), args.repeat, has_all
        )
        out["read dask 2 workers, counted on workers"] = best(
            lambda: int(dsd.read_table(table).map_partitions(len).compute().sum()),
            args.repeat,
            has_all,
        )
        source = _frame(args.write_rows)
        ddf = dd.from_pandas(source, npartitions=8).persist()  # the rows already on workers

        def count(expected: int) -> Callable[[Any], None]:
            def check(t: Any) -> None:
                assert t.refresh().count() == expected, t.count()

            return check

        target = create_table("dask_w", SCHEMA, warehouse=table.backend.root_uri)
        written = [0]

        def dask_write() -> Any:
            dsd.write_table(ddf, target)
            written[0] += args.write_rows
            return target

        out["write dask 2 workers, one commit"] = best(
            dask_write, args.repeat, lambda t: count(written[0])(t)
        )
    one = create_table("one_w", SCHEMA, warehouse=table.backend.root_uri)
    arrow = pa.Table.from_pandas(source, preserve_index=False)
    appended = [0]

    def append() -> Any:
        one.append(arrow)
        appended[0] += args.write_rows
        return one

    out["write 1 process (append)"] = best(append, args.repeat, lambda t: count(appended[0])(t))
    return out


def _ray(
    table: Any, parts: list[pa.Table], root: Path, args: Any, has_all: Callable[[Any], None]
) -> dict[str, float]:
    import ray
    import ray.data

    import datashard.ray as dsr

    out: dict[str, float] = {}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(100).map_batches(lambda b: b).materialize()  # start the workers first
    try:

        def counted(ds: Any) -> int:
            return int(ds.map_batches(_count, batch_format="pyarrow").sum("rows"))

        out["read ray 2 CPUs datashard"] = best(
            lambda: counted(dsr.read_table(table)), args.repeat, has_all
        )
        peers = _peer_tables(parts, root)
        for name, read in (
            ("read_delta", lambda: ray.data.read_delta(peers["delta"])),
            ("read_lance", lambda: ray.data.read_lance(peers["lance"])),
        ):
            try:
                out[f"read ray 2 CPUs {name}"] = best(
                    lambda read=read: counted(read()), args.repeat, has_all
                )
            except Exception as exc:  # a peer path that does not run here: say so
                print(f"ray {name}: not measured ({type(exc).__name__}: {exc})")
        source = rows(0, args.write_rows)
        step = -(-source.num_rows // 8)
        ds = ray.data.from_arrow([source.slice(i, step) for i in range(0, source.num_rows, step)])
        ds = ds.materialize()
        target = create_table("ray_w", SCHEMA, warehouse=table.backend.root_uri)
        out["write ray 2 CPUs datashard"] = best(
            lambda: dsr.write_table(ds, target), args.repeat, lambda _: None
        )
        for name, write in (
            ("write_delta", lambda i: ds.write_delta(str(root / f"delta_w{i}"))),
            ("write_lance", lambda i: ds.write_lance(str(root / f"lance_w{i}"))),
        ):
            runs = iter(range(args.repeat))
            try:
                out[f"write ray 2 CPUs {name}"] = best(
                    lambda write=write, runs=runs: write(next(runs)), args.repeat, lambda _: None
                )
            except Exception as exc:
                print(f"ray {name}: not measured ({type(exc).__name__}: {exc})")
    finally:
        ray.shutdown()
    return out


def _count(batch: pa.Table) -> pa.Table:
    return pa.table({"rows": [batch.num_rows]})


def _peer_tables(parts: list[pa.Table], root: Path) -> dict[str, str]:
    """The same rows as a Delta table and a Lance dataset, one append (file) per part."""
    import deltalake
    import lance

    delta, lance_uri = str(root / "delta"), str(root / "lance")
    for i, part in enumerate(parts):
        deltalake.write_deltalake(delta, part, mode="append" if i else "error")
        lance.write_dataset(part, lance_uri, mode="append" if i else "create")
    return {"delta": delta, "lance": lance_uri}


if __name__ == "__main__":
    main()
