"""Table metadata JSON: round trips, PyIceberg reading ours, us reading PyIceberg's, and
corrupt files that name themselves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table.metadata import TableMetadataUtil

from datashard.errors import CorruptMetadataError, UnsupportedFeatureError
from datashard.iceberg.metadata import (
    MetadataLogEntry,
    PartitionField,
    PartitionSpec,
    Snapshot,
    SnapshotLogEntry,
    SnapshotRef,
    SortField,
    SortOrder,
    TableMetadata,
    new_table_metadata,
)
from datashard.iceberg.metadata_codec import metadata_from_json, metadata_to_json
from datashard.iceberg.schema import Schema

SCHEMA = Schema(
    schema_id=1,
    fields=[
        {"id": 1, "name": "user_id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
        {"id": 3, "name": "timestamp", "type": "long", "required": True},
        {
            "id": 4,
            "name": "tags",
            "type": {
                "type": "list",
                "element-id": 5,
                "element": "string",
                "element-required": False,
            },
        },
    ],
)
LOC = "file:///warehouse/user-events"


def _two_snapshot_metadata() -> TableMetadata:
    md = new_table_metadata(SCHEMA, LOC, {"owner": "me"}, timestamp_ms=1_700_000_000_000)
    s1 = Snapshot(
        11,
        None,
        1,
        1_700_000_001_000,
        f"{LOC}/metadata/snap-11-0-a.avro",
        {"operation": "append", "added-records": "3"},
        1,
    )
    s2 = Snapshot(
        22,
        11,
        2,
        1_700_000_002_000,
        f"{LOC}/metadata/snap-22-0-b.avro",
        {"operation": "append", "added-records": "4"},
        1,
    )
    return dataclasses.replace(
        md,
        last_sequence_number=2,
        last_updated_ms=s2.timestamp_ms,
        current_snapshot_id=22,
        snapshots=(s1, s2),
        snapshot_log=(SnapshotLogEntry(s1.timestamp_ms, 11), SnapshotLogEntry(s2.timestamp_ms, 22)),
        metadata_log=(MetadataLogEntry(1_700_000_000_000, f"{LOC}/metadata/v1.metadata.json"),),
        refs={"main": SnapshotRef(22, "branch"), "v1": SnapshotRef(11, "tag", max_ref_age_ms=5)},
    )


def test_new_table_metadata_is_empty_and_keeps_schema_ids() -> None:
    md = new_table_metadata(SCHEMA, LOC + "/")
    assert md.location == LOC
    assert md.format_version == 2 and md.last_sequence_number == 0
    assert md.current_schema() == SCHEMA and md.current_schema_id == 1
    assert md.last_column_id == 5 and md.last_partition_id == 999
    assert md.current_snapshot() is None and md.snapshots == ()


def test_metadata_round_trips_through_json() -> None:
    md = _two_snapshot_metadata()
    assert metadata_from_json(metadata_to_json(md), "v3.metadata.json") == md


def test_json_uses_the_spec_field_names() -> None:
    doc = json.loads(metadata_to_json(_two_snapshot_metadata()))
    for key in (
        "format-version",
        "table-uuid",
        "location",
        "last-sequence-number",
        "last-updated-ms",
        "last-column-id",
        "schemas",
        "current-schema-id",
        "partition-specs",
        "default-spec-id",
        "last-partition-id",
        "properties",
        "current-snapshot-id",
        "snapshots",
        "snapshot-log",
        "metadata-log",
        "sort-orders",
        "default-sort-order-id",
        "refs",
        "statistics",
    ):
        assert key in doc, key
    assert doc["snapshots"][1]["parent-snapshot-id"] == 11
    assert doc["snapshots"][1]["summary"]["operation"] == "append"
    assert doc["refs"]["main"] == {"snapshot-id": 22, "type": "branch"}


def test_time_travel_helpers_follow_the_snapshot_log() -> None:
    md = _two_snapshot_metadata()
    assert md.current_snapshot() == md.snapshot_by_id(22)
    assert md.snapshot_as_of(1_700_000_001_500) == md.snapshot_by_id(11)
    assert md.snapshot_as_of(1_700_000_002_000) == md.snapshot_by_id(22)
    assert md.snapshot_as_of(1_600_000_000_000) is None
    assert [s.snapshot_id for s in md.ancestors()] == [22, 11]


def test_pyiceberg_reads_our_metadata() -> None:
    md = _two_snapshot_metadata()
    theirs = TableMetadataUtil.parse_raw(metadata_to_json(md).decode())
    assert theirs.format_version == 2
    assert str(theirs.table_uuid) == md.table_uuid
    assert theirs.current_snapshot_id == 22
    their_snapshot = theirs.snapshot_by_id(22)
    assert their_snapshot is not None and their_snapshot.parent_snapshot_id == 11
    assert theirs.schema().find_field("tags.element").field_id == 5
    assert theirs.refs["v1"].snapshot_ref_type == "tag"
    empty = TableMetadataUtil.parse_raw(metadata_to_json(new_table_metadata(SCHEMA, LOC)).decode())
    assert empty.current_snapshot_id is None


def test_partition_specs_and_sort_orders_round_trip_and_pyiceberg_reads_them() -> None:
    spec = PartitionSpec(1, (PartitionField(1, 1000, "bucket[16]", "user_id_bucket"),))
    order = SortOrder(1, (SortField(3, "identity", "desc", "nulls-last"),))
    md = new_table_metadata(SCHEMA, LOC, partition_spec=spec, sort_order=order)
    back = metadata_from_json(metadata_to_json(md), "x")
    assert back == md and back.last_partition_id == 1000
    theirs = TableMetadataUtil.parse_raw(metadata_to_json(md).decode())
    assert theirs.spec().fields[0].name == "user_id_bucket"
    assert theirs.sort_order_by_id(1) is not None


def test_we_read_metadata_pyiceberg_wrote(tmp_path: Path) -> None:
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/wh"
    )
    catalog.create_namespace("ns")
    arrow_schema = pa.schema(
        [
            pa.field("a", pa.int64()),
            pa.field("s", pa.string()),
            pa.field("st", pa.struct([pa.field("x", pa.float64())])),
        ]
    )
    table = catalog.create_table("ns.events", schema=arrow_schema)
    table.append(
        pa.table({"a": [1, 2], "s": ["x", None], "st": [{"x": 1.0}, None]}, schema=arrow_schema)
    )
    table.append(pa.table({"a": [3], "s": ["y"], "st": [None]}, schema=arrow_schema))
    path = table.metadata_location.removeprefix("file://")
    md = metadata_from_json(Path(path).read_bytes(), table.metadata_location)
    assert md.table_uuid == str(table.metadata.table_uuid)
    assert md.current_snapshot_id == table.metadata.current_snapshot_id
    assert len(md.snapshots) == 2
    current = md.current_snapshot()
    assert current is not None and current.summary["total-records"] == "3"
    assert current.parent_snapshot_id == md.snapshots[0].snapshot_id
    assert md.current_schema().find_field("st.x").field_id == 4
    assert md.refs["main"].snapshot_id == current.snapshot_id
    assert len(md.metadata_log) == 2
    # and what we write back from it, PyIceberg still reads
    again = TableMetadataUtil.parse_raw(metadata_to_json(md).decode())
    assert again.current_snapshot_id == md.current_snapshot_id


GOOD = metadata_to_json(_two_snapshot_metadata())


def _mutate(**changes: object) -> bytes:
    doc = json.loads(GOOD)
    for k, v in changes.items():
        if v is None:
            del doc[k.replace("_", "-")]
        else:
            doc[k.replace("_", "-")] = v
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (GOOD[: len(GOOD) // 2], "not valid JSON"),
        (b"", "empty file"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (_mutate(table_uuid=None), "missing required field 'table-uuid'"),
        (_mutate(last_sequence_number="2"), "'last-sequence-number' must be int"),
        (_mutate(schemas=[{"type": "struct", "fields": [{"id": 1}]}]), "bad schema"),
        (_mutate(current_snapshot_id=99), "current-snapshot-id 99"),
        (_mutate(current_schema_id=7), "current-schema-id 7"),
        (_mutate(snapshots=[{"snapshot-id": 22}]), "missing required field 'snapshots\\[0\\]"),
    ],
)
def test_corrupt_metadata_raises_naming_the_file(data: bytes, expected: str) -> None:
    where = "s3://bucket/t/metadata/v7.metadata.json"
    with pytest.raises(CorruptMetadataError, match=expected) as info:
        metadata_from_json(data, where)
    assert where in str(info.value)


@pytest.mark.parametrize("version", [1, 4])
def test_a_format_version_other_than_2_and_3_is_refused_by_name(version: int) -> None:
    where = "s3://bucket/t/metadata/v7.metadata.json"
    with pytest.raises(UnsupportedFeatureError, match=f"format-version {version} is not") as info:
        metadata_from_json(_mutate(format_version=version), where)
    assert where in str(info.value)


def test_metadata_without_refs_gets_the_implied_main_branch() -> None:
    doc = json.loads(GOOD)
    del doc["refs"]
    md = metadata_from_json(json.dumps(doc).encode(), "v2.metadata.json")
    assert md.refs == {"main": SnapshotRef(22, "branch")}


def test_gzip_compressed_metadata_is_read() -> None:
    import gzip

    assert metadata_from_json(gzip.compress(GOOD), "v1.gz.metadata.json") == (
        metadata_from_json(GOOD, "v1.metadata.json")
    )


def test_metadata_pickles_for_worker_processes() -> None:
    import pickle

    md = _two_snapshot_metadata()
    assert pickle.loads(pickle.dumps(md)) == md


# -- the per-process memos that keep a commit's cost flat -------------------------------------


def test_written_bytes_are_exactly_the_spec_object_serialised() -> None:
    from datashard.iceberg.metadata_codec import metadata_to_dict

    md = _two_snapshot_metadata()
    compact = json.dumps(metadata_to_dict(md), separators=(",", ":"), ensure_ascii=False)
    assert metadata_to_json(md) == compact.encode()
    assert metadata_to_json(md) == metadata_to_json(md)  # the second time from the memo
    empty = new_table_metadata(SCHEMA, LOC)
    assert json.loads(metadata_to_json(empty))["snapshots"] == []
    odd = dataclasses.replace(
        md,
        metadata_log=(MetadataLogEntry(1, 'file:///w/t "quoted" \\ ü\n/v1.metadata.json'),),
        statistics=({"snapshot-id": 22, "statistics-path": "s", "blob-metadata": []},),
    )
    compact = json.dumps(metadata_to_dict(odd), separators=(",", ":"), ensure_ascii=False)
    assert metadata_to_json(odd) == compact.encode()
    assert metadata_from_json(metadata_to_json(odd), "v9.metadata.json") == odd


def test_a_snapshot_changed_under_the_same_id_is_parsed_afresh() -> None:
    first = metadata_from_json(GOOD, "v2.metadata.json")  # the memo now knows snapshots 11, 22
    doc = json.loads(GOOD)
    doc["snapshots"][1]["summary"]["added-records"] = "40"
    changed = metadata_from_json(json.dumps(doc).encode(), "v3.metadata.json")
    assert first.snapshot_by_id(22).summary["added-records"] == "4"
    assert changed.snapshot_by_id(22).summary["added-records"] == "40"
    # equal by == but not by type (1000.0, False): refused as a full parse refuses it
    for field, odd in (
        ("timestamp-ms", float(doc["snapshots"][0]["timestamp-ms"])),
        ("schema-id", False),
    ):
        bad = json.loads(GOOD)
        bad["snapshots"][0][field] = odd
        with pytest.raises(CorruptMetadataError, match=rf"snapshots\[0\]\.{field}"):
            metadata_from_json(json.dumps(bad).encode(), "v3.metadata.json")
    # a snapshot the memo knows, broken in a later file, still fails naming that file
    doc["snapshots"][0]["timestamp-ms"] = "yesterday"
    with pytest.raises(CorruptMetadataError, match=r"v4\.metadata\.json.*snapshots\[0\]"):
        metadata_from_json(json.dumps(doc).encode(), "v4.metadata.json")


def test_malformed_log_entries_are_named_even_after_good_ones() -> None:
    doc = json.loads(GOOD)
    doc["snapshot-log"][1]["snapshot-id"] = True  # a bool is not an id
    with pytest.raises(CorruptMetadataError, match=r"snapshot-log\[1\]\.snapshot-id"):
        metadata_from_json(json.dumps(doc).encode(), "v5.metadata.json")
    doc = json.loads(GOOD)
    doc["metadata-log"][0]["metadata-file"] = 7
    with pytest.raises(CorruptMetadataError, match=r"metadata-log\[0\]\.metadata-file"):
        metadata_from_json(json.dumps(doc).encode(), "v6.metadata.json")


# --------------------------------------------------------------------------------------------
# format version 3


def _v3(**changes: object) -> bytes:
    """GOOD as a format version 3 document: row lineage on the table and its snapshots."""
    doc = json.loads(GOOD)
    doc["format-version"] = 3
    doc["next-row-id"] = 7
    doc["snapshots"][0].update({"first-row-id": 0, "added-rows": 3})
    doc["snapshots"][1].update({"first-row-id": 3, "added-rows": 4})
    for k, v in changes.items():
        if v is None:
            del doc[k.replace("_", "-")]
        else:
            doc[k.replace("_", "-")] = v
    return json.dumps(doc).encode()


def test_v3_metadata_keeps_its_row_lineage_through_a_round_trip() -> None:
    md = metadata_from_json(_v3(), "v3.metadata.json")
    assert (md.format_version, md.next_row_id) == (3, 7)
    assert [(s.first_row_id, s.added_rows) for s in md.snapshots] == [(0, 3), (3, 4)]
    again = json.loads(metadata_to_json(md))
    assert again["format-version"] == 3 and again["next-row-id"] == 7
    assert [(s["first-row-id"], s["added-rows"]) for s in again["snapshots"]] == [(0, 3), (3, 4)]
    assert metadata_from_json(metadata_to_json(md), "v4.metadata.json") == md
    # a v2 document gets no v3 field
    v2 = json.loads(metadata_to_json(metadata_from_json(GOOD, "v2.metadata.json")))
    assert "next-row-id" not in v2 and "first-row-id" not in v2["snapshots"][0]


def test_v3_metadata_without_next_row_id_is_corrupt() -> None:
    with pytest.raises(CorruptMetadataError, match="'next-row-id'"):
        metadata_from_json(_v3(next_row_id=None), "s3://b/t/metadata/v3.metadata.json")


def test_v3_snapshots_made_before_an_upgrade_have_no_row_ids() -> None:
    doc = json.loads(_v3())
    del doc["snapshots"][0]["first-row-id"], doc["snapshots"][0]["added-rows"]
    md = metadata_from_json(json.dumps(doc).encode(), "v3.metadata.json")
    assert (md.snapshots[0].first_row_id, md.snapshots[0].added_rows) == (None, None)


@pytest.mark.parametrize(
    ("change", "feature"),
    [
        ({"encryption-keys": [{"key-id": "k1", "encrypted-key-metadata": "AA=="}]}, "encrypt"),
        ({"snapshot-key-id": "k1"}, "key-id 'k1'"),
        (
            {
                "partition-specs": [
                    {
                        "spec-id": 0,
                        "fields": [
                            {
                                "source-ids": [1, 2],
                                "field-id": 1000,
                                "name": "b",
                                "transform": "bucket[4]",
                            }
                        ],
                    }
                ]
            },
            "multi-argument transform",
        ),
    ],
)
def test_v3_features_datashard_does_not_read_are_refused_by_name(
    change: dict[str, object], feature: str
) -> None:
    doc = json.loads(_v3())
    if "snapshot-key-id" in change:
        doc["snapshots"][1]["key-id"] = change["snapshot-key-id"]
    else:
        doc.update(change)
    where = "s3://b/t/metadata/v9.metadata.json"
    with pytest.raises(UnsupportedFeatureError, match=feature) as info:
        metadata_from_json(json.dumps(doc).encode(), where)
    assert where in str(info.value)


def test_a_v3_single_argument_field_written_with_source_ids_reads() -> None:
    doc = json.loads(_v3())
    doc["partition-specs"] = [
        {
            "spec-id": 0,
            "fields": [
                {"source-ids": [1], "field-id": 1000, "name": "b", "transform": "bucket[4]"}
            ],
        }
    ]
    md = metadata_from_json(json.dumps(doc).encode(), "v3.metadata.json")
    assert md.spec(0).fields == (PartitionField(1, 1000, "bucket[4]", "b"),)
