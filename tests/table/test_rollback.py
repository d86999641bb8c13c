"""``rollback_to`` / ``set_current`` and tags/branches: the current snapshot moves without a file
written or deleted, PyIceberg reads the state rolled back to, a moved branch is a conflict, and
tagged snapshots survive expiry."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import CommitConflictError, ValidationError
from datashard.iceberg.expressions import col
from datashard.table import Table

SCHEMA = Schema(0, [{"id": 1, "name": "id", "type": "long", "required": True}])
BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)


def _ids(arrow: pa.Table) -> list[int]:
    return sorted(arrow.column("id").to_pylist())


def _theirs(table: Table, wh: Any) -> list[int]:
    static = StaticTable.from_metadata(table.metadata_location, properties=wh.pyiceberg_props)
    return _ids(static.scan().to_arrow())


def _make(wh: Any) -> Table:
    table = create_table("r", SCHEMA, warehouse=wh.uri, **wh.options)
    for i in range(3):
        table.append_records([{"id": i}])
    return table


@BOTH
def test_rollback_and_set_current_move_main_and_pyiceberg_follows(warehouse: Any) -> None:
    table = _make(warehouse)
    s1, s2, s3 = table.snapshots()
    table.delete(col("id") == 0)
    table.flush()
    data_before = {k for k in warehouse.keys() if "/data/" in k}
    table.rollback_to(s2.snapshot_id)
    assert table.current_snapshot().snapshot_id == s2.snapshot_id  # type: ignore[union-attr]
    assert _ids(table.to_arrow()) == [0, 1]
    assert _theirs(table, warehouse) == [0, 1]
    reloaded = load_table("r", warehouse=warehouse.uri, **warehouse.options)
    assert _ids(reloaded.to_arrow()) == [0, 1]
    assert reloaded.metadata.refs["main"].snapshot_id == s2.snapshot_id
    assert {k for k in warehouse.keys() if "/data/" in k} == data_before
    # s3 is no longer an ancestor: rollback refuses, set_current jumps
    with pytest.raises(ValidationError, match="not an ancestor"):
        table.rollback_to(s3.snapshot_id)
    table.set_current(s3.snapshot_id)
    assert _ids(table.to_arrow()) == [0, 1, 2]
    assert _theirs(table, warehouse) == [0, 1, 2]
    # appends continue from the snapshot now current
    table.append_records([{"id": 9}])
    snap = table.current_snapshot()
    assert snap is not None and snap.parent_snapshot_id == s3.snapshot_id
    assert _ids(load_table("r", warehouse=warehouse.uri, **warehouse.options).to_arrow()) == [
        0,
        1,
        2,
        9,
    ]
    del s1


def test_time_travel_after_a_rollback_reads_what_was_current_then(local_wh: Any) -> None:
    table = _make(local_wh)
    s1 = table.snapshots()[0]
    time.sleep(0.01)
    table.rollback_to(s1.snapshot_id)
    after = table.history()[-1]
    assert after.snapshot_id == s1.snapshot_id
    assert _ids(table.scan(as_of=after.timestamp_ms).to_arrow()) == [0]
    assert _ids(table.scan(as_of=after.timestamp_ms - 1).to_arrow()) == [0, 1, 2]


def test_a_rollback_from_a_stale_table_is_a_conflict(local_wh: Any) -> None:
    table = _make(local_wh)
    first = table.snapshots()[0].snapshot_id
    other = load_table("r", warehouse=local_wh.uri)
    other.append_records([{"id": 5}])
    with pytest.raises(CommitConflictError, match="main"):
        table.rollback_to(first)
    assert _ids(load_table("r", warehouse=local_wh.uri).to_arrow()) == [0, 1, 2, 5]


def test_unknown_snapshots_and_bad_ref_names_change_nothing(local_wh: Any) -> None:
    table = _make(local_wh)
    table.flush()
    before = local_wh.snapshot_of_storage()
    with pytest.raises(ValidationError, match="no snapshot 12345"):
        table.rollback_to(12345)
    with pytest.raises(ValidationError, match="no snapshot 12345"):
        table.set_current(12345)
    with pytest.raises(ValidationError, match="'main'"):
        table.create_tag("main")
    with pytest.raises(ValidationError, match="no snapshot 7"):
        table.create_tag("v1", 7)
    with pytest.raises(ValidationError, match="no ref 'nope'"):
        table.remove_ref("nope")
    assert local_wh.snapshot_of_storage() == before


@BOTH
def test_tags_and_branches_name_snapshots_and_survive_expiry(warehouse: Any) -> None:
    table = _make(warehouse)
    first = table.snapshots()[0]
    table.create_tag("release-1", first.snapshot_id)
    table.create_branch("audit")
    with pytest.raises(ValidationError, match="already has a ref"):
        table.create_tag("release-1")
    refs = load_table("r", warehouse=warehouse.uri, **warehouse.options).metadata.refs
    assert refs["release-1"].snapshot_id == first.snapshot_id
    assert refs["release-1"].type == "tag"
    assert refs["audit"].type == "branch"
    static = StaticTable.from_metadata(
        table.metadata_location, properties=warehouse.pyiceberg_props
    )
    assert static.metadata.refs["release-1"].snapshot_id == first.snapshot_id
    result = table.expire_snapshots(older_than=dt.timedelta(0), retain_last=1)
    assert len(result.expired_snapshot_ids) == 1  # the middle one; tag and current stay
    tagged = table.metadata.refs["release-1"].snapshot_id
    assert _ids(table.scan(snapshot_id=tagged).to_arrow()) == [0]
    table.remove_ref("release-1")
    assert (
        "release-1"
        not in load_table("r", warehouse=warehouse.uri, **warehouse.options).metadata.refs
    )
