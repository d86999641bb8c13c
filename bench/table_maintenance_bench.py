"""The workflow-log case: many tiny appends, then reads, before and after compaction.

After ``--appends`` (default 10,000, the issue's figure) appends of ``--rows`` (10) rows each,
time a full read into Arrow and a filtered scan (a narrow ``ts`` range, about 1% of the rows),
then compact and time both again. The same data goes through deltalake (delta-rs: one
``write_deltalake(mode="append")`` per batch, then ``optimize.compact()``) in the same run, on
the same local disk. Prints one table of timings and the ratios datashard / deltalake.

    .venv/bin/python bench/table_maintenance_bench.py --appends 10000
    .venv/bin/python bench/table_maintenance_bench.py --appends 1000 --repeat 5

Needs ``deltalake`` (bench/requirements.txt). A benchmark, not a test: nothing is asserted
except that both libraries return the same rows.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from datashard import Schema, create_table
from datashard.iceberg.expressions import col

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "ts", "type": "long", "required": True},
        {"id": 2, "name": "task", "type": "string", "required": True},
        {"id": 3, "name": "level", "type": "string", "required": True},
        {"id": 4, "name": "message", "type": "string", "required": False},
    ],
)
LEVELS = ["debug", "info", "info", "info", "warning", "error"]


def batch(i: int, rows: int) -> pa.Table:
    base = i * rows
    return pa.table(
        {
            "ts": pa.array(range(base, base + rows), pa.int64()),
            "task": [f"task-{i % 97}"] * rows,
            "level": [LEVELS[(base + r) % len(LEVELS)] for r in range(rows)],
            "message": [f"step {r} of batch {i} finished" for r in range(rows)],
        }
    )


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    out = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def run(appends: int, rows: int, repeat: int, root: Path) -> list[tuple[str, float, float]]:
    from deltalake import DeltaTable, write_deltalake

    total = appends * rows
    lo, hi = total // 2, total // 2 + max(1, total // 100)
    batches = [batch(i, rows) for i in range(appends)]

    # -- datashard ------------------------------------------------------------------------
    table = create_table("logs", SCHEMA, warehouse=f"file://{root}/ds")
    start = time.perf_counter()
    for b in batches:
        table.append(b)
    ds_append = time.perf_counter() - start
    flt = (col("ts") >= lo) & (col("ts") < hi)
    ds_read_before, a = best(lambda: table.to_arrow(), repeat)
    ds_scan_before, f = best(lambda: table.scan(filter=flt).to_arrow(), repeat)
    files_before = len(list(table.scan().plan_files()))
    assert a.num_rows == total and f.num_rows == hi - lo
    start = time.perf_counter()
    result = table.compact()
    ds_compact = time.perf_counter() - start
    ds_read_after, a = best(lambda: table.to_arrow(), repeat)
    ds_scan_after, f = best(lambda: table.scan(filter=flt).to_arrow(), repeat)
    assert a.num_rows == total and f.num_rows == hi - lo
    files_after = len(list(table.scan().plan_files()))
    ds_bytes_before = _bytes(root / "ds")
    start = time.perf_counter()
    table.expire_snapshots(older_than=timedelta(0))
    # no writer runs beside this cleanup: bound commits to 1 ms so a 1 ms grace is allowed
    table.set_properties({"commit.max-duration-ms": 1})
    table.remove_orphan_files(older_than=timedelta(milliseconds=1))
    ds_cleanup = time.perf_counter() - start
    ds_bytes_after = _bytes(root / "ds")

    # -- deltalake --------------------------------------------------------------------------
    path = str(root / "delta")
    start = time.perf_counter()
    for b in batches:
        write_deltalake(path, b, mode="append")
    dl_append = time.perf_counter() - start
    filters = [("ts", ">=", lo), ("ts", "<", hi)]
    dl_read_before, a = best(lambda: DeltaTable(path).to_pyarrow_table(), repeat)
    dl_scan_before, f = best(lambda: DeltaTable(path).to_pyarrow_table(filters=filters), repeat)
    assert a.num_rows == total and f.num_rows == hi - lo
    start = time.perf_counter()
    DeltaTable(path).optimize.compact()
    dl_compact = time.perf_counter() - start
    dl_read_after, a = best(lambda: DeltaTable(path).to_pyarrow_table(), repeat)
    dl_scan_after, f = best(lambda: DeltaTable(path).to_pyarrow_table(filters=filters), repeat)
    assert a.num_rows == total and f.num_rows == hi - lo
    dl_bytes_before = _bytes(root / "delta")
    start = time.perf_counter()
    DeltaTable(path).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    dl_cleanup = time.perf_counter() - start
    dl_bytes_after = _bytes(root / "delta")
    ours = table.scan(filter=flt).to_arrow().sort_by("ts")
    theirs = f.select(ours.column_names).sort_by("ts")
    assert pc.all(pc.equal(ours.column("ts"), theirs.column("ts"))).as_py()

    print(
        f"\n{appends} appends x {rows} rows = {total} rows; datashard: {files_before} -> "
        f"{files_after} data files ({result.rewritten_files} rewritten)"
    )
    print(
        f"storage after compaction: datashard {ds_bytes_before / 1e6:.1f} MB -> "
        f"{ds_bytes_after / 1e6:.1f} MB after expire_snapshots + remove_orphan_files; "
        f"deltalake {dl_bytes_before / 1e6:.1f} MB -> {dl_bytes_after / 1e6:.1f} MB after "
        "vacuum"
    )
    return [
        (f"{appends} appends (total)", ds_append, dl_append),
        ("read all, before compaction", ds_read_before, dl_read_before),
        ("filtered scan (1%), before", ds_scan_before, dl_scan_before),
        ("compaction", ds_compact, dl_compact),
        ("read all, after compaction", ds_read_after, dl_read_after),
        ("filtered scan (1%), after", ds_scan_after, dl_scan_after),
        ("expire + orphans / vacuum", ds_cleanup, dl_cleanup),
    ]


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="reads: best of N")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: tmp)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ds-maint-", dir=args.dir))
    try:
        results = run(args.appends, args.rows, args.repeat, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'':34} {'datashard':>12} {'deltalake':>12} {'ratio':>8}")
    for name, ds, dl in results:
        print(f"{name:34} {ds * 1000:10.1f}ms {dl * 1000:10.1f}ms {ds / dl:8.2f}")
    print("ratio = datashard / deltalake (below 1: datashard faster)")


if __name__ == "__main__":
    main()
