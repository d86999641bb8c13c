"""Manifests and manifest lists: PyIceberg reads ours, we read PyIceberg's, inheritance works,
and corrupt files name themselves."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.manifest import read_manifest_list as their_read_manifest_list

from datashard.errors import CorruptMetadataError, ValidationError
from datashard.iceberg.avro_schemas import MANIFEST_FILE_SCHEMA
from datashard.iceberg.conversions import to_bytes
from datashard.iceberg.manifest import (
    ADDED,
    DELETED,
    EXISTING,
    DataFile,
    ManifestEntry,
    ManifestFile,
)
from datashard.iceberg.manifest_codec import (
    _manifest_file_record,
    assign_first_row_ids,
    build_manifest_file,
    decode_bounds,
    read_manifest,
    read_manifest_list,
    write_manifest,
    write_manifest_list,
)
from datashard.iceberg.metadata import UNPARTITIONED, PartitionField, PartitionSpec
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import DateType, LongType, StringType

SCHEMA = Schema(
    1,
    [
        {"id": 1, "name": "user_id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
        {"id": 3, "name": "day", "type": "date"},
    ],
)


def _data_file(name: str, rows: int, lo: int, hi: int, **kw: object) -> DataFile:
    return DataFile(
        file_path=f"file:///wh/t/data/{name}.parquet",
        record_count=rows,
        file_size_in_bytes=1000 + rows,
        column_sizes={1: 40, 2: 60},
        value_counts={1: rows, 2: rows},
        null_value_counts={1: 0, 2: 0},
        nan_value_counts={},
        lower_bounds={1: to_bytes(LongType(), lo), 2: to_bytes(StringType(), "a")},
        upper_bounds={1: to_bytes(LongType(), hi), 2: to_bytes(StringType(), "z")},
        split_offsets=(4,),
        **kw,  # type: ignore[arg-type]
    )


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return f"file://{path}"


def test_manifest_round_trips_and_added_entries_inherit_from_the_list(tmp_path: Path) -> None:
    entries = [
        ManifestEntry(ADDED, None, None, None, _data_file("a", 10, 1, 9)),
        ManifestEntry(EXISTING, 5, 3, 3, _data_file("b", 20, 10, 30)),
        ManifestEntry(DELETED, 5, 2, 2, _data_file("c", 5, 0, 0)),
    ]
    data = write_manifest(entries, SCHEMA, UNPARTITIONED, None)
    mf = build_manifest_file(
        entries,
        manifest_path="file:///wh/t/metadata/m0.avro",
        manifest_length=len(data),
        spec=UNPARTITIONED,
        schema=SCHEMA,
        added_snapshot_id=77,
        sequence_number=4,
    )
    assert (mf.added_files_count, mf.existing_files_count, mf.deleted_files_count) == (1, 1, 1)
    assert (mf.added_rows_count, mf.existing_rows_count, mf.deleted_rows_count) == (10, 20, 5)
    assert mf.min_sequence_number == 3
    raw = read_manifest(data, "m0.avro")
    assert raw[0].snapshot_id is None and raw[0].sequence_number is None
    assert [e.data_file for e in raw] == [e.data_file for e in entries]
    inherited = read_manifest(data, "m0.avro", mf)
    assert (
        inherited[0].snapshot_id,
        inherited[0].sequence_number,
        inherited[0].file_sequence_number,
    ) == (77, 4, 4)
    assert inherited[1] == entries[1] and inherited[2] == entries[2]


def test_only_added_entries_may_leave_sequence_numbers_to_inheritance() -> None:
    with pytest.raises(ValidationError, match="only ADDED entries"):
        write_manifest(
            [ManifestEntry(EXISTING, 1, None, None, _data_file("a", 1, 1, 1))],
            SCHEMA,
            UNPARTITIONED,
            1,
        )


def test_manifest_files_carry_the_spec_metadata_and_field_ids() -> None:
    data = write_manifest(
        [ManifestEntry(ADDED, None, None, None, _data_file("a", 1, 1, 1))], SCHEMA, UNPARTITIONED, 9
    )
    reader = fastavro.reader(io.BytesIO(data))
    meta = {k: v for k, v in reader.metadata.items() if k != "avro.schema"}
    assert meta["format-version"] == "2" and meta["content"] == "data"
    assert meta["partition-spec"] == "[]" and meta["partition-spec-id"] == "0"
    assert meta["schema-id"] == "1" and Schema.from_json(json.loads(meta["schema"])) == SCHEMA
    schema = json.loads(reader.metadata["avro.schema"])
    data_file = next(f for f in schema["fields"] if f["name"] == "data_file")
    assert data_file["field-id"] == 2
    lower = next(f for f in data_file["type"]["fields"] if f["name"] == "lower_bounds")
    kv = lower["type"][1]["items"]["fields"]
    assert lower["field-id"] == 125 and [f["field-id"] for f in kv] == [126, 127]
    first: Any = next(iter(reader))
    assert first["snapshot_id"] == 9


def test_pyiceberg_reads_our_manifest_list_and_manifests(tmp_path: Path) -> None:
    spec = PartitionSpec(0, (PartitionField(3, 1000, "identity", "day"),))
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    entries = [
        ManifestEntry(
            ADDED, None, None, None, _data_file(f"p{i}", 10 + i, i, 100 + i, partition={"day": d})
        )
        for i, d in enumerate(days)
    ]
    m_bytes = write_manifest(entries, SCHEMA, spec, 1234)
    m_path = _write(tmp_path, "m0.avro", m_bytes)
    mf = build_manifest_file(
        entries,
        manifest_path=m_path,
        manifest_length=len(m_bytes),
        spec=spec,
        schema=SCHEMA,
        added_snapshot_id=1234,
        sequence_number=6,
    )
    assert mf.partitions is not None and mf.partitions[0].lower_bound == to_bytes(
        DateType(), days[0]
    )
    list_path = _write(tmp_path, "snap-1234.avro", write_manifest_list([mf], 1234, 1000, 6))

    fileio = PyArrowFileIO()
    manifests = list(their_read_manifest_list(fileio.new_input(list_path)))
    assert len(manifests) == 1
    theirs = manifests[0]
    assert theirs.manifest_path == m_path and theirs.sequence_number == 6
    assert theirs.added_files_count == 2 and theirs.added_rows_count == 21
    assert theirs.partitions is not None
    assert theirs.partitions[0].lower_bound == to_bytes(DateType(), days[0])
    their_entries = theirs.fetch_manifest_entry(fileio)
    assert [e.status for e in their_entries] == [ManifestEntryStatus.ADDED] * 2
    assert [e.sequence_number for e in their_entries] == [6, 6]
    assert [e.snapshot_id for e in their_entries] == [1234, 1234]
    first = their_entries[0].data_file
    assert first.file_path == entries[0].data_file.file_path
    assert first.record_count == 10 and first.split_offsets == [4]
    assert first.lower_bounds == dict(entries[0].data_file.lower_bounds)
    assert first.value_counts == {1: 10, 2: 10}
    assert first.partition[0] == (days[0] - dt.date(1970, 1, 1)).days


def test_we_read_what_pyiceberg_wrote(tmp_path: Path) -> None:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}")
    catalog.create_namespace("ns")
    arrow_schema = pa.schema([pa.field("a", pa.int64()), pa.field("s", pa.string())])
    table = catalog.create_table("ns.t", schema=arrow_schema)
    table.append(pa.table({"a": [1, 2], "s": ["x", None]}, schema=arrow_schema))
    table.append(pa.table({"a": [3, 4, 5], "s": ["p", "q", "r"]}, schema=arrow_schema))
    snap = table.current_snapshot()
    assert snap is not None
    list_loc = snap.manifest_list
    manifests = read_manifest_list(Path(list_loc.removeprefix("file://")).read_bytes(), list_loc)
    assert sorted(m.added_rows_count for m in manifests) == [2, 3]
    assert {m.added_snapshot_id for m in manifests} == {
        s.snapshot_id for s in table.metadata.snapshots
    }
    schema = Schema.from_json(json.loads(table.metadata.schema().model_dump_json(by_alias=True)))
    rows = 0
    for m in manifests:
        entries = read_manifest(
            Path(m.manifest_path.removeprefix("file://")).read_bytes(), m.manifest_path, m
        )
        for e in entries:
            assert e.sequence_number == m.sequence_number and e.snapshot_id is not None
            rows += e.data_file.record_count
            lower, upper = decode_bounds(e.data_file, schema)
            assert lower[1] <= upper[1]
            assert e.data_file.file_path.endswith(".parquet")
    assert rows == 5


def test_manifest_list_round_trips() -> None:
    mf = ManifestFile("file:///m.avro", 123, 0, 0, 3, 1, 99, 1, 2, 0, 10, 20, 0, (), None)
    assert read_manifest_list(write_manifest_list([mf, mf], 99, None, 3), "l") == [mf, mf]


def test_a_manifest_list_is_the_avro_file_fastavro_would_write() -> None:
    """Records are encoded once per process and the block assembled by hand: the file must say
    exactly what fastavro's own writer says (PyIceberg reading it: the interop tests), with or
    without manifests, with partition summaries, on every repeat."""
    from datashard.iceberg.manifest import (
        FieldSummary,
    )

    many = [
        ManifestFile(
            f"file:///wh/t/metadata/{i}-m0.avro",
            5000 + i,
            0,
            i % 2,
            7 + i,
            3,
            99 + i,
            i,
            2 * i,
            0,
            10 * i,
            20,
            0,
            (FieldSummary(bool(i % 2), None, b"\x01", b"\x09"),) if i % 3 else (),
            b"k" if i == 4 else None,
        )
        for i in range(300)
    ]
    for _ in range(2):  # the second time from the per-process memo
        ours = write_manifest_list(many, 99, 98, 306)
        reference = io.BytesIO()
        fastavro.writer(
            reference,
            fastavro.parse_schema(MANIFEST_FILE_SCHEMA),
            [_manifest_file_record(m) for m in many],
            codec="deflate",
            metadata={
                "snapshot-id": "99",
                "parent-snapshot-id": "98",
                "sequence-number": "306",
                "format-version": "2",
            },
        )
        theirs = fastavro.reader(io.BytesIO(reference.getvalue()))
        mine = fastavro.reader(io.BytesIO(ours))
        assert mine.metadata == theirs.metadata and mine.writer_schema == theirs.writer_schema
        assert list(mine) == list(theirs)
        assert read_manifest_list(ours, "l") == many
    empty = write_manifest_list([], 5, None, 1)
    assert read_manifest_list(empty, "e") == [] and list(fastavro.reader(io.BytesIO(empty))) == []


def test_a_large_manifest_is_one_block_that_every_reader_takes() -> None:
    """Manifests reuse one header per schema and spec and hold one deflate block of records
    encoded by fastavro; a manifest far larger than fastavro's own block size reads back whole,
    through fastavro and through our reader, twice in a row (the second from the cached
    header)."""
    entries = [
        ManifestEntry(EXISTING, 5, 3, 3, _data_file(f"f{i}", 10 + i, i, 2 * i)) for i in range(2000)
    ]
    first = write_manifest(entries, SCHEMA, UNPARTITIONED, 9)
    second = write_manifest(entries[:1], SCHEMA, UNPARTITIONED, 9)
    assert len(first) > 16 * 1024  # compressed; several times fastavro's 16 KB block raw
    for data, expected in ((first, entries), (second, entries[:1])):
        avro = fastavro.reader(io.BytesIO(data))
        assert avro.metadata["partition-spec-id"] == "0" and avro.metadata["content"] == "data"
        assert json.loads(avro.metadata["schema"]) == SCHEMA.to_json()
        assert len(list(avro)) == len(expected)
        assert read_manifest(data, "m.avro") == expected
    assert read_manifest(write_manifest([], SCHEMA, UNPARTITIONED, 9), "e.avro") == []


@pytest.mark.parametrize("cut", [0, 10, 100, -20])
def test_truncated_or_corrupt_avro_names_the_file(cut: int) -> None:
    data = write_manifest(
        [ManifestEntry(ADDED, None, None, None, _data_file("a", 1, 1, 1))], SCHEMA, UNPARTITIONED, 9
    )
    bad = data[:cut]
    with pytest.raises(CorruptMetadataError, match="s3://b/t/metadata/m1.avro"):
        read_manifest(bad, "s3://b/t/metadata/m1.avro")
    lst = write_manifest_list(
        [ManifestFile("m", 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, None, None)], 1, None, 1
    )
    with pytest.raises(CorruptMetadataError, match="snap-1.avro"):
        read_manifest_list(lst[:cut], "snap-1.avro")


def test_a_manifest_shorter_than_its_listed_length_is_corrupt() -> None:
    entries = [ManifestEntry(ADDED, None, None, None, _data_file("a", 1, 1, 1))]
    data = write_manifest(entries, SCHEMA, UNPARTITIONED, 9)
    mf = build_manifest_file(
        entries,
        manifest_path="m.avro",
        manifest_length=len(data) + 1,
        spec=UNPARTITIONED,
        schema=SCHEMA,
        added_snapshot_id=9,
        sequence_number=1,
    )
    with pytest.raises(CorruptMetadataError, match="m.avro.*manifest list says"):
        read_manifest(data, "m.avro", mf)


def test_garbage_bytes_name_the_file() -> None:
    with pytest.raises(CorruptMetadataError, match="corrupt manifest list x.avro"):
        read_manifest_list(b"Obj\x01garbage" * 10, "x.avro")
    with pytest.raises(CorruptMetadataError, match="corrupt manifest y.avro"):
        read_manifest(b"{not avro}", "y.avro")


def test_partition_values_of_every_kind_round_trip_as_physical_values() -> None:
    schema = Schema(
        1,
        [
            {"id": 1, "name": "u", "type": "uuid"},
            {"id": 2, "name": "ts", "type": "timestamptz"},
            {"id": 3, "name": "p", "type": "decimal(9,2)"},
            {"id": 4, "name": "s", "type": "string"},
        ],
    )
    spec = PartitionSpec(
        0,
        tuple(
            PartitionField(i, 1000 + i, "identity", name)
            for i, name in ((1, "u"), (2, "ts"), (3, "p"), (4, "s"))
        ),
    )
    u = uuid.UUID(int=7)
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    df = DataFile(
        file_path="f",
        record_count=1,
        file_size_in_bytes=1,
        partition={"u": u, "ts": when, "p": Decimal("1.50"), "s": None},
    )
    data = write_manifest([ManifestEntry(ADDED, None, None, None, df)], schema, spec, 1)
    back = read_manifest(data, "m").pop().data_file.partition
    assert back == {"u": u, "ts": 1_714_564_800_000_000, "p": Decimal("1.50"), "s": None}
    with pytest.raises(ValidationError, match="not fields of the partition spec"):
        write_manifest(
            [
                ManifestEntry(
                    ADDED, None, None, None, dataclasses.replace(df, partition={"nope": 1})
                )
            ],
            schema,
            spec,
            1,
        )


# --------------------------------------------------------------------------------------------
# format version 3


def _listed(path: str, added: int, existing: int, first_row_id: int | None = None) -> ManifestFile:
    return ManifestFile(
        manifest_path=path,
        manifest_length=100,
        partition_spec_id=0,
        content=0,
        sequence_number=1,
        min_sequence_number=1,
        added_snapshot_id=1,
        added_files_count=1,
        existing_files_count=1,
        deleted_files_count=0,
        added_rows_count=added,
        existing_rows_count=existing,
        deleted_rows_count=0,
        first_row_id=first_row_id,
    )


def test_first_row_ids_are_assigned_as_the_specs_example_says() -> None:
    # the spec's Row Lineage example: next-row-id 1000, one manifest with ids, three new ones
    listed = [
        _listed("existing", 75, 0, 925),
        _listed("added1", 100, 25),
        _listed("added2", 0, 100),
        dataclasses.replace(_listed("deletes", 5, 0), content=1),
        _listed("added3", 125, 25),
    ]
    assigned, added_rows = assign_first_row_ids(listed, 1000)
    assert [m.first_row_id for m in assigned] == [925, 1000, 1125, None, 1225]
    assert added_rows == 375  # next-row-id becomes 1375
    # a manifest whose files all carry their first_row_id (a merge) hands out no ids
    exact, rows = assign_first_row_ids(listed, 1000, {"added1": 0})
    assert [m.first_row_id for m in exact] == [925, 1000, 1000, None, 1100] and rows == 250


def test_a_v3_manifest_round_trips_row_ids_and_vector_locations() -> None:
    entries = [
        ManifestEntry(EXISTING, 5, 1, 1, _data_file("a", 25, 0, 9, first_row_id=800)),
        ManifestEntry(DELETED, 5, 1, 1, _data_file("gone", 7, 0, 9)),  # no id: skipped
        ManifestEntry(ADDED, None, None, None, _data_file("b", 50, 0, 9)),
        ManifestEntry(ADDED, None, None, None, _data_file("c", 50, 0, 9)),
    ]
    data = write_manifest(entries, SCHEMA, UNPARTITIONED, 9, format_version=3)
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.metadata["format-version"] == "3"
    assert [r["data_file"]["first_row_id"] for r in reader] == [800, None, None, None]
    listed = dataclasses.replace(_listed("m", 100, 25, 1000), manifest_length=len(data))
    got = read_manifest(data, "m", listed)
    assert [e.data_file.first_row_id for e in got] == [800, None, 1000, 1050]
    dv = dataclasses.replace(
        _data_file("dv", 3, 0, 0),
        content=1,
        file_format="PUFFIN",
        referenced_data_file="file:///wh/t/data/b.parquet",
        content_offset=4,
        content_size_in_bytes=40,
    )
    deletes = write_manifest(
        [ManifestEntry(ADDED, None, None, None, dv)], SCHEMA, UNPARTITIONED, 9, 1, 3
    )
    (back,) = read_manifest(deletes, "d")
    assert (back.data_file.content_offset, back.data_file.content_size_in_bytes) == (4, 40)
    assert back.data_file.referenced_data_file == dv.referenced_data_file
    body = write_manifest_list([listed], 9, None, 2, format_version=3, first_row_id=1000)
    reader = fastavro.reader(io.BytesIO(body))
    assert [r["first_row_id"] for r in reader] == [1000]
    assert (reader.metadata["format-version"], reader.metadata["first-row-id"]) == ("3", "1000")
    with pytest.raises(ValidationError, match="first-row-id"):
        write_manifest_list([listed], 9, None, 2, format_version=3)
