"""Group commit with real processes: every row once, folded snapshots that other engines read.

8 processes x 10 appends append to one table with ``commit.group.enabled=true``, on a local
directory and on Ceph RGW. Appends that lose a race are folded into other writers' snapshots
(the summaries name them); DuckDB and PyIceberg read the same rows as datashard, and no pending
record is left once the writers finished.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.table import StaticTable

from datashard import create_table, load_table
from datashard.table.group import FOLDED, PENDING, folded_commits
from datashard.table.updates import idempotency_keys
from datashard.testing.writers import append_schema, append_worker

from .oracles import duckdb_count

SCHEMA = append_schema()
PROCESSES, COMMITS, ROWS = 8, 10, 5


def _append_together(
    wh: Any, name: str, processes: int, commits: int, gate: Path, keyed: bool = False
) -> dict[int, list[tuple[int, int, float]]]:
    """Create table ``name`` with group commit on, and append from ``processes`` processes
    that start together (``commits`` appends of ``ROWS`` rows each; with ``keyed``, writers
    ``2k`` and ``2k+1`` give their appends the same idempotency keys): what each acknowledged."""
    create_table(
        name,
        SCHEMA,
        warehouse=wh.uri,
        properties={"commit.group.enabled": "true", "history.expire.max-snapshots": "1000"},
        **wh.options,
    )
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        futures = [
            pool.submit(
                append_worker,
                *(wh.uri, wh.options, name, w, commits, ROWS),
                gate=(str(gate), processes),
                key_prefix=f"task-{w // 2}" if keyed else None,
            )
            for w in range(processes)
        ]
        return {w: f.result(timeout=600) for w, f in enumerate(futures)}


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)
def test_group_commit_folds_appends_and_keeps_every_row_once(
    warehouse: Any, tmp_path: Path
) -> None:
    wh = warehouse
    acked = _append_together(wh, "t", PROCESSES, COMMITS, tmp_path)

    table = load_table("t", warehouse=wh.uri, **wh.options)
    rows = table.to_arrow().to_pylist()
    keys = Counter((r["writer"], r["commit"], r["row"]) for r in rows)
    assert len(rows) == PROCESSES * COMMITS * ROWS
    assert max(keys.values()) == 1, "a row appears twice"
    snapshots = {s.snapshot_id: s for s in table.snapshots()}
    for w, commits in acked.items():
        assert [c for c, _, _ in commits] == list(range(COMMITS))
        for c, snapshot_id, _ in commits:
            # the snapshot an append returned holds its rows (its own, or one that folded it)
            assert snapshot_id in snapshots, f"acknowledged append {w}/{c} names no snapshot"
            assert all(keys[(w, c, r)] == 1 for r in range(ROWS))
    named = [c for s in snapshots.values() for c in folded_commits(s)]
    assert len(named) == len(set(named)) == PROCESSES * COMMITS, "an append named twice"
    folding = [s for s in snapshots.values() if FOLDED in s.summary]
    assert folding, "no append was folded in: the writers never met contention"
    assert len(snapshots) < PROCESSES * COMMITS
    current = table.current_snapshot()
    assert current is not None and int(current.summary["total-records"]) == len(rows)
    assert table.count() == len(rows)
    # every writer flushed its background work: no record is left behind
    assert not list(table.backend.list(f"t/metadata/{PENDING}/"))
    # the folded manifests' entries inherit their snapshot ids: other engines read them
    assert duckdb_count(table, wh) == len(rows)
    static = StaticTable.from_metadata(table.metadata_location, properties=wh.pyiceberg_props)
    assert static.scan().to_arrow().num_rows == len(rows)
    entries = static.inspect.entries()
    assert set(entries.column("snapshot_id").to_pylist()) <= set(snapshots)


@pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)
def test_group_commit_lands_each_idempotency_key_once(warehouse: Any, tmp_path: Path) -> None:
    """8 processes in pairs make the same keyed appends (a task and its retry, racing): each
    key's rows land once, from one of the pair, in a snapshot that carries the key, and both
    of the pair are told that snapshot. (Whether the races of a run fold keyed appends is up
    to timing; test_group_interleavings folds them on purpose.)"""
    wh = warehouse
    processes, commits = 8, 6
    acked = _append_together(wh, "k", processes, commits, tmp_path, keyed=True)

    table = load_table("k", warehouse=wh.uri, **wh.options)
    rows = table.to_arrow().to_pylist()
    landed = Counter((r["writer"] // 2, r["commit"]) for r in rows)
    assert landed == {(t, c): ROWS for t in range(processes // 2) for c in range(commits)}
    carriers: dict[str, list[int]] = {}
    for snap in table.snapshots():
        for key in idempotency_keys(snap):
            carriers.setdefault(key, []).append(snap.snapshot_id)
    assert all(len(ids) == 1 for ids in carriers.values()), carriers
    assert len(carriers) == processes // 2 * commits
    for w, done in acked.items():
        assert [c for c, _, _ in done] == list(range(commits))
        for c, snapshot_id, _ in done:
            assert carriers[f"task-{w // 2}-{c}"] == [snapshot_id]
    assert not list(table.backend.list(f"k/metadata/{PENDING}/"))
    assert table.count() == len(rows)


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({"commit.group.enabled": "yes"}, "commit.group.enabled='yes'"),
        ({"commit.group.max-wait-ms": "-5"}, "commit.group.max-wait-ms"),
        ({"commit.group.clock-skew-ms": "soon"}, "commit.group.clock-skew-ms"),
        (
            {"commit.group.max-wait-ms": "1000", "commit.group.clock-skew-ms": "500"},
            "more than twice",
        ),
    ],
)
def test_bad_group_settings_are_refused_and_change_nothing(
    local_wh: Any, props: dict[str, str], named: str
) -> None:
    from datashard.errors import ConfigError

    with pytest.raises(ConfigError, match=named):
        create_table("bad", SCHEMA, warehouse=local_wh.uri, properties=props)
    assert not list(local_wh.backend.list("bad/"))
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    version = table.version
    with pytest.raises(ConfigError, match=named):
        table.set_properties(props)
    assert load_table("t", warehouse=local_wh.uri).version == version
