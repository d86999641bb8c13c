"""Lazy polars over a table: ``to_polars(lazy=True)`` against polars' own Iceberg and Parquet scans.

One run, one table on the local disk (``--rows`` rows of an ``id`` and 19 double columns, in
``--files`` appends, sorted by ``id``), the same two queries for every reader, side by side:

- (a) projection: the sum of 2 of the 20 columns;
- (b) selective filter: 2 columns of the rows whose ``id`` is in a range of 0.1% of the table.

Readers: datashard ``to_polars(lazy=True)`` (projection and filter pushed into datashard's scan);
datashard ``to_polars()`` (eager: the whole table, then polars); ``polars.scan_iceberg`` on the
same metadata file; ``polars.scan_parquet`` on the data files (no Iceberg semantics: the floor).
Time: best of ``--repeat`` warm runs; bytes: the process's ``rchar`` (``/proc/self/io``).
Ratios are reader / datashard lazy, so above 1 means slower or more bytes than datashard lazy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from datashard import Schema, create_table


def _rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def _measure(run: Callable[[], Any], repeat: int) -> tuple[float, int, Any]:
    """Best time of ``repeat`` runs, bytes read by the last, its result."""
    best, read, result = float("inf"), 0, None
    for _ in range(repeat):
        before, start = _rchar(), time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
        read = _rchar() - before
    return best, read, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("POLARS_ICEBERG_PLANNER", "pyiceberg")  # what is installed here
    columns = 20
    fields: list[dict[str, Any]] = [{"id": 1, "name": "id", "type": "long", "required": True}]
    fields += [
        {"id": i + 2, "name": f"c{i}", "type": "double", "required": True}
        for i in range(columns - 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        table = create_table("wide", Schema(schema_id=0, fields=fields), warehouse=f"file://{tmp}")
        rng = np.random.default_rng(0)
        per_file = args.rows // args.files
        for f in range(args.files):
            data: dict[str, Any] = {
                "id": np.arange(f * per_file, (f + 1) * per_file, dtype=np.int64)
            }
            for i in range(columns - 1):
                data[f"c{i}"] = rng.random(per_file)
            table.append(pa.table(data))
        rows = per_file * args.files
        low, high = rows // 2, rows // 2 + rows // 1000
        metadata = table.metadata_location
        data_glob = f"{tmp}/wide/data/*.parquet"

        def readers(query: Callable[[pl.LazyFrame], pl.LazyFrame]) -> dict[str, Callable[[], Any]]:
            return {
                "datashard lazy": lambda: query(table.to_polars(lazy=True)).collect(),
                "datashard eager": lambda: query(table.to_polars().lazy()).collect(),
                "polars.scan_iceberg": lambda: query(pl.scan_iceberg(metadata)).collect(),
                "polars.scan_parquet": lambda: query(pl.scan_parquet(data_glob)).collect(),
            }

        queries: dict[str, Callable[[pl.LazyFrame], pl.LazyFrame]] = {
            "(a) projection, 2 of 20 columns": lambda lf: lf.select(
                pl.col("c0").sum(), pl.col("c1").sum()
            ),
            "(b) filter, 0.1% of rows": lambda lf: lf.filter(
                pl.col("id").is_between(low, high, closed="left")
            ).select("c0", "c1"),
        }
        print(f"{rows:,} rows, {columns} columns, {args.files} files; best of {args.repeat}")
        for name, query in queries.items():
            print(f"\n{name}")
            results = {}
            for reader, run in readers(query).items():
                try:
                    results[reader] = _measure(run, args.repeat)
                except Exception as exc:  # noqa: BLE001 - a peer that cannot read is reported
                    print(f"  {reader:22s} failed: {type(exc).__name__}: {exc}"[:200])
            base_time, base_bytes, base = results["datashard lazy"]
            for reader, (seconds, read, result) in results.items():
                same = result.shape == base.shape
                print(
                    f"  {reader:22s} {seconds * 1000:8.1f} ms  x{seconds / base_time:5.2f} time"
                    f"  {read / 1e6:8.1f} MB  x{read / max(base_bytes, 1):6.2f} bytes"
                    f"  {'same rows' if same else 'DIFFERENT rows'}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
