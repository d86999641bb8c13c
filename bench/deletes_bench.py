"""Row-level deletes: deleting one row of a large file, and scanning a table with deleted rows.

1. Delete one row of ``--rows`` (default 5,000,000) in one data file, on the local disk:
   datashard copy-on-write (the default: the file is rewritten), datashard merge-on-read
   (``write.delete.mode=merge-on-read``: one position delete file), datashard merge-on-read
   on a format version 3 table (one deletion vector in a Puffin file), deltalake
   (``DeltaTable.delete``) and lance (``LanceDataset.delete``). Each runs in a fresh process
   that first writes the table; reported: the delete's time, the bytes of the files it wrote,
   and the growth of the process's peak memory during the delete.
2. Scan a datashard table of ``--rows`` rows in 10 files with 10% of its rows deleted by
   position deletes (merge-on-read), against the same table after ``compact()``.

Prints one table per part with ratios (peer / datashard merge-on-read; compacted / deleted).

    .venv/bin/python bench/deletes_bench.py
    .venv/bin/python bench/deletes_bench.py --rows 1000000 --repeat 3

Needs deltalake and pylance (bench/requirements.txt). A benchmark, not a test: it asserts only
that every system deleted exactly one row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYSTEMS = ["datashard-cow", "datashard-mor", "datashard-v3-dv", "deltalake", "lance"]
VICTIM = 123_456


def _files(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _reset_peak() -> None:
    """Reset this process's peak-RSS mark (Linux ``clear_refs``), so VmHWM shows the delete."""
    Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")


def _peak_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _data(rows: int) -> Any:
    import numpy as np
    import pyarrow as pa

    ids = np.arange(rows, dtype=np.int64)
    return pa.table({"id": ids, "value": ids * 0.5, "tag": pa.array(ids % 1000).cast(pa.string())})


def one_delete(system: str, rows: int, root: Path) -> dict[str, float]:
    """In this process: write the table, then delete one row; what the delete cost."""
    import pyarrow as pa

    table = _data(rows)
    if system.startswith("datashard"):
        from datashard import Schema, col, create_table

        schema = Schema.from_arrow(table.schema)
        mode = "copy-on-write" if system == "datashard-cow" else "merge-on-read"
        props = {"write.delete.mode": mode}
        if system == "datashard-v3-dv":
            props["format-version"] = "3"  # merge-on-read writes a deletion vector
        t = create_table("d", schema, warehouse=f"file://{root}", properties=props)
        t.append(table)
        t.flush()

        def delete() -> None:
            t.delete(col("id") == VICTIM)
            t.flush()

        def count() -> int:
            return t.count()

    elif system == "deltalake":
        from deltalake import DeltaTable, write_deltalake

        write_deltalake(str(root / "d"), table)
        dt = DeltaTable(str(root / "d"))

        def delete() -> None:
            dt.delete(f"id = {VICTIM}")

        def count() -> int:
            return int(DeltaTable(str(root / "d")).to_pyarrow_table(columns=["id"]).num_rows)

    elif system == "lance":
        import lance

        ds = lance.write_dataset(table, str(root / "d"))

        def delete() -> None:
            ds.delete(f"id = {VICTIM}")

        def count() -> int:
            return int(lance.dataset(str(root / "d")).count_rows())

    else:
        raise SystemExit(f"unknown system {system!r}")
    del table
    before = _files(root)
    base_rss = _rss_mb()
    _reset_peak()
    start = time.perf_counter()
    delete()
    took = time.perf_counter() - start
    peak = _peak_mb() - base_rss
    written = sum(size for path, size in _files(root).items() if before.get(path) != size)
    left = count()
    assert left == rows - 1, (system, left)
    del pa
    return {"delete_s": took, "written_mb": written / 1e6, "peak_growth_mb": peak}


def scan_part(rows: int, repeat: int) -> dict[str, float]:
    """A scan of a table with 10% of its rows position-deleted, then of it compacted."""
    import numpy as np

    from datashard import Schema, col, create_table

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ds-del-bench-") as tmp:
        table = _data(rows)
        schema = Schema.from_arrow(table.schema)
        t = create_table(
            "s",
            schema,
            warehouse=f"file://{tmp}",
            properties={"write.delete.mode": "merge-on-read"},
        )
        step = rows // 10
        for k in range(10):
            t.append(table.slice(k * step, step))
        t.delete(col("id").isin([int(i) for i in np.arange(0, rows, 10)]))
        expect = rows - len(range(0, rows, 10))

        def timed(label: str) -> None:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                got = t.to_arrow()
                times.append(time.perf_counter() - start)
                assert got.num_rows == expect, (label, got.num_rows)
            out[label] = statistics.median(times)

        timed("scan_10pct_deleted_s")
        start = time.perf_counter()
        t.compact()
        out["compact_s"] = time.perf_counter() - start
        timed("scan_compacted_s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per system (median)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, JSON out
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="ds-del-bench-") as tmp:
            print(json.dumps(one_delete(args.one, args.rows, Path(tmp))))
        return 0
    results: dict[str, list[dict[str, float]]] = {s: [] for s in args.systems.split(",")}
    for _ in range(args.repeat):  # interleaved rounds
        for system in results:
            done = subprocess.run(
                [sys.executable, __file__, "--one", system, "--rows", str(args.rows)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"{system} failed: {done.stderr[-2000:]}", file=sys.stderr)
                continue
            results[system].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"\n== delete one row of {args.rows:,} in one file (local disk, medians of "
        f"{args.repeat}) =="
    )
    ref = results.get("datashard-mor") or []
    print(f"{'system':16} {'delete s':>9} {'written MB':>11} {'peak +MB':>9} {'s / ds-mor':>11}")
    for system, runs in results.items():
        if not runs:
            continue
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        ratio = (
            med["delete_s"] / statistics.median(r["delete_s"] for r in ref) if ref else float("nan")
        )
        print(
            f"{system:16} {med['delete_s']:9.3f} {med['written_mb']:11.3f} "
            f"{med['peak_growth_mb']:9.1f} {ratio:11.2f}"
        )
    scan = scan_part(args.rows, args.repeat)
    print(f"\n== scan of {args.rows:,} rows in 10 files, 10% deleted (merge-on-read) ==")
    for key, value in scan.items():
        print(f"{key:24} {value:8.3f} s")
    print(
        f"{'compacted / deleted':24} {scan['scan_compacted_s'] / scan['scan_10pct_deleted_s']:8.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
