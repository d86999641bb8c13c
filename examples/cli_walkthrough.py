"""The ``datashard`` command, driven from Python: load files into a table, look at it, upkeep.

Each step runs the command a user would type (``python -m datashard.cli`` is the installed
``datashard`` command) and reads its ``--json`` output, the way a script or a workflow step uses
it. Tables go to the warehouse the environment configures (``DATASHARD_*``), or to
``./datashard-warehouse`` when nothing is set. Run it again: it drops and re-creates its table.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TABLE = "cli-clicks"


def datashard(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``datashard ARGS`` and echo it; its notes (stderr) are shown as they are."""
    print("$", shlex.join(["datashard", *args]))
    done = subprocess.run(
        [sys.executable, "-m", "datashard.cli", *args], capture_output=True, text=True, timeout=120
    )
    if done.stderr:
        print(done.stderr.rstrip(), file=sys.stderr)
    if check and done.returncode != 0:
        raise SystemExit(f"datashard {args[0]} failed with exit code {done.returncode}")
    return done


def datashard_json(*args: str) -> Any:
    """``datashard --json ARGS``, parsed."""
    return json.loads(datashard("--json", *args).stdout)


work = Path(tempfile.mkdtemp(prefix="datashard-cli-"))
day1 = work / "day1.csv"
with day1.open("w", newline="") as f:
    rows = [(i, ("click", "view", "buy")[i % 3], round(i * 1.25, 2)) for i in range(1, 31)]
    csv.writer(f).writerows([("id", "kind", "amount"), *rows])
day2 = work / "day2.parquet"
pq.write_table(
    pa.table({"id": [31, 32, 33], "kind": ["buy", "click", "view"], "amount": [99.0, 0.5, 3.0]}),
    day2,
)

# 1. a table with the schema of the CSV file, and its rows (dropped first when run again)
if TABLE in datashard_json("list"):
    datashard("drop", TABLE, "--yes")
datashard("create", TABLE, "--from", str(day1), "--append")

# 2. more files in one commit: a Parquet file, and the CSV again
datashard("append", TABLE, str(day2), str(day1))

# 3. look at it
info = datashard_json("describe", TABLE)
print(f"{info['name']}: {info['location']}")
history = datashard_json("history", TABLE)
print(f"{len(history)} snapshots, {history[-1]['total_records']} rows")
big = datashard_json("head", TABLE, "-n", "5", "--where", "kind == 'buy' and amount > 20")
print("big buys:", [row["id"] for row in big])
print(
    datashard("count", TABLE, "--where", "kind in ('click', 'view')").stdout.strip(), "clicks+views"
)

# 4. upkeep: what compaction would do, then do it
plan = datashard_json("compact", TABLE, "--dry-run")
print(f"compact would rewrite {plan['rewritten_files']} files")
print(datashard("compact", TABLE).stdout.strip())
files = datashard_json("files", TABLE)
print(f"after compact: {len(files)} data file(s)")

# 5. the objects underneath
listing = datashard("ls", info["location"] + "/data").stdout
print(listing.rstrip())
usage = datashard_json("du", info["location"])
print(f"the table takes {usage['bytes']} bytes in {usage['objects']} objects")

shutil.rmtree(work)
