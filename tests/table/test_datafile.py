"""Data files: Parquet with field ids, statistics from the footer, and a whole table of our
files that PyIceberg reads back row for row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import pyarrow_to_schema
from pyiceberg.table import StaticTable

from datashard.errors import ValidationError
from datashard.iceberg.conversions import from_bytes, to_python
from datashard.iceberg.datafile import ParquetOptions, write_parquet
from datashard.iceberg.manifest import (
    ADDED,
    ManifestEntry,
)
from datashard.iceberg.manifest_codec import (
    build_manifest_file,
    write_manifest,
    write_manifest_list,
)
from datashard.iceberg.metadata import (
    UNPARTITIONED,
    Snapshot,
    SnapshotLogEntry,
    SnapshotRef,
    new_table_metadata,
)
from datashard.iceberg.metadata_codec import metadata_to_json
from datashard.iceberg.schema import Schema
from datashard.storage.config import open_backend

SCHEMA = Schema(
    1,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "small", "type": "int"},
        {"id": 3, "name": "f", "type": "float"},
        {"id": 4, "name": "d", "type": "double"},
        {"id": 5, "name": "price", "type": "decimal(9,2)"},
        {"id": 6, "name": "day", "type": "date"},
        {"id": 7, "name": "at", "type": "time"},
        {"id": 8, "name": "ts", "type": "timestamp"},
        {"id": 9, "name": "tstz", "type": "timestamptz"},
        {"id": 10, "name": "s", "type": "string"},
        {"id": 11, "name": "u", "type": "uuid"},
        {"id": 12, "name": "b", "type": "binary"},
        {"id": 13, "name": "fx", "type": "fixed[2]"},
        {"id": 14, "name": "flag", "type": "boolean"},
        {
            "id": 15,
            "name": "addr",
            "type": {
                "type": "struct",
                "fields": [
                    {"id": 16, "name": "city", "type": "string", "required": True},
                    {"id": 17, "name": "zip", "type": "int"},
                ],
            },
        },
        {
            "id": 18,
            "name": "tags",
            "type": {
                "type": "list",
                "element-id": 19,
                "element": "string",
                "element-required": False,
            },
        },
        {
            "id": 20,
            "name": "attrs",
            "type": {
                "type": "map",
                "key-id": 21,
                "key": "string",
                "value-id": 22,
                "value": "long",
                "value-required": False,
            },
        },
    ],
)


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "small": None if i % 3 == 0 else i * 2,
            "f": math.nan if i == 1 else float(i),
            "d": -float(i),
            "price": Decimal(i) / 4 if i % 2 else None,
            "day": dt.date(2024, 1, 1) + dt.timedelta(days=i),
            "at": dt.time(0, 0, i),
            "ts": dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i),
            "tstz": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i),
            "s": f"value-{i:03d}-" + "x" * 20,
            "u": uuid.UUID(int=i + 1),
            "b": bytes([i]),
            "fx": bytes([i, i]),
            "flag": i % 2 == 0,
            "addr": {"city": f"c{i}", "zip": i} if i != 2 else None,
            "tags": [f"t{i}", None],
            "attrs": {"k": i},
        }
        for i in range(n)
    ]


def _decoded(bounds: Mapping[int, bytes], fid: int) -> Any:
    t = SCHEMA.find_type(fid)
    return to_python(t, from_bytes(t, bounds[fid]))


def test_parquet_carries_field_ids_pyiceberg_maps_back_to_the_schema() -> None:
    data, _ = write_parquet(SCHEMA.records_to_arrow(_rows(4)), SCHEMA)
    arrow_schema = pq.read_schema(pa.BufferReader(data))
    theirs = pyarrow_to_schema(arrow_schema)
    assert theirs.find_field("addr.city").field_id == 16
    assert theirs.find_field("tags.element").field_id == 19
    assert theirs.find_field("attrs.value").field_id == 22
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0).column(0).compression == (
        "ZSTD"
    )


def test_statistics_describe_the_data_written() -> None:
    rows = _rows(10)
    data, st = write_parquet(
        SCHEMA.records_to_arrow(rows), SCHEMA, ParquetOptions(row_group_size=4)
    )
    assert st.record_count == 10
    assert len(st.split_offsets) == 3 and st.split_offsets[0] == 4
    assert list(st.split_offsets) == sorted(st.split_offsets)
    assert st.value_counts[1] == 10 and st.value_counts[19] == 20
    assert st.null_value_counts[2] == 4  # ids 0, 3, 6, 9
    assert st.null_value_counts[5] == 5
    assert st.nan_value_counts == {3: 1, 4: 0}
    assert all(st.column_sizes[fid] > 0 for fid in (1, 10, 16, 19, 21, 22))
    assert _decoded(st.lower_bounds, 1) == 0 and _decoded(st.upper_bounds, 1) == 9
    assert _decoded(st.lower_bounds, 3) == 0.0 and _decoded(st.upper_bounds, 3) == 9.0  # no NaN
    assert _decoded(st.lower_bounds, 4) == -9.0
    assert _decoded(st.lower_bounds, 5) == Decimal("0.25")
    assert _decoded(st.upper_bounds, 5) == Decimal("2.25")
    assert _decoded(st.lower_bounds, 6) == dt.date(2024, 1, 1)
    assert _decoded(st.upper_bounds, 7) == dt.time(0, 0, 9)
    assert _decoded(st.upper_bounds, 8) == dt.datetime(2024, 1, 1, 0, 9)
    assert _decoded(st.upper_bounds, 9) == dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone.utc)
    assert _decoded(st.lower_bounds, 11) == uuid.UUID(int=1)
    assert _decoded(st.upper_bounds, 13) == bytes([9, 9])
    assert _decoded(st.lower_bounds, 14) is False and _decoded(st.upper_bounds, 14) is True
    assert _decoded(st.lower_bounds, 16) == "c0" and _decoded(st.upper_bounds, 16) == "c9"
    # strings are truncated to 16 characters, the upper bound rounded up
    assert _decoded(st.lower_bounds, 10) == "value-000-xxxxxx"
    assert _decoded(st.upper_bounds, 10) == "value-009-xxxxxy"
    # values inside lists and maps get counts but no bounds
    assert 19 not in st.lower_bounds and 21 not in st.lower_bounds


def test_a_column_of_only_nulls_has_counts_and_no_bounds() -> None:
    table = SCHEMA.records_to_arrow([{"id": 1}, {"id": 2}])
    _, st = write_parquet(table, SCHEMA)
    assert st.null_value_counts[10] == 2 and st.value_counts[10] == 2
    assert 10 not in st.lower_bounds and 10 not in st.upper_bounds


def test_snappy_and_row_group_size_are_honoured() -> None:
    table = SCHEMA.records_to_arrow(_rows(5))
    data, st = write_parquet(table, SCHEMA, ParquetOptions(compression="snappy", row_group_size=2))
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    assert meta.num_row_groups == 3 and len(st.split_offsets) == 3
    assert meta.row_group(0).column(0).compression == "SNAPPY"


def test_data_that_does_not_fit_is_refused_before_any_bytes_are_made() -> None:
    with pytest.raises(ValidationError, match="field 'id'"):
        write_parquet(pa.table({"id": ["a"]}), SCHEMA)


def test_pyiceberg_reads_a_table_made_of_our_files_row_for_row(tmp_path: Path) -> None:
    """The whole format half at once: data file, manifest, manifest list and metadata JSON."""
    backend = open_backend(f"file://{tmp_path}")
    root = f"file://{tmp_path}"
    rows = _rows(7)
    table = SCHEMA.records_to_arrow(rows)
    data, stats = write_parquet(table, SCHEMA)
    backend.write("data/d0.parquet", data)
    df = stats.to_data_file(f"{root}/data/d0.parquet", len(data), {})
    assert df.file_size_in_bytes == (tmp_path / "data" / "d0.parquet").stat().st_size
    entries = [ManifestEntry(ADDED, None, None, None, df)]
    m_bytes = write_manifest(entries, SCHEMA, UNPARTITIONED, None)
    backend.write("metadata/m0.avro", m_bytes)
    snapshot_id, seq = 4242, 1
    mf = build_manifest_file(
        entries,
        manifest_path=f"{root}/metadata/m0.avro",
        manifest_length=len(m_bytes),
        spec=UNPARTITIONED,
        schema=SCHEMA,
        added_snapshot_id=snapshot_id,
        sequence_number=seq,
    )
    backend.write("metadata/snap-4242.avro", write_manifest_list([mf], snapshot_id, None, seq))
    md = new_table_metadata(SCHEMA, root, timestamp_ms=1_700_000_000_000)
    snap = Snapshot(
        snapshot_id,
        None,
        seq,
        1_700_000_000_001,
        f"{root}/metadata/snap-4242.avro",
        {"operation": "append", "added-records": "7"},
        SCHEMA.schema_id,
    )
    md = dataclasses.replace(
        md,
        snapshots=(snap,),
        current_snapshot_id=snapshot_id,
        last_sequence_number=seq,
        refs={"main": SnapshotRef(snapshot_id)},
        snapshot_log=(SnapshotLogEntry(snap.timestamp_ms, snapshot_id),),
    )
    backend.write("metadata/v1.metadata.json", metadata_to_json(md))

    static = StaticTable.from_metadata(f"{root}/metadata/v1.metadata.json")
    back = static.scan().to_arrow().sort_by("id")
    assert back.num_rows == 7
    assert back.column("id").to_pylist() == list(range(7))
    ours = table.to_pylist()
    theirs = back.to_pylist()
    for mine, their in zip(ours, theirs, strict=True):
        for key in ("small", "price", "day", "at", "ts", "s", "b", "fx", "flag", "addr", "tags"):
            assert their[key] == mine[key], key
        assert their["tstz"] == mine["tstz"]
        assert their["u"] == mine["u"] or uuid.UUID(bytes=their["u"]) == mine["u"]
        assert dict(their["attrs"]) == dict(mine["attrs"])
    # pruning by our statistics, done by PyIceberg: a filter outside the bounds reads nothing
    assert static.scan(row_filter="id > 100").to_arrow().num_rows == 0
    assert static.scan(row_filter="id >= 6").to_arrow().num_rows == 1
