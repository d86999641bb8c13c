"""The pure half of a commit: every update kind applied by ``apply``, every requirement checked
by ``validate``. No storage: each test builds metadata in memory and checks what a reader of
the resulting ``v<N+1>.metadata.json`` would see."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from datashard.errors import CommitConflictError, ConfigError, SchemaError, ValidationError
from datashard.iceberg.metadata import (
    PartitionField,
    PartitionSpec,
    Snapshot,
    SnapshotRef,
    TableMetadata,
    new_table_metadata,
)
from datashard.iceberg.schema import Schema
from datashard.table.updates import (
    COMMIT_ID,
    AddPartitionSpec,
    AddSchema,
    AddSnapshot,
    AssertCurrentSchemaId,
    AssertDefaultSpecId,
    AssertLastAssignedFieldId,
    AssertRefSnapshotId,
    AssertTableUUID,
    RemoveSnapshotRef,
    RemoveSnapshots,
    SetCurrentSchema,
    SetDefaultSpec,
    SetProperties,
    SetSnapshotRef,
    apply,
)

SCHEMA = Schema(
    0,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "region", "type": "string", "required": False},
    ],
)
T0 = 1_700_000_000_000


def _base(**props: str) -> TableMetadata:
    return new_table_metadata(SCHEMA, "file:///wh/t", props, timestamp_ms=T0)


def _snap(sid: int, seq: int, parent: int | None = None, ts: int = T0 + 1) -> Snapshot:
    return Snapshot(sid, parent, seq, ts, f"file:///wh/t/metadata/snap-{sid}.avro")


def _with_snapshots(md: TableMetadata, n: int) -> TableMetadata:
    """``md`` with snapshots 1..n committed one after another on main."""
    for i in range(1, n + 1):
        snap = _snap(i, i, i - 1 or None, T0 + i)
        md = apply(
            md, [AddSnapshot(snap), SetSnapshotRef("main", i)], base_location=None, now_ms=T0 + i
        )
    return md


# -- updates ----------------------------------------------------------------------------------


def test_add_snapshot_on_main_makes_it_current_and_logs_it_at_its_own_time() -> None:
    base = _base()
    snap = _snap(11, 1, ts=T0 + 5)
    md = apply(
        base,
        [AddSnapshot(snap), SetSnapshotRef("main", 11)],
        base_location="file:///wh/t/metadata/v1.metadata.json",
        now_ms=T0 + 5,
    )
    assert md.current_snapshot() == snap
    assert md.last_sequence_number == 1 and md.next_sequence_number == 2
    assert [(e.snapshot_id, e.timestamp_ms) for e in md.snapshot_log] == [(11, T0 + 5)]
    assert md.refs["main"] == SnapshotRef(11, "branch")
    assert [e.metadata_file for e in md.metadata_log] == ["file:///wh/t/metadata/v1.metadata.json"]
    assert md.last_updated_ms == T0 + 5
    assert base.snapshots == () and base.current_snapshot_id is None  # the base is untouched


def test_a_snapshot_id_already_in_the_table_is_a_conflict() -> None:
    md = _with_snapshots(_base(), 1)
    with pytest.raises(CommitConflictError, match="snapshot 1 is already in the table"):
        apply(md, [AddSnapshot(_snap(1, 2))], base_location=None, now_ms=T0 + 9)


def test_moving_main_back_logs_the_time_of_the_move_not_of_the_snapshot() -> None:
    md = _with_snapshots(_base(), 3)
    rolled = apply(md, [SetSnapshotRef("main", 1)], base_location=None, now_ms=T0 + 100)
    assert rolled.current_snapshot_id == 1
    assert rolled.snapshot_log[-1].snapshot_id == 1
    assert rolled.snapshot_log[-1].timestamp_ms == T0 + 100
    assert rolled.snapshot_as_of(T0 + 100).snapshot_id == 1  # type: ignore[union-attr]
    assert rolled.snapshot_as_of(T0 + 99).snapshot_id == 3  # type: ignore[union-attr]


def test_time_never_goes_backwards_in_the_log_or_last_updated() -> None:
    md = _with_snapshots(_base(), 2)
    later = apply(md, [SetSnapshotRef("main", 1)], base_location=None, now_ms=T0 - 50)
    assert later.last_updated_ms == md.last_updated_ms
    assert later.snapshot_log[-1].timestamp_ms == md.last_updated_ms


def test_a_ref_keeps_its_retention_settings_when_it_moves() -> None:
    md = _with_snapshots(_base(), 2)
    md = replace(md, refs={**md.refs, "main": SnapshotRef(2, "branch", max_ref_age_ms=5000)})
    moved = apply(md, [SetSnapshotRef("main", 1)], base_location=None, now_ms=T0 + 10)
    assert moved.refs["main"] == SnapshotRef(1, "branch", max_ref_age_ms=5000)


def test_a_ref_to_a_missing_snapshot_is_a_conflict() -> None:
    md = _with_snapshots(_base(), 1)
    with pytest.raises(CommitConflictError, match="no snapshot 99"):
        apply(md, [SetSnapshotRef("nightly", 99, "tag")], base_location=None, now_ms=T0 + 10)


def test_a_tag_does_not_move_main() -> None:
    md = _with_snapshots(_base(), 2)
    tagged = apply(md, [SetSnapshotRef("v1", 1, "tag")], base_location=None, now_ms=T0 + 10)
    assert tagged.refs["v1"] == SnapshotRef(1, "tag")
    assert tagged.current_snapshot_id == 2
    assert tagged.snapshot_log == md.snapshot_log


def test_removing_a_ref_and_refusing_main_or_a_missing_one() -> None:
    md = apply(
        _with_snapshots(_base(), 1),
        [SetSnapshotRef("v1", 1, "tag")],
        base_location=None,
        now_ms=T0 + 5,
    )
    gone = apply(md, [RemoveSnapshotRef("v1")], base_location=None, now_ms=T0 + 6)
    assert set(gone.refs) == {"main"}
    with pytest.raises(ValidationError, match="no ref 'v2'"):
        apply(md, [RemoveSnapshotRef("v2")], base_location=None, now_ms=T0 + 6)
    with pytest.raises(ValidationError, match="main branch"):
        apply(md, [RemoveSnapshotRef("main")], base_location=None, now_ms=T0 + 6)


def test_remove_snapshots_drops_them_and_their_log_entries_and_ignores_unknown_ids() -> None:
    md = _with_snapshots(_base(), 3)
    out = apply(md, [RemoveSnapshots(frozenset({1, 2, 77}))], base_location=None, now_ms=T0 + 9)
    assert [s.snapshot_id for s in out.snapshots] == [3]
    assert [e.snapshot_id for e in out.snapshot_log] == [3]


def test_a_snapshot_a_ref_names_cannot_be_removed() -> None:
    md = apply(
        _with_snapshots(_base(), 3),
        [SetSnapshotRef("v1", 1, "tag")],
        base_location=None,
        now_ms=T0 + 5,
    )
    with pytest.raises(CommitConflictError, match=r"\[1\].*named by a ref"):
        apply(md, [RemoveSnapshots(frozenset({1, 2}))], base_location=None, now_ms=T0 + 9)


def test_set_properties_merges_into_the_existing_ones() -> None:
    md = apply(
        _base(keep="1", change="a"),
        [SetProperties({"change": "b", COMMIT_ID: "c1"})],
        base_location=None,
        now_ms=T0 + 1,
    )
    assert dict(md.properties) == {"keep": "1", "change": "b", COMMIT_ID: "c1"}


def test_add_schema_and_make_it_current() -> None:
    new = Schema(1, [*SCHEMA.fields, {"id": 3, "name": "n", "type": "int", "required": False}])
    md = apply(_base(), [AddSchema(new, 3), SetCurrentSchema(1)], base_location=None, now_ms=T0 + 1)
    assert md.current_schema() == new and md.last_column_id == 3
    assert [s.schema_id for s in md.schemas] == [0, 1]
    with pytest.raises(CommitConflictError, match="schema 1 is already"):
        apply(md, [AddSchema(new, 3)], base_location=None, now_ms=T0 + 2)
    with pytest.raises(SchemaError, match="no schema 7"):
        apply(md, [SetCurrentSchema(7)], base_location=None, now_ms=T0 + 2)


def test_add_partition_spec_once_and_make_it_default() -> None:
    spec = PartitionSpec(1, (PartitionField(2, 1000, "identity", "region"),))
    update = [AddPartitionSpec(spec, 1000), SetDefaultSpec(1)]
    md = apply(_base(), update, base_location=None, now_ms=T0 + 1)
    assert md.spec() == spec and md.last_partition_id == 1000
    again = apply(md, update, base_location=None, now_ms=T0 + 2)  # an equal spec is kept once
    assert [s.spec_id for s in again.partition_specs] == [0, 1]
    with pytest.raises(SchemaError, match="no partition spec 5"):
        apply(md, [SetDefaultSpec(5)], base_location=None, now_ms=T0 + 2)


# -- retention every commit applies ----------------------------------------------------------


def test_every_commit_keeps_at_most_max_snapshots_but_never_drops_a_tagged_one() -> None:
    md = _with_snapshots(_base(**{"history.expire.max-snapshots": "3"}), 3)
    md = apply(md, [SetSnapshotRef("keep", 1, "tag")], base_location=None, now_ms=T0 + 10)
    md = _with_snapshots_from(md, 4, 6)
    assert sorted(s.snapshot_id for s in md.snapshots) == [1, 4, 5, 6]
    assert 2 not in {e.snapshot_id for e in md.snapshot_log}


def _with_snapshots_from(md: TableMetadata, first: int, last: int) -> TableMetadata:
    for i in range(first, last + 1):
        snap = _snap(i, i, i - 1, T0 + 100 + i)
        md = apply(
            md,
            [AddSnapshot(snap), SetSnapshotRef("main", i)],
            base_location=None,
            now_ms=T0 + 100 + i,
        )
    return md


def test_the_metadata_log_keeps_previous_versions_max_entries() -> None:
    md = _base(**{"write.metadata.previous-versions-max": "2"})
    for v in range(1, 5):
        md = apply(md, [], base_location=f"file:///wh/t/metadata/v{v}.metadata.json", now_ms=T0 + v)
    assert [e.metadata_file.rsplit("/", 1)[1] for e in md.metadata_log] == [
        "v3.metadata.json",
        "v4.metadata.json",
    ]


def test_a_malformed_retention_property_names_itself() -> None:
    with pytest.raises(ConfigError, match="history.expire.max-snapshots must be a whole number"):
        apply(_base(**{"history.expire.max-snapshots": "ten"}), [], base_location=None, now_ms=T0)
    with pytest.raises(ConfigError, match=r"previous-versions-max must be >= 1, got 0"):
        apply(
            _base(**{"write.metadata.previous-versions-max": "0"}),
            [],
            base_location=None,
            now_ms=T0,
        )


def test_a_snapshot_summary_cannot_change_after_the_snapshot_is_made() -> None:
    summary = {"operation": "append", "added-records": "4"}
    snap = Snapshot(1, None, 1, T0, "file:///l.avro", summary)
    summary["added-records"] = "400"  # the caller's dict, not the snapshot's
    assert snap.summary["added-records"] == "4"
    with pytest.raises(TypeError):
        snap.summary["added-records"] = "5"  # type: ignore[index]
    assert pickle.loads(pickle.dumps(snap)) == snap


# -- requirements -------------------------------------------------------------------------------


def test_assert_table_uuid() -> None:
    md = _base()
    AssertTableUUID(md.table_uuid).validate(md)
    with pytest.raises(CommitConflictError, match="was replaced"):
        AssertTableUUID("00000000-0000-0000-0000-000000000000").validate(md)


def test_assert_ref_snapshot_id() -> None:
    md = _with_snapshots(_base(), 2)
    AssertRefSnapshotId("main", 2).validate(md)
    AssertRefSnapshotId("nightly", None).validate(md)  # still absent
    with pytest.raises(
        CommitConflictError, match="'main' .* moved to snapshot 2 .* read snapshot 1"
    ):
        AssertRefSnapshotId("main", 1).validate(md)
    with pytest.raises(CommitConflictError, match="moved to snapshot None"):
        AssertRefSnapshotId("nightly", 1).validate(md)


def test_assert_current_schema_id() -> None:
    md = _base()
    AssertCurrentSchemaId(0).validate(md)
    with pytest.raises(CommitConflictError, match="schema .* changed to 0 .* schema 3"):
        AssertCurrentSchemaId(3).validate(md)


def test_assert_last_assigned_field_id() -> None:
    md = _base()
    AssertLastAssignedFieldId(2).validate(md)
    with pytest.raises(CommitConflictError, match="last column id 2, this change was built on 1"):
        AssertLastAssignedFieldId(1).validate(md)


def test_assert_default_spec_id() -> None:
    md = _base()
    AssertDefaultSpecId(0).validate(md)
    with pytest.raises(CommitConflictError, match="partition spec .* changed to 0 .* spec 1"):
        AssertDefaultSpecId(1).validate(md)
