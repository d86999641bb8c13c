"""Upsert (merge on a key) against the peers, side by side in one run, on the same local disk.

A table of ``--rows`` rows (default 1,000,000) in ``--files`` appends; then an upsert of
``--batch`` rows (default 10,000): half replace existing keys with a new value, half are new keys.
The same data goes through PyIceberg (``Table.upsert``, a SQLite catalog) and deltalake
(delta-rs: ``merge(...).when_matched_update_all().when_not_matched_insert_all()``). Prints the
best time of ``--repeat`` runs for each (each on a fresh copy of its table) and the ratios
datashard / peer; datashard in both delete modes.

    .venv/bin/python bench/upsert_bench.py
    .venv/bin/python bench/upsert_bench.py --rows 200000 --batch 2000 --repeat 3

Needs ``deltalake`` (bench/requirements.txt) and PyIceberg (dev extra). A benchmark, not a test:
nothing is asserted except that every library ends with the same rows.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datashard import Schema, create_table

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "id", "type": "long", "required": False},
        {"id": 2, "name": "name", "type": "string", "required": False},
        {"id": 3, "name": "score", "type": "double", "required": False},
    ],
)


def rows(ids: np.ndarray, score: float) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"user-{i}" for i in ids]),
            "score": pa.array(np.full(len(ids), score), pa.float64()),
        }
    )


def timed(setup: Callable[[], Any], run: Callable[[Any], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        state = setup()
        start = time.perf_counter()
        run(state)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    per = args.rows // args.files
    parts = [rows(np.arange(i * per, (i + 1) * per), 1.0) for i in range(args.files)]
    half = args.batch // 2
    rng = np.random.default_rng(7)
    source = rows(
        np.concatenate(
            [rng.choice(args.rows, half, replace=False), np.arange(args.rows, args.rows + half)]
        ),
        2.0,
    )
    root = Path(tempfile.mkdtemp(prefix="upsert-bench-"))
    results: dict[str, float] = {}
    finals: dict[str, int] = {}
    counter = iter(range(10**6))
    try:
        for mode in ("copy-on-write", "merge-on-read"):

            def ds_setup(mode: str = mode) -> Any:
                t = create_table(
                    f"t{next(counter)}",
                    SCHEMA,
                    warehouse=f"file://{root}/ds",
                    properties={"write.delete.mode": mode},
                )
                for p in parts:
                    t.append(p)
                t.flush()
                return t

            def ds_run(t: Any) -> None:
                t.upsert(source, join_cols=["id"])
                finals["datashard"] = t.count()

            results[f"datashard ({mode})"] = timed(ds_setup, ds_run, args.repeat)

        from pyiceberg.catalog.sql import SqlCatalog

        catalog = SqlCatalog(
            "bench", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/pyiceberg"
        )
        catalog.create_namespace("b")

        def pi_setup() -> Any:
            t = catalog.create_table(f"b.t{next(counter)}", schema=parts[0].schema)
            for p in parts:
                t.append(p)
            return t

        def pi_run(t: Any) -> None:
            t.upsert(source, join_cols=["id"])
            finals["pyiceberg"] = len(t.scan().to_arrow())

        results["pyiceberg"] = timed(pi_setup, pi_run, args.repeat)

        from deltalake import DeltaTable, write_deltalake

        def dl_setup() -> Any:
            path = f"{root}/delta{next(counter)}"
            for p in parts:
                write_deltalake(path, p, mode="append")
            return path

        def dl_run(path: str) -> None:
            (
                DeltaTable(path)
                .merge(source, "t.id = s.id", source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            finals["deltalake"] = DeltaTable(path).to_pyarrow_table().num_rows

        results["deltalake"] = timed(dl_setup, dl_run, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    assert len(set(finals.values())) == 1, f"row counts differ: {finals}"
    print(f"upsert of {args.batch:,} rows (half new) into {args.rows:,} rows in {args.files} files")
    print(f"{'library':<30}{'best s':>10}")
    for name, secs in results.items():
        print(f"{name:<30}{secs:>10.3f}")
    for mode in ("copy-on-write", "merge-on-read"):
        ours = results[f"datashard ({mode})"]
        for peer in ("pyiceberg", "deltalake"):
            print(f"datashard ({mode}) / {peer}: {ours / results[peer]:.2f}x")


if __name__ == "__main__":
    main()
