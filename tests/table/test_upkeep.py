"""Metadata that stays small with no maintenance call: the automatic upkeep removes the
manifest lists and manifests of snapshots the per-commit retention dropped (after its grace
period, never a data file), ``expire_snapshots()`` applies the table's own policy, and
``history()`` tells what each snapshot did."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, col, create_table, load_table
from datashard.errors import ConfigError
from datashard.table.manifests import read_manifest_files

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "batch", "type": "long", "required": True},
        {"id": 2, "name": "row", "type": "long", "required": True},
    ],
)
UPKEEP = {
    "write.upkeep.remove-orphans.enabled": "true",
    "write.upkeep.remove-orphans.older-than-ms": "3000",
    "commit.max-duration-ms": "3000",  # a tiny append commits far sooner, even on a busy box
    "history.expire.max-snapshots": "5",
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


@pytest.mark.parametrize("warehouse", ["local", "moto"], indirect=True)
def test_upkeep_removes_what_dropped_snapshots_alone_used_after_the_grace_period(
    warehouse: Any,
) -> None:
    table = create_table(
        "t", SCHEMA, warehouse=warehouse.uri, properties=UPKEEP, **warehouse.options
    )
    for b in range(62):  # v2 .. v63
        table.append_records(_rows(b))
    table.flush()
    lists_before = _files(warehouse, "lists")
    assert len(lists_before) == 62  # nothing swept yet
    time.sleep(3.2)  # everything written so far is past the grace period
    table.append_records(_rows(62))  # v64: the winner sweeps in the background
    table.flush()
    kept = {table.backend.key_for(s.manifest_list) for s in table.snapshots()}
    assert len(kept) == 5
    assert _files(warehouse, "lists") == kept  # the 58 lists of dropped snapshots are gone
    referenced = {
        table.backend.key_for(m.manifest_path)
        for s in table.snapshots()
        for m in read_manifest_files(table.backend, s)
    }
    assert _files(warehouse, "manifests") == referenced  # merged-away manifests are gone too
    assert len(_files(warehouse, "data")) == 63  # data files are never the upkeep's
    assert sorted({r["batch"] for r in table.to_arrow().to_pylist()}) == list(range(63))
    for i, snap in enumerate(table.snapshots()):  # every kept snapshot still reads whole
        assert table.scan(snapshot_id=snap.snapshot_id).to_arrow().num_rows == 2 * (59 + i)
    theirs = StaticTable.from_metadata(
        table.metadata_location, properties=warehouse.pyiceberg_props
    )
    assert theirs.scan().to_arrow().num_rows == 126


def test_without_upkeep_nothing_is_removed(local_wh: Any) -> None:
    props = {k: v for k, v in UPKEEP.items() if k != "write.upkeep.remove-orphans.enabled"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for b in range(62):
        table.append_records(_rows(b))
    time.sleep(3.2)  # old enough for the upkeep's grace, were it on
    table.append_records(_rows(62))  # v64: the sweep's version
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
