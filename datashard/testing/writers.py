"""Worker functions for multi-process table tests and benchmarks (importable by spawned
processes, so they live in the package rather than in a test module)."""

from __future__ import annotations

import time
from typing import Any


def append_schema() -> Any:
    """The schema of the rows :func:`append_worker` appends: ``writer``, ``commit`` and ``row``
    (required ints)."""
    from datashard.iceberg.schema import Schema

    return Schema(
        schema_id=0,
        fields=[
            {"id": 1, "name": "writer", "type": "int", "required": True},
            {"id": 2, "name": "commit", "type": "int", "required": True},
            {"id": 3, "name": "row", "type": "int", "required": True},
        ],
    )


def append_worker(
    warehouse: str,
    options: dict[str, Any],
    name: str,
    writer: int,
    commits: int,
    rows: int,
    gate: tuple[str, int] | None = None,
) -> list[tuple[int, int, float]]:
    """Load table ``name`` and append ``commits`` batches of ``rows`` rows, each row tagged
    ``(writer, commit, row)``. Returns the acknowledged commits as
    ``(commit, snapshot_id, seconds)``. With ``gate`` (a directory, a count) the writer starts
    appending once that many writers have loaded the table (they start together)."""
    from datashard.table.catalog import load_table

    table = load_table(name, warehouse=warehouse, **options)
    if gate is not None:
        _wait_at(*gate, writer)
    acked = []
    for c in range(commits):
        records = [{"writer": writer, "commit": c, "row": r} for r in range(rows)]
        start = time.perf_counter()
        snap = table.append_records(records)
        acked.append((c, snap.snapshot_id, time.perf_counter() - start))
    table.flush()  # a writer that finishes cleanly lets its background work end
    return acked


def _wait_at(directory: str, count: int, writer: int, limit_s: float = 120.0) -> None:
    """Mark ``writer`` ready in ``directory`` and wait until ``count`` writers are (at most
    ``limit_s`` seconds: ``TimeoutError``)."""
    import os

    open(os.path.join(directory, f"ready-{writer}"), "w").close()
    deadline = time.monotonic() + limit_s
    while len(os.listdir(directory)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} writers were not ready in {limit_s:.0f} s")
        time.sleep(0.005)


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
    ``name``, recording each acknowledged batch as a line ``"<writer> <batch> <folded>"`` in
    the file ``acks`` (flushed and fsynced before the next append, so a SIGKILL loses no record
    of an acknowledged append; ``<folded>`` is 1 when the snapshot that carries it folded
    appends in, with group commit). A failed append (its outcome provably or possibly not
    landed) is not recorded and the writer goes on."""
    import os

    from datashard.errors import DataShardError
    from datashard.table.catalog import load_table

    table = load_table(name, warehouse=warehouse, **options)
    with open(acks, "a", encoding="ascii") as out:
        for b in range(batches):
            records = [{"writer": writer, "batch": b, "row": r} for r in range(rows)]
            try:
                snap = table.append_records(records)
            except DataShardError:
                try:
                    table.refresh()
                except DataShardError:
                    pass
                continue
            folded = int("datashard.folded-commits" in snap.summary)
            out.write(f"{writer} {b} {folded}\n")
            out.flush()
            os.fsync(out.fileno())


__all__ = ["append_schema", "append_worker", "chaos_writer"]
