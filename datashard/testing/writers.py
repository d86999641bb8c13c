"""Worker functions for multi-process table tests and benchmarks (importable by spawned
processes, so they live in the package rather than in a test module)."""

from __future__ import annotations

import time
from typing import Any


def append_worker(
    warehouse: str,
    options: dict[str, Any],
    name: str,
    writer: int,
    commits: int,
    rows: int,
) -> list[tuple[int, int, float]]:
    """Load table ``name`` and append ``commits`` batches of ``rows`` rows, each row tagged
    ``(writer, commit, row)``. Returns the acknowledged commits as
    ``(commit, snapshot_id, seconds)``."""
    from datashard.table.catalog import load_table

    table = load_table(name, warehouse=warehouse, **options)
    acked = []
    for c in range(commits):
        records = [{"writer": writer, "commit": c, "row": r} for r in range(rows)]
        start = time.perf_counter()
        snap = table.append_records(records)
        acked.append((c, snap.snapshot_id, time.perf_counter() - start))
    return acked


__all__ = ["append_worker"]
