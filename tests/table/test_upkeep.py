"""Metadata that stays small with no maintenance call: the automatic upkeep removes the
manifest lists and manifests of snapshots the per-commit retention dropped (at once; other
unreferenced leftovers after its grace period; never a data file), ``expire_snapshots()``
applies the table's own policy, and ``history()`` tells what each snapshot did."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, col, create_table, load_table
from datashard.errors import ConfigError, SnapshotExpiredError
from datashard.table.manifests import read_manifest_files
from datashard.testing.faults import FaultyBackend

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "batch", "type": "long", "required": True},
        {"id": 2, "name": "row", "type": "long", "required": True},
    ],
)
#: defaults but a short kept history, so 63 appends drop 58 snapshots
SHORT = {"history.expire.max-snapshots": "5"}
#: the same, with the grace period of unreferenced leftovers cut to 3 s
GRACE = {
    **SHORT,
    "write.upkeep.remove-orphans.older-than-ms": "3000",
    "commit.max-duration-ms": "3000",  # a tiny append commits far sooner, even on a busy box
}


def _rows(batch: int) -> list[dict[str, int]]:
    return [{"batch": batch, "row": r} for r in range(2)]


def _files(wh: Any, kind: str) -> set[str]:
    keys = {m.key for m in wh.backend.list("t/")}
    if kind == "lists":
        return {k for k in keys if k.rsplit("/", 1)[-1].startswith("snap-")}
    if kind == "manifests":
        return {k for k in keys if k.endswith(".avro") and "/snap-" not in k}
    return {k for k in keys if k.startswith("t/data/")}


def _referenced(table: Any) -> set[str]:
    return {
        table.backend.key_for(m.manifest_path)
        for s in table.snapshots()
        for m in read_manifest_files(table.backend, s)
    }


class _HeldCommit(FaultyBackend):
    """Holds the first conditional create of a version until ``go`` is set: a commit in
    flight, its manifest and manifest list written, while other writers go on."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.reached = threading.Event()
        self.go = threading.Event()

    def put_if_absent(self, key: str, data: bytes) -> None:
        if key.endswith(".metadata.json") and not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(60)
        super().put_if_absent(key, data)


def _manifests_written_by(held: FaultyBackend) -> list[str]:
    """The manifests written through ``held`` (not manifest lists, not data files)."""
    return [
        k
        for m, k in held.calls
        if m == "write" and k.endswith(".avro") and "/snap-" not in k and "/data/" not in k
    ]


@pytest.mark.parametrize("warehouse", ["local", "moto", "ceph"], indirect=True)
def test_upkeep_removes_the_metadata_of_dropped_snapshots_at_once(warehouse: Any) -> None:
    """With default settings (but 5 kept snapshots), the sweep at v64 removes the lists of the
    58 dropped snapshots and the manifests merged away, however young; a commit held in
    flight across it lands whole; a reader still on a dropped snapshot is told to refresh."""
    table = create_table(
        "t", SCHEMA, warehouse=warehouse.uri, properties=SHORT, **warehouse.options
    )
    table.append_records(_rows(0))  # v2
    stale_reader = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    held = _HeldCommit(table.backend)
    in_flight = load_table("t", warehouse=held)
    landed: list[Any] = []
    thread = threading.Thread(target=lambda: landed.append(in_flight.append_records(_rows(99))))
    thread.start()
    assert held.reached.wait(60)  # its manifest and list are written; its create waits
    stray = "t/metadata/00000000-crashed-writer-m0.avro"  # a dead writer's young leftover
    table.backend.write(stray, b"not referenced by anything")
    for b in range(1, 63):  # v3 .. v64: the winner of v64 sweeps in the background
        table.append_records(_rows(b))
    table.flush()
    kept = {table.backend.key_for(s.manifest_list) for s in table.snapshots()}
    assert len(kept) == 5
    lists = _files(warehouse, "lists")
    assert kept <= lists and len(lists - kept) == 1  # the held commit's attempt alone stays
    manifests = _files(warehouse, "manifests")
    own = set(_manifests_written_by(held))
    assert own and own <= manifests  # the held commit's manifest is kept for it
    assert manifests - _referenced(table) == {stray} | own
    assert stray in manifests  # young, and named by no committed list: the grace period decides
    assert len(_files(warehouse, "data")) == 64  # data files are never the upkeep's
    with pytest.raises(SnapshotExpiredError, match="refresh"):
        stale_reader.to_arrow()
    assert stale_reader.refresh().count() == 2 * 63
    held.go.set()  # the held commit loses v3, rebuilds on the newest version and lands
    thread.join(60)
    assert landed and not thread.is_alive()
    table.refresh()
    batches = sorted(r["batch"] for r in table.to_arrow().to_pylist())
    assert batches == sorted([*(b for b in range(63) for _ in range(2)), 99, 99])
    for i, snap in enumerate(table.snapshots()):  # every kept snapshot still reads whole
        assert table.scan(snapshot_id=snap.snapshot_id).to_arrow().num_rows == 2 * (60 + i)
    theirs = StaticTable.from_metadata(
        table.metadata_location, properties=warehouse.pyiceberg_props
    )
    assert theirs.scan().to_arrow().num_rows == 128


