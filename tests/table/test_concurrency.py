"""Many processes append to one table at once: no row lost or doubled, one linear history.

8 processes x 25 appends x 10 rows, on a local directory and on Ceph RGW (real S3); once with
the deletion of old stubs running among the writers (its horizon scaled down to seconds).
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from datashard import create_table, load_table
from datashard.table.versions import STUB_MAX_BYTES, version_of
from datashard.testing.writers import append_schema, append_worker

SCHEMA = append_schema()
PROCESSES, COMMITS, ROWS = 8, 25, 10
PROPS = {
    "history.expire.max-snapshots": "1000",  # keep every snapshot: the test checks the chain
    "commit.retry.num-retries": "200",
    # retire versions out of a 4-entry metadata log while the writers race (stale writers
    # must lose against the stubs, never re-create a retired version)
    "write.metadata.previous-versions-max": "4",
}


def _run(wh: Any, **worker: Any) -> list[int]:
    """Run the writers (``worker``: keyword arguments of ``append_worker``, a callable of the
    writer's number for one that differs by writer), check every row and the history; the
    versions left, ascending."""
    create_table("t", SCHEMA, warehouse=wh.uri, properties=PROPS, **wh.options)
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as gate,
        ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool,
    ):
        futures = [
            pool.submit(
                append_worker,
                wh.uri,
                wh.options,
                "t",
                w,
                COMMITS,
                ROWS,
                (gate, PROCESSES),
                **{k: v(w) if callable(v) else v for k, v in worker.items()},
            )
            for w in range(PROCESSES)
        ]
        acked = {w: f.result(timeout=600) for w, f in enumerate(futures)}

    table = load_table("t", warehouse=wh.uri, **wh.options)
    rows = table.to_arrow().to_pylist()
    assert len(rows) == PROCESSES * COMMITS * ROWS
    keys = Counter((r["writer"], r["commit"], r["row"]) for r in rows)
    assert max(keys.values()) == 1, "a row appears twice"
    snapshots = table.snapshots()
    by_id = {s.snapshot_id for s in snapshots}
    for w, commits in acked.items():
        assert [c for c, _, _ in commits] == list(range(COMMITS))
        for c, snapshot_id, _ in commits:
            assert snapshot_id in by_id, f"acknowledged commit {w}/{c} is missing"
            assert all(keys[(w, c, r)] == 1 for r in range(ROWS))
    # one linear chain: sequence numbers 1..200, each snapshot's parent is the one before
    assert [s.sequence_number for s in snapshots] == list(range(1, PROCESSES * COMMITS + 1))
    assert [s.parent_snapshot_id for s in snapshots] == [None] + [
        s.snapshot_id for s in snapshots[:-1]
    ]
    assert table.current_snapshot().snapshot_id == snapshots[-1].snapshot_id
    assert table.count() == PROCESSES * COMMITS * ROWS
    # every version out of the metadata log was retired by the writer whose commit pushed it
    # out (the writers flushed their background work); the newest 5 are whole
    newest = PROCESSES * COMMITS + 1
    sizes = {version_of(m.key): m.size for m in table.backend.list("t/metadata/")}
    sizes.pop(None, None)
    left = sorted(sizes)
    # v1, then one unbroken run up to the newest: what was deleted went oldest first, and
    # nothing was re-created below it
    assert left[0] == 1 and left[1:] == list(range(left[1], newest + 1)), left[:5]
    assert all(sizes[n] <= STUB_MAX_BYTES for n in left if n < newest - 4)
    assert all(sizes[n] > STUB_MAX_BYTES for n in range(newest - 4, newest + 1))
    return left


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)
def test_eight_processes_never_lose_or_double_a_row(warehouse: Any) -> None:
    left = _run(warehouse)
    assert left == list(range(1, PROCESSES * COMMITS + 2))  # no stub is a day old yet


#: The stub horizon of the writers below: stubs go 3 s after they were written (production: a
#: day), so the sweeps at versions 128 and 192 delete while the writers race.
HORIZON_S = 3.0


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)
def test_eight_processes_with_old_stubs_deleted_among_them(warehouse: Any) -> None:
    """Writers pace their appends (0.2 s apart, so the run outlasts the horizon); writer 0
    holds its v1 base until v2 was deleted, then appends among the others: creating v2 again
    would fork the history. Every row lands once, on one linear history."""
    left = _run(
        warehouse,
        horizon_s=HORIZON_S,
        pause_s=0.2,
        first_when_gone=lambda w: "t/metadata/v2.metadata.json" if w == 0 else None,
    )
    assert left[1] > 2


def _append_in_child(uri: str) -> None:
    load_table("t", warehouse=uri).append_records([{"writer": 99, "commit": 0, "row": 0}])


def test_a_forked_child_commits_after_its_parent_did(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records([{"writer": 0, "commit": 0, "row": 0}])  # starts the commit threads
    child = multiprocessing.get_context("fork").Process(
        target=_append_in_child, args=(local_wh.uri,)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert load_table("t", warehouse=local_wh.uri).count() == 2
