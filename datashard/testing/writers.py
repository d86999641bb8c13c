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
    table.flush()  # a writer that finishes cleanly lets its background work end
    return acked


def chaos_writer(
    warehouse: str,
    options: dict[str, Any],
    name: str,
    writer: int,
    batches: int,
    rows: int,
    acks: str,
) -> None:
    """Append ``batches`` batches of ``rows`` rows tagged ``(writer, batch, row)`` to table
    ``name``, recording each acknowledged batch as a line ``"<writer> <batch>"`` in the file
    ``acks`` (flushed and fsynced before the next append, so a SIGKILL loses no record of an
    acknowledged append). A failed append (its outcome provably or possibly not landed) is
    not recorded and the writer goes on."""
    import os

    from datashard.errors import DataShardError
    from datashard.table.catalog import load_table

    table = load_table(name, warehouse=warehouse, **options)
    with open(acks, "a", encoding="ascii") as out:
        for b in range(batches):
            records = [{"writer": writer, "batch": b, "row": r} for r in range(rows)]
            try:
                table.append_records(records)
            except DataShardError:
                try:
                    table.refresh()
                except DataShardError:
                    pass
                continue
            out.write(f"{writer} {b}\n")
            out.flush()
            os.fsync(out.fileno())


__all__ = ["append_worker", "chaos_writer"]
