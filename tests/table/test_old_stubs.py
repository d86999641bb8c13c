"""Retired versions' stubs are deleted past a horizon, oldest first, and no stale writer ever
creates a deleted version again: a writer whose sight of the newest version is old checks it
before building, and a probe trusts a missing version only when the one before it is young or
still there after the probe.

The horizon is one day; these tests shorten it to one second and make a writer's last look at
the newest version two hours old, the situation the horizon guards against in real time.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from typing import Any

import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import SupersededVersionError, TableNotFoundError
from datashard.table import versions
from datashard.table.table import Table
from datashard.table.versions import STALE_BASE_S, TablePaths, write_hint

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "batch", "type": "long", "required": True},
        {"id": 2, "name": "row", "type": "long", "required": True},
    ],
)
#: two whole previous versions, so versions are retired early; every snapshot kept
PROPS = {"write.metadata.previous-versions-max": "2", "history.expire.max-snapshots": "500"}


def _rows(batch: int) -> list[dict[str, int]]:
    return [{"batch": batch, "row": r} for r in range(2)]


@pytest.fixture
def short_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "STUB_HORIZON_MS", 1000)
    monkeypatch.setattr(versions, "RECHECK_AFTER_MS", 500)
    versions._FLOORS.clear()  # as a fresh process: the sweep bisects for the lowest version


def _present(table: Any, n: int) -> bool:
    return bool(table.backend.exists(TablePaths("t").version(n)))


def _two_hours_ago() -> tuple[float, float]:
    steady, wall = versions.sight()
    return steady - 2 * STALE_BASE_S, wall - 2 * STALE_BASE_S


def _aged(table: Any) -> None:
    """Make ``table``'s last look at the newest version two hours old."""
    table._loaded = dataclasses.replace(table._loaded, observed=_two_hours_ago())


@pytest.mark.parametrize("warehouse", ["local", "moto", "ceph"], indirect=True)
def test_old_stubs_go_and_stale_writers_and_readers_still_find_the_newest(
    warehouse: Any, short_horizon: None
) -> None:
    table = create_table(
        "t", SCHEMA, warehouse=warehouse.uri, properties=PROPS, **warehouse.options
    )
    table.append_records(_rows(0))  # v2
    stale_writer = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    stale_reader = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    for b in range(1, 63):  # v3 .. v64
        table.append_records(_rows(b))
    table.flush()
    time.sleep(1.2)  # every stub so far is past the horizon
    for b in range(63, 127):  # v65 .. v128: the sweep at v128 deletes the stubs now old
        table.append_records(_rows(b))
    table.flush()
    gone = [n for n in range(1, 129) if not _present(table, n)]
    assert gone and gone == list(range(2, gone[-1] + 1))  # a run from v2, oldest first
    assert gone[-1] >= 60  # every stub written before the sleep
    assert _present(table, 1)  # v1 stays: create_table is its create
    assert all(_present(table, n) for n in range(gone[-1] + 1, 129))
    with pytest.raises(Exception, match="already exists"):
        create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)

    # a reader pinned to a deleted version's file is told it was superseded, not that the
    # table is missing; a version never written is still "no table metadata"
    pinned = f"{warehouse.uri.rstrip('/')}/t/metadata/v2.metadata.json"
    with pytest.raises(SupersededVersionError, match=r"v2\.metadata\.json is gone.*has v128"):
        Table.from_metadata(pinned, **warehouse.options)
    with pytest.raises(TableNotFoundError, match="no table metadata"):
        Table.from_metadata(pinned.replace("/v2.", "/v500."), **warehouse.options)

    # a reader that held v2 finds the newest version, past the deleted ones
    assert stale_reader.refresh().version == 128
    # a writer that held v2 and last looked two hours ago does not create v3 again
    _aged(stale_writer)
    stale_writer.append_records(_rows(1000))
    assert not _present(table, 3)
    assert stale_writer.version == 129
    # a hint naming a deleted version: the load lists and finds the newest
    write_hint(table.backend, TablePaths("t"), 3)
    fresh = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    assert fresh.version == 129
    batches = sorted(r["batch"] for r in fresh.to_arrow().to_pylist())
    assert batches == sorted([*(b for b in range(127) for _ in range(2)), 1000, 1000])


