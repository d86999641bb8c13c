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
    *,
    horizon_s: float | None = None,
    first_when_gone: str | None = None,
    pause_s: float = 0.0,
    key_prefix: str | None = None,
) -> list[tuple[int, int, float]]:
    """Load table ``name`` and append ``commits`` batches of ``rows`` rows, each row tagged
    ``(writer, commit, row)``. Returns the acknowledged commits as
    ``(commit, snapshot_id, seconds)``. With ``gate`` (a directory, a count) the writer starts
    appending once that many writers have loaded the table (they start together).

    ``horizon_s`` scales the deletion of old stubs down to that horizon in this process
    (:func:`scale_stub_horizon`); ``first_when_gone`` (a key) holds the loaded table until that
    object is gone before the first append (a writer on a stale base: at most 120 s, then
    ``TimeoutError``); ``pause_s`` waits between appends; ``key_prefix`` gives commit ``c``
    the idempotency key ``f"{key_prefix}-{c}"`` (writers given one prefix are attempts of the
    same tasks)."""
    from datashard.table.catalog import load_table

    if horizon_s is not None:
        scale_stub_horizon(horizon_s)
    table = load_table(name, warehouse=warehouse, **options)
    if gate is not None:
        _wait_at(*gate, writer)
    if first_when_gone is not None:
        deadline = time.monotonic() + 120.0
        while table.backend.exists(first_when_gone):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{first_when_gone} was still there after 120 s")
            time.sleep(0.02)
    acked = []
    for c in range(commits):
        if c:
            time.sleep(pause_s)
        records = [{"writer": writer, "commit": c, "row": r} for r in range(rows)]
        start = time.perf_counter()
        key = None if key_prefix is None else f"{key_prefix}-{c}"
        snap = table.append_records(records, idempotency_key=key)
        acked.append((c, snap.snapshot_id, time.perf_counter() - start))
    table.flush()  # a writer that finishes cleanly lets its background work end
    return acked


def scale_stub_horizon(horizon_s: float) -> None:
    """Delete stubs ``horizon_s`` seconds after they were written instead of a day, in this
    process, with the bounds that keep that safe scaled to fit it: a writer sends on a base
    seen at most a third of the horizon ago and looks at the newest version again when less
    than a twelfth of it is left, and a probe rechecks a version held longer than half the
    horizon (production: a day's horizon, an hour, a minute, half a day). For tests that watch
    stub deletion while writers race; never for a table a user keeps."""
    from datashard.table import versions

    versions.STUB_HORIZON_MS = int(horizon_s * 1000)
    versions.RECHECK_AFTER_MS = int(horizon_s * 500)
    versions.STALE_BASE_S = horizon_s / 3
    versions.SEND_MARGIN_S = horizon_s / 12


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
