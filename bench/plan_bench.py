"""Planning a selective scan of a table with thousands of data files, in a cold process.

Builds a table of ``--files`` data files (one per append, ``ts`` increasing, so a narrow ``ts``
range matches one file by its statistics), then, each in a fresh Python process (nothing
cached), times:

- datashard: ``load_table`` + ``scan(filter=...).plan_files()``;
- PyIceberg: ``StaticTable.from_metadata`` + ``scan(row_filter=...).plan_files()``;
- DuckDB's Iceberg extension: the whole query, ``SELECT count(*) FROM iceberg_scan(...) WHERE``
  (planning and reading the one file).

Each child reports its import time and its work time separately; the work times are compared.
The median of ``--repeat`` children per system.

    .venv/bin/python bench/plan_bench.py --files 3000

A benchmark, not a test: the only assertion is that every system finds the same one file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import pyarrow as pa

from datashard import Schema, create_table

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "ts", "type": "long", "required": True},
        {"id": 2, "name": "task", "type": "string", "required": True},
    ],
)
ROWS = 10

CHILD = {
    "datashard": """
        t0 = time.perf_counter()
        from datashard import col, load_table
        t1 = time.perf_counter()
        table = load_table("t", warehouse=WAREHOUSE)
        tasks = list(table.scan(filter=(col("ts") >= LO) & (col("ts") < HI)).plan_files())
        t2 = time.perf_counter()
        found = len(tasks)
    """,
    "pyiceberg": """
        t0 = time.perf_counter()
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
        from pyiceberg.table import StaticTable
        t1 = time.perf_counter()
        table = StaticTable.from_metadata(METADATA)
        flt = And(GreaterThanOrEqual("ts", LO), LessThan("ts", HI))
        found = len(list(table.scan(row_filter=flt).plan_files()))
        t2 = time.perf_counter()
    """,
    "duckdb (whole query)": """
        t0 = time.perf_counter()
        import glob, os
        import duckdb, duckdb_extension_avro, duckdb_extension_iceberg
        def ext(module, name):
            pattern = os.path.join(os.path.dirname(module.__file__), "extensions", "*",
                                   name + ".duckdb_extension")
            return glob.glob(pattern)[0]
        con = duckdb.connect()
        con.execute(f"LOAD '{ext(duckdb_extension_avro, 'avro')}'")
        con.execute(f"LOAD '{ext(duckdb_extension_iceberg, 'iceberg')}'")
        t1 = time.perf_counter()
        n = con.execute(
            f"SELECT count(*) FROM iceberg_scan('{METADATA}') WHERE ts >= {LO} AND ts < {HI}"
        ).fetchone()[0]
        t2 = time.perf_counter()
        found = 1 if n == HI - LO else -1
    """,
}


def child(system: str, warehouse: str, metadata: str, lo: int, hi: int) -> dict[str, float]:
    """Run ``system``'s plan in a fresh interpreter; its timings."""
    code = (
        "import json, time\n"
        f"WAREHOUSE, METADATA, LO, HI = {warehouse!r}, {metadata!r}, {lo}, {hi}\n"
        + textwrap.dedent(CHILD[system])
        + 'print(json.dumps({"import": t1 - t0, "work": t2 - t1, "found": found}))\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = f"file://{tmp}/wh"
        table = create_table("t", SCHEMA, warehouse=warehouse)
        start = time.perf_counter()
        for i in range(a.files):
            base = i * ROWS
            table.append(
                pa.table(
                    {"ts": pa.array(range(base, base + ROWS), pa.int64()), "task": ["x"] * ROWS}
                )
            )
        table.flush()
        print(f"built {a.files} files in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        metadata = table.metadata_location.removeprefix("file://")
        lo = (a.files // 2) * ROWS
        hi = lo + ROWS
        results: dict[str, list[dict[str, float]]] = {}
        for system in CHILD:
            runs = [child(system, warehouse, metadata, lo, hi) for _ in range(a.repeat)]
            assert all(r["found"] == 1 for r in runs), (system, runs)
            results[system] = runs
    work = {s: statistics.median(r["work"] for r in runs) for s, runs in results.items()}
    print(f"\n## plan a selective scan of {a.files} files in a cold process (local disk)\n")
    print("| system | import s | work s | work / datashard's |")
    print("|---|---|---|---|")
    for system, runs in results.items():
        imp = statistics.median(r["import"] for r in runs)
        ratio = work[system] / work["datashard"]
        print(f"| {system} | {imp:.3f} | {work[system]:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