def test_a_writer_whose_look_is_old_checks_the_newest_before_building(
    local_wh: Any, short_horizon: None
) -> None:
    """Without the check the aged writer would create v3 over the deleted stub: the check is
    what the other test relies on."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=PROPS)
    table.append_records(_rows(0))  # v2
    stale = load_table("t", warehouse=local_wh.uri)
    for b in range(1, 63):
        table.append_records(_rows(b))
    time.sleep(1.2)
    for b in range(63, 65):  # v65, v66
        table.append_records(_rows(b))
    table.flush()
    deleted = versions.delete_old_stubs(table.backend, TablePaths("t"), 66, 2)  # a sweep's
    # up to v61: v62 was retired by the commit of v65, after the pause, so its stub is young
    assert deleted == list(range(2, 62))
    assert all(_present(table, n) for n in (1, 62, 63, 64, 65, 66))
    _aged(stale)
    stale.append_records(_rows(7))
    assert stale.version == 67 and not _present(table, 3)
    fresh = load_table("t", warehouse=local_wh.uri)
    assert fresh.count() == 2 * 66


def test_a_stamp_from_a_clock_ahead_does_not_spare_the_recheck(
    local_wh: Any, short_horizon: None
) -> None:
    """Whether a held version is looked at again depends on when this process last saw it,
    never on the commit time its metadata claims (a writer whose clock ran ahead stamps the
    future, and later versions keep the larger stamp)."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=PROPS)
    table.append_records(_rows(0))  # v2
    stale = load_table("t", warehouse=local_wh.uri)
    md = stale._loaded.metadata
    ahead = dataclasses.replace(md, last_updated_ms=md.last_updated_ms + 86_400_000)
    stale._loaded = dataclasses.replace(stale._loaded, metadata=ahead)
    for b in range(1, 63):
        table.append_records(_rows(b))
    time.sleep(1.2)
    for b in range(63, 65):
        table.append_records(_rows(b))
    table.flush()
    versions.delete_old_stubs(table.backend, TablePaths("t"), 66, 2)
    assert not _present(table, 3)
    _aged(stale)
    stale.append_records(_rows(7))
    assert stale.version == 67 and not _present(table, 3)


def test_a_whole_version_left_behind_stops_the_deletion_and_is_retired(
    local_wh: Any, short_horizon: None
) -> None:
    """Only stubs are deleted, so a version read whole keeps every later one for a day: a
    whole version below the newest ones (its writer died before retiring it) is retired when
    a sweep meets it, and deleting goes on from it a day later."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=PROPS)
    for b in range(40):  # v2 .. v41
        table.append_records(_rows(b))
    table.flush()
    paths = TablePaths("t")
    whole = table.backend.read(paths.version(41))
    table.backend.write(paths.version(20), whole)  # as if v20 had never been retired
    time.sleep(1.2)
    deleted = versions.delete_old_stubs(table.backend, paths, 41, 2)
    assert deleted == list(range(2, 20))
    assert versions.is_stub(table.backend.read(paths.version(20)))  # retired now, kept a day
    assert _present(table, 21)
    assert load_table("t", warehouse=local_wh.uri).count() == 80


def test_a_floor_remembered_from_a_dropped_table_is_not_trusted(
    local_wh: Any, short_horizon: None
) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=PROPS)
    for b in range(30):
        table.append_records(_rows(b))
    table.flush()
    time.sleep(1.2)
    versions._FLOORS[table.backend.uri_for("t")] = 25  # what a sweep of an earlier "t" left
    assert versions.delete_old_stubs(table.backend, TablePaths("t"), 31, 2)[0] == 2


def test_a_sight_counts_time_either_clock_saw_pass() -> None:
    steady, wall = versions.sight()
    assert versions.since((steady, wall - 7200)) >= 7200  # a machine suspended for 2 hours
    assert versions.since((steady - 7200, wall)) >= 7200  # a wall clock set back 2 hours


def test_a_copy_of_a_table_does_not_carry_its_sight(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(_rows(0))
    assert table._loaded.observed is not None
    copy = pickle.loads(pickle.dumps(table._loaded))
    assert copy.observed is None and copy == table._loaded


def test_a_stub_written_late_is_kept_for_its_own_day(local_wh: Any, short_horizon: None) -> None:
    """Each stub is deleted only once it is itself past the horizon, even below an old one:
    a version retired out of order (late) keeps its stub, and everything after it, a day."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=PROPS)
    for b in range(40):  # v2 .. v41
        table.append_records(_rows(b))
    table.flush()
    time.sleep(1.2)
    paths = TablePaths("t")
    table.backend.write(paths.version(10), versions.stub_body(10, 41))  # retired just now
    assert versions.delete_old_stubs(table.backend, paths, 41, 2) == list(range(2, 10))
    assert all(_present(table, n) for n in range(10, 42))