def test_upkeep_removes_unreferenced_leftovers_after_the_grace_period(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=GRACE)
    stray = ["t/metadata/00000000-crashed-writer-m0.avro", "t/metadata/snap-1-0-crashed.avro"]
    for key in stray:
        table.backend.write(key, b"not referenced by anything")
    for b in range(62):  # v2 .. v63
        table.append_records(_rows(b))
    table.flush()
    time.sleep(3.2)  # the leftovers are past the grace period now
    table.append_records(_rows(62))  # v64 sweeps
    table.flush()
    assert not any(table.backend.exists(k) for k in stray)
    assert _files(local_wh, "manifests") == _referenced(table)
    assert table.count() == 2 * 63


def test_with_the_upkeep_disabled_nothing_is_removed(local_wh: Any) -> None:
    props = {**SHORT, "write.upkeep.remove-orphans.enabled": "false"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for b in range(63):  # v2 .. v64: the sweep's version
        table.append_records(_rows(b))
    table.flush()
    assert len(_files(local_wh, "lists")) == 63


@pytest.mark.parametrize(
    "props,match",
    [
        ({"write.upkeep.remove-orphans.enabled": "yes"}, "expected 'true' or 'false'"),
        (
            {
                "write.upkeep.remove-orphans.enabled": "true",
                "write.upkeep.remove-orphans.older-than-ms": "1000",
            },
            r"older-than-ms=1000 is shorter than commit\.max-duration-ms=86400000",
        ),
        ({"history.expire.max-snapshot-age-ms": "-1"}, "max-snapshot-age-ms"),
        ({"history.expire.min-snapshots-to-keep": "0"}, "min-snapshots-to-keep"),
    ],
)
def test_bad_upkeep_and_expiry_settings_are_refused(
    local_wh: Any, props: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    assert list(local_wh.backend.list("")) == []


def test_expire_snapshots_with_no_arguments_applies_the_tables_policy(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    for b in range(5):
        table.append_records(_rows(b))
    assert table.expire_snapshots().expired_snapshot_ids == ()  # 5 days by default
    table.set_properties(
        {"history.expire.max-snapshot-age-ms": 0, "history.expire.min-snapshots-to-keep": 2}
    )
    ids = [s.snapshot_id for s in table.snapshots()]
    result = table.expire_snapshots()
    assert result.expired_snapshot_ids == tuple(ids[:3])
    assert [s.snapshot_id for s in table.snapshots()] == ids[3:]
    assert result.deleted_files  # their manifest lists at least
    assert all(not table.backend.exists(table.backend.key_for(u)) for u in result.deleted_files)
    assert table.count() == 10


def test_history_says_what_each_snapshot_did(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    start = dt.datetime.now(dt.timezone.utc)
    table.append_records(_rows(0))
    table.append_records(_rows(1))
    table.delete(col("batch") == 0)
    first = table.snapshots()[0].snapshot_id
    table.rollback_to(table.snapshots()[1].snapshot_id)
    entries = table.history()
    assert [e.operation for e in entries] == ["append", "append", "delete", "append"]
    assert [e.added_records for e in entries[:2]] == [2, 2]
    assert entries[2].deleted_records == 2 and entries[2].total_records == 2
    assert entries[0].parent_id is None and entries[1].parent_id == first
    assert all(start - dt.timedelta(seconds=5) <= e.made_current_at for e in entries)
    assert all(e.made_current_at.tzinfo is dt.timezone.utc for e in entries)
    assert [e.is_current_ancestor for e in entries] == [True, True, False, True]
    assert load_table("t", warehouse=local_wh.uri).history() == entries
