"""Commit cost does not grow with the table's age: requests per warm append, a bounded metadata
log, a bounded snapshot list and a bounded manifest list (merging)."""

from __future__ import annotations

from typing import Any

import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import ValidationError
from datashard.scan import read_manifest_files
from datashard.testing.faults import FaultyBackend

SCHEMA = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long", "required": True}])


def test_a_warm_append_costs_five_requests_on_every_backend(warehouse: Any) -> None:
    counting = FaultyBackend(warehouse.backend)  # no faults: it only counts
    create_table("t", SCHEMA, warehouse=counting)
    table = load_table("t", warehouse=counting)
    table.append_records([{"n": 0}])  # the first append reads nothing either (no parent)
    for i in range(1, 4):
        table.flush()
        counting.reset()
        table.append_records([{"n": i}])
        table.flush()  # the version-hint write runs in the background
        methods = [m for m, _ in counting.calls]
        assert methods == ["write", "write", "write", "put_if_absent", "write"], counting.calls
    assert load_table("t", warehouse=warehouse.backend).count() == 4


def test_a_cold_load_costs_three_requests(local_wh: Any) -> None:
    first = create_table("t", SCHEMA, warehouse=local_wh.backend)
    first.append_records([{"n": 1}])
    first.flush()
    counting = FaultyBackend(local_wh.backend)
    load_table("t", warehouse=counting)
    assert [m for m, _ in counting.calls] == ["read", "head", "read"]  # hint, probe, metadata


def test_metadata_log_and_snapshot_list_stay_bounded(local_wh: Any) -> None:
    props = {"write.metadata.previous-versions-max": "5", "history.expire.max-snapshots": "8"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    first = table.append_records([{"n": 0}]).snapshot_id
    for i in range(1, 30):
        table.append_records([{"n": i}])
    md = load_table("t", warehouse=local_wh.uri).metadata
    assert len(md.metadata_log) == 5
    assert md.metadata_log[-1].metadata_file.endswith("v30.metadata.json")
    assert len(md.snapshots) == 8 and len(md.snapshot_log) == 8
    assert table.count() == 30  # expiring snapshot entries never drops data
    with pytest.raises(ValidationError, match="no snapshot"):
        table.scan(snapshot_id=first)


def test_small_manifests_are_merged_so_the_manifest_list_stays_bounded(local_wh: Any) -> None:
    props = {"commit.manifest.min-count-to-merge": "4"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    counts = []
    for i in range(100):
        table.append_records([{"n": i}])
        counts.append(len(read_manifest_files(local_wh.backend, table.current_snapshot())))
    # fewer than M manifests per size class (1-3, 4-15, 16-63, 64-255 files) plus the newest
    assert max(counts) <= 1 + 3 * 4, counts
    assert max(counts[50:]) <= max(counts[:50]) + 3
    fresh = load_table("t", warehouse=local_wh.uri)
    # every row once, in commit order, after many merges
    assert fresh.to_arrow().column("n").to_pylist() == list(range(100))
    assert fresh.count() == 100


def test_the_metadata_file_stops_growing(local_wh: Any) -> None:
    props = {"write.metadata.previous-versions-max": "10", "history.expire.max-snapshots": "10"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for i in range(60):
        table.append_records([{"n": i}])
    size_30 = local_wh.backend.head("t/metadata/v31.metadata.json").size
    size_60 = local_wh.backend.head("t/metadata/v61.metadata.json").size
    assert abs(size_60 - size_30) < 0.05 * size_30
