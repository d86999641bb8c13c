"""Iceberg format version 3 tables, written here byte for byte as the spec says (Parquet data,
v3 manifests and manifest lists with row lineage, Puffin deletion vectors), read by datashard
exactly as DuckDB's Iceberg reader reads them: the same rows in ``to_arrow``, ``count``, time
travel and the row-group loader, on a local disk and on Ceph. A corrupted deletion vector is an
error naming its file, never wrong rows; datashard's writes to such a table keep its rows and
row ids as DuckDB reads them."""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import struct
import sys
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyroaring import BitMap64

from datashard import load_table
from datashard.errors import CorruptMetadataError, UnsupportedFeatureError, ValidationError
from datashard.iceberg.expressions import col
from datashard.io.loader import RowGroupLoader
from datashard.table.manifests import manifest_entries, read_manifest_files
from datashard.table.versions import key_for_uri


def _load_oracles() -> ModuleType:
    name = "datashard_tests_table_oracles"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("oracles.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


oracles = _load_oracles()

BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)

POS_FIELD_ID = 2147483645  # _pos: the field a deletion vector is computed for

#: Every column a v3 table here may have; DuckDB 1.5.5 reads only ``id`` and ``ts`` of them
#: (it does not know timestamptz_ns, unknown or geometry), PyIceberg 0.12 all but ``shape``.
ALL_FIELDS: list[dict[str, Any]] = [
    {"id": 1, "name": "id", "required": True, "type": "long"},
    {"id": 2, "name": "ts", "required": False, "type": "timestamp_ns"},
    {"id": 3, "name": "tz", "required": False, "type": "timestamptz_ns"},
    {"id": 4, "name": "nothing", "required": False, "type": "unknown"},
    {"id": 5, "name": "shape", "required": False, "type": "geometry"},
]
DUCKDB_FIELDS = ALL_FIELDS[:2]


def _schema_json(fields: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "struct", "schema-id": 0, "fields": list(fields)}


#: 2020-01-01T00:00:00 in nanoseconds; row ``i`` is ``i`` seconds and ``i`` nanoseconds later.
BASE_NS = 1_577_836_800_000_000_000


def _wkb_point(x: float, y: float) -> bytes:
    return struct.pack("<BIdd", 1, 1, x, y)


class _Wkb(pa.ExtensionType):
    """GeoArrow's WKB type: pyarrow writes a column of it as Parquet's GEOMETRY logical type,
    as a v3 writer stores geometry (not registered: only used to write)."""

    def __init__(self) -> None:
        super().__init__(pa.binary(), "geoarrow.wkb")

    def __arrow_ext_serialize__(self) -> bytes:
        return b"{}"

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> _Wkb:
        return _Wkb()


def _rows(ids: Sequence[int], names: Sequence[str] = ("id", "ts", "tz", "shape")) -> pa.Table:
    """Data rows as a v3 writer stores them (columns ``names``): no column for ``unknown``,
    WKB for geometry."""
    ns = [BASE_NS + i * 1_000_000_001 for i in ids]

    def fid(name: str, t: pa.DataType, n: int, nullable: bool = True) -> pa.Field:
        return pa.field(name, t, nullable=nullable, metadata={b"PARQUET:field_id": str(n)})

    schema = pa.schema(
        [
            fid("id", pa.int64(), 1, False),
            fid("ts", pa.timestamp("ns"), 2),
            fid("tz", pa.timestamp("ns", tz="UTC"), 3),
            fid("shape", _Wkb(), 5),
        ]
    )
    table = pa.table(
        [
            pa.array(ids, pa.int64()),
            pa.array(ns, pa.timestamp("ns")),
            pa.array(ns, pa.timestamp("ns", tz="UTC")),
            pa.ExtensionArray.from_storage(
                _Wkb(), pa.array([_wkb_point(i, -i) for i in ids], pa.binary())
            ),
        ],
        schema=schema,
    )
    return table.select([n for n in table.column_names if n in names])


# --------------------------------------------------------------------------------------------
# the v3 Avro schemas, from the spec's tables (field ids included)


def _opt(t: Any) -> list[Any]:
    return ["null", t]


def _int_map(fid: int, name: str, kid: int, vid: int, value: str) -> dict[str, Any]:
    return {
        "name": name,
        "field-id": fid,
        "default": None,
        "type": _opt(
            {
                "type": "array",
                "logicalType": "map",
                "items": {
                    "type": "record",
                    "name": f"k{kid}_v{vid}",
                    "fields": [
                        {"name": "key", "type": "int", "field-id": kid},
                        {"name": "value", "type": value, "field-id": vid},
                    ],
                },
            }
        ),
    }


ENTRY_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "manifest_entry",
        "fields": [
            {"name": "status", "type": "int", "field-id": 0},
            {"name": "snapshot_id", "type": _opt("long"), "field-id": 1, "default": None},
            {"name": "sequence_number", "type": _opt("long"), "field-id": 3, "default": None},
            {"name": "file_sequence_number", "type": _opt("long"), "field-id": 4, "default": None},
            {
                "name": "data_file",
                "field-id": 2,
                "type": {
                    "type": "record",
                    "name": "r2",
                    "fields": [
                        {"name": "content", "type": "int", "field-id": 134},
                        {"name": "file_path", "type": "string", "field-id": 100},
                        {"name": "file_format", "type": "string", "field-id": 101},
                        {
                            "name": "partition",
                            "field-id": 102,
                            "type": {"type": "record", "name": "r102", "fields": []},
                        },
                        {"name": "record_count", "type": "long", "field-id": 103},
                        {"name": "file_size_in_bytes", "type": "long", "field-id": 104},
                        _int_map(109, "value_counts", 119, 120, "long"),
                        _int_map(110, "null_value_counts", 121, 122, "long"),
                        _int_map(125, "lower_bounds", 126, 127, "bytes"),
                        _int_map(128, "upper_bounds", 129, 130, "bytes"),
                        {
                            "name": "first_row_id",
                            "type": _opt("long"),
                            "field-id": 142,
                            "default": None,
                        },
                        {
                            "name": "referenced_data_file",
                            "type": _opt("string"),
                            "field-id": 143,
                            "default": None,
                        },
                        {
                            "name": "content_offset",
                            "type": _opt("long"),
                            "field-id": 144,
                            "default": None,
                        },
                        {
                            "name": "content_size_in_bytes",
                            "type": _opt("long"),
                            "field-id": 145,
                            "default": None,
                        },
                    ],
                },
            },
        ],
    }
)

LIST_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "manifest_file",
        "fields": [
            {"name": "manifest_path", "type": "string", "field-id": 500},
            {"name": "manifest_length", "type": "long", "field-id": 501},
            {"name": "partition_spec_id", "type": "int", "field-id": 502},
            {"name": "content", "type": "int", "field-id": 517},
            {"name": "sequence_number", "type": "long", "field-id": 515},
            {"name": "min_sequence_number", "type": "long", "field-id": 516},
            {"name": "added_snapshot_id", "type": "long", "field-id": 503},
            {"name": "added_files_count", "type": "int", "field-id": 504},
            {"name": "existing_files_count", "type": "int", "field-id": 505},
            {"name": "deleted_files_count", "type": "int", "field-id": 506},
            {"name": "added_rows_count", "type": "long", "field-id": 512},
            {"name": "existing_rows_count", "type": "long", "field-id": 513},
            {"name": "deleted_rows_count", "type": "long", "field-id": 514},
            {"name": "first_row_id", "type": _opt("long"), "field-id": 520, "default": None},
        ],
    }
)


def _avro(schema: Any, records: list[dict[str, Any]], meta: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, schema, records, metadata=meta, codec="deflate")
    return buf.getvalue()


def deletion_vector_blob(positions: Sequence[int]) -> bytes:
    """A ``deletion-vector-v1`` blob: length, magic, portable 64-bit Roaring bitmap, CRC-32
    (the bitmap serialized by pyroaring, an encoder independent of datashard's decoder)."""
    bitmap = BitMap64(sorted(positions))
    bitmap.run_optimize()
    body = bytes.fromhex("D1D33964") + bitmap.serialize()
    return struct.pack(">I", len(body)) + body + struct.pack(">I", zlib.crc32(body))


def puffin_file(blobs: Sequence[tuple[str, bytes]]) -> tuple[bytes, list[tuple[int, int]]]:
    """A Puffin file of deletion-vector blobs (referenced data file, blob): its bytes and each
    blob's (offset, length)."""
    out = bytearray(b"PFA1")
    where: list[tuple[int, int]] = []
    meta = []
    for ref, blob in blobs:
        where.append((len(out), len(blob)))
        meta.append(
            {
                "type": "deletion-vector-v1",
                "fields": [POS_FIELD_ID],
                "snapshot-id": -1,
                "sequence-number": -1,
                "offset": len(out),
                "length": len(blob),
                "properties": {
                    "referenced-data-file": ref,
                    "cardinality": str(len(BitMap64.deserialize(blob[8:-4]))),
                },
            }
        )
        out += blob
    payload = json.dumps({"blobs": meta, "properties": {"created-by": "datashard tests"}})
    raw = payload.encode()
    out += b"PFA1" + raw + struct.pack("<i", len(raw)) + b"\x00\x00\x00\x00" + b"PFA1"
    return bytes(out), where


class V3Table:
    """Writes a format version 3 table commit by commit, as another engine would: each commit
    is a new ``v<N>.metadata.json`` with row lineage (``next-row-id``, ``first-row-id``,
    ``added-rows``, manifests' and data files' ``first_row_id``)."""

    def __init__(
        self, wh: Any, name: str = "t3", fields: Sequence[dict[str, Any]] = DUCKDB_FIELDS
    ) -> None:
        self.wh = wh
        self.schema = _schema_json(fields)
        self.names = [f["name"] for f in fields]
        self.backend = wh.backend
        self.name = name
        self.location = self.backend.uri_for(name)
        self.uuid = str(uuid.uuid4())
        self.version = 0
        self.seq = 0
        self.next_row_id = 0
        self.snapshots: list[dict[str, Any]] = []
        self.manifests: list[dict[str, Any]] = []  # of the current snapshot
        self.current: int | None = None
        self.data_files: list[str] = []
        self._write_metadata()

    def _put(self, key: str, data: bytes) -> str:
        self.backend.write(f"{self.name}/{key}", data)
        return self.backend.uri_for(f"{self.name}/{key}")

    def _write_metadata(self) -> None:
        self.version += 1
        md = {
            "format-version": 3,
            "table-uuid": self.uuid,
            "location": self.location,
            "last-sequence-number": self.seq,
            "last-updated-ms": 1_700_000_000_000 + self.version,
            "last-column-id": 5,
            "current-schema-id": 0,
            "schemas": [self.schema],
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "last-partition-id": 999,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": {},
            "current-snapshot-id": -1 if self.current is None else self.current,
            "refs": {}
            if self.current is None
            else {"main": {"snapshot-id": self.current, "type": "branch"}},
            "snapshots": self.snapshots,
            "snapshot-log": [
                {"timestamp-ms": s["timestamp-ms"], "snapshot-id": s["snapshot-id"]}
                for s in self.snapshots
            ],
            "metadata-log": [],
            "next-row-id": self.next_row_id,
        }
        self._put(f"metadata/v{self.version}.metadata.json", json.dumps(md).encode())

    def _commit(self, new: list[dict[str, Any]], operation: str, snapshot_id: int) -> None:
        """A snapshot of the current manifests plus ``new`` (data manifests among them get
        ``first_row_id`` from ``next-row-id``, as the spec's First Row ID Assignment says)."""
        first = self.next_row_id
        for m in new:
            if m["content"] == 0:
                m["first_row_id"] = self.next_row_id
                self.next_row_id += m["added_rows_count"] + m["existing_rows_count"]
        manifests = [*self.manifests, *new]
        body = _avro(
            LIST_SCHEMA,
            manifests,
            {
                "snapshot-id": str(snapshot_id),
                "parent-snapshot-id": str(self.current) if self.current else "null",
                "sequence-number": str(self.seq),
                "first-row-id": str(first),
                "format-version": "3",
            },
        )
        mlist = self._put(f"metadata/snap-{snapshot_id}-1-{uuid.uuid4()}.avro", body)
        snap: dict[str, Any] = {
            "snapshot-id": snapshot_id,
            "sequence-number": self.seq,
            "timestamp-ms": 1_700_000_000_000 + 1000 * self.seq,
            "manifest-list": mlist,
            "summary": {"operation": operation},
            "schema-id": 0,
            "first-row-id": first,
            "added-rows": self.next_row_id - first,
        }
        if self.current is not None:
            snap["parent-snapshot-id"] = self.current
        self.snapshots.append(snap)
        self.manifests = manifests
        self.current = snapshot_id
        self._write_metadata()

    def _manifest(
        self, entries: list[dict[str, Any]], content: int, snapshot_id: int
    ) -> dict[str, Any]:
        body = _avro(
            ENTRY_SCHEMA,
            entries,
            {
                "schema": json.dumps(self.schema),
                "schema-id": "0",
                "partition-spec": "[]",
                "partition-spec-id": "0",
                "format-version": "3",
                "content": "deletes" if content else "data",
            },
        )
        path = self._put(f"metadata/{uuid.uuid4()}-m0.avro", body)
        added = [e for e in entries if e["status"] == 1]
        return {
            "manifest_path": path,
            "manifest_length": len(body),
            "partition_spec_id": 0,
            "content": content,
            "sequence_number": self.seq,
            "min_sequence_number": self.seq,
            "added_snapshot_id": snapshot_id,
            "added_files_count": len(added),
            "existing_files_count": 0,
            "deleted_files_count": 0,
            "added_rows_count": sum(e["data_file"]["record_count"] for e in added),
            "existing_rows_count": 0,
            "deleted_rows_count": 0,
            "first_row_id": None,
        }

    def append(self, *chunks: Sequence[int], row_ids: Sequence[int | None] | None = None) -> int:
        """One snapshot adding a data file per chunk of ids; its snapshot id. ``row_ids``: a
        stored ``_row_id`` column (field id 2147483540) for the files, as a rewrite keeps."""
        self.seq += 1
        sid = 1000 + self.seq
        entries = []
        for ids in chunks:
            buf = io.BytesIO()
            rows = _rows(ids, self.names)
            if row_ids is not None:
                meta = {b"PARQUET:field_id": b"2147483540"}
                rows = rows.append_column(
                    pa.field("_row_id", pa.int64(), metadata=meta), pa.array(row_ids, pa.int64())
                )
            pq.write_table(rows, buf, row_group_size=100)
            data = buf.getvalue()
            path = self._put(f"data/{uuid.uuid4()}.parquet", data)
            self.data_files.append(path)
            lo, hi = BASE_NS + min(ids) * 1_000_000_001, BASE_NS + max(ids) * 1_000_000_001
            entries.append(
                {
                    "status": 1,
                    "snapshot_id": None,
                    "sequence_number": None,
                    "file_sequence_number": None,
                    "data_file": {
                        "content": 0,
                        "file_path": path,
                        "file_format": "PARQUET",
                        "partition": {},
                        "record_count": len(ids),
                        "file_size_in_bytes": len(data),
                        "value_counts": [{"key": 1, "value": len(ids)}],
                        "null_value_counts": [{"key": 1, "value": 0}],
                        "lower_bounds": [
                            {"key": 1, "value": struct.pack("<q", min(ids))},
                            {"key": 2, "value": struct.pack("<q", lo)},
                        ],
                        "upper_bounds": [
                            {"key": 1, "value": struct.pack("<q", max(ids))},
                            {"key": 2, "value": struct.pack("<q", hi)},
                        ],
                        "first_row_id": None,
                    },
                }
            )
        self._commit([self._manifest(entries, 0, sid)], "append", sid)
        return sid

    def delete_positions(
        self, vectors: dict[str, Sequence[int]], *, blobs: dict[str, bytes] | None = None
    ) -> tuple[int, str]:
        """One snapshot adding deletion vectors (positions by data file path) in one Puffin
        file (``blobs`` replaces a vector's bytes, to corrupt it); the snapshot id and the
        Puffin file's URI."""
        self.seq += 1
        sid = 1000 + self.seq
        made = [(ref, deletion_vector_blob(pos)) for ref, pos in vectors.items()]
        if blobs:
            made = [(ref, blobs.get(ref, blob)) for ref, blob in made]
        data, where = puffin_file(made)
        puffin = self._put(f"data/{uuid.uuid4()}-deletes.puffin", data)
        entries = [
            {
                "status": 1,
                "snapshot_id": None,
                "sequence_number": None,
                "file_sequence_number": None,
                "data_file": {
                    "content": 1,
                    "file_path": puffin,
                    "file_format": "PUFFIN",
                    "partition": {},
                    "record_count": len(set(vectors[ref])),
                    "file_size_in_bytes": len(data),
                    "value_counts": None,
                    "null_value_counts": None,
                    "lower_bounds": None,
                    "upper_bounds": None,
                    "first_row_id": None,
                    "referenced_data_file": ref,
                    "content_offset": offset,
                    "content_size_in_bytes": length,
                },
            }
            for (ref, _), (offset, length) in zip(made, where, strict=True)
        ]
        self._commit([self._manifest(entries, 1, sid)], "delete", sid)
        return sid, puffin

    def position_delete_file(self, positions: dict[str, Sequence[int]]) -> int:
        """One snapshot adding a v2 position delete file (left by a table upgraded from v2);
        its snapshot id."""
        self.seq += 1
        sid = 1000 + self.seq
        paths = sorted(positions)
        table = pa.table(
            {
                "file_path": pa.array([p for p in paths for _ in positions[p]], pa.string()),
                "pos": pa.array([q for p in paths for q in sorted(positions[p])], pa.int64()),
            },
            schema=pa.schema(
                [
                    pa.field("file_path", pa.string(), False, {b"PARQUET:field_id": b"2147483546"}),
                    pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": b"2147483545"}),
                ]
            ),
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        path = self._put(f"data/{uuid.uuid4()}-deletes.parquet", data)
        entry = {
            "status": 1,
            "snapshot_id": None,
            "sequence_number": None,
            "file_sequence_number": None,
            "data_file": {
                "content": 1,
                "file_path": path,
                "file_format": "PARQUET",
                "partition": {},
                "record_count": table.num_rows,
                "file_size_in_bytes": len(data),
                "value_counts": None,
                "null_value_counts": None,
                "lower_bounds": None,
                "upper_bounds": None,
                "first_row_id": None,
                "referenced_data_file": paths[0] if len(paths) == 1 else None,
            },
        }
        self._commit([self._manifest([entry], 1, sid)], "delete", sid)
        return sid

    def load(self) -> Any:
        return load_table(self.name, warehouse=self.wh.uri, **self.wh.options)


def _ids(arrow: pa.Table) -> list[int]:
    return sorted(arrow.column("id").to_pylist())


def _agree(table: Any, wh: Any, want: Sequence[int], snapshot_id: int | None = None) -> None:
    """datashard's to_arrow and count, and DuckDB, read exactly the ids ``want``."""
    want = sorted(want)
    if snapshot_id is None:
        assert _ids(table.to_arrow()) == want
        assert table.count() == len(want)
    else:
        assert _ids(table.scan(snapshot_id=snapshot_id).to_arrow()) == want
        assert table.scan(snapshot_id=snapshot_id).count() == len(want)
    assert oracles.duckdb_ids(table, wh, snapshot_id=snapshot_id) == want


def _v3_with_vectors(wh: Any, fields: Sequence[dict[str, Any]] = DUCKDB_FIELDS) -> Any:
    """A v3 table: snapshot 1 appends ids 0-299 and 300-499 (two files); snapshot 2 adds
    deletion vectors (4 rows of the first file, the 100 even positions of the second's first
    200); returns (builder, snapshot ids, ids left)."""
    t = V3Table(wh, fields=fields)
    s1 = t.append(range(0, 300), range(300, 500))
    f0, f1 = t.data_files
    s2, _ = t.delete_positions({f0: [0, 5, 150, 299], f1: list(range(0, 200, 2))})
    gone = {0, 5, 150, 299} | {300 + p for p in range(0, 200, 2)}
    return t, (s1, s2), [i for i in range(500) if i not in gone]


# --------------------------------------------------------------------------------------------
# deletion vectors in every read path


@BOTH
def test_deletion_vectors_hide_the_rows_duckdb_and_pyiceberg_hide(warehouse: Any) -> None:
    t, (s1, s2), left = _v3_with_vectors(warehouse)
    table = t.load()
    assert table.metadata.format_version == 3
    _agree(table, warehouse, left)
    assert oracles.pyiceberg_ids(table, warehouse) == left
    # time travel: before the vectors every row is there, for datashard and DuckDB alike
    _agree(table, warehouse, range(500), snapshot_id=s1)
    _agree(table, warehouse, left, snapshot_id=s2)
    # the row-group loader (files of 100-row groups) drops the same rows
    loaded = RowGroupLoader.from_table(table, columns=["id"]).to_arrow()
    assert _ids(loaded) == left


@BOTH
def test_a_v3_append_after_vectors_reads_and_lineage_advances(warehouse: Any) -> None:
    t, _, left = _v3_with_vectors(warehouse)
    s3 = t.append(range(500, 650))
    table = t.load()
    md = table.metadata
    # row lineage as written: 500 row ids for the first append, 150 for the third
    assert md.next_row_id == 650
    snap = md.snapshot_by_id(s3)
    assert snap is not None and (snap.first_row_id, snap.added_rows) == (500, 150)
    _agree(table, warehouse, [*left, *range(500, 650)])
    # a filter on the nanosecond timestamp prunes by the manifest bounds and keeps its rows
    cut = BASE_NS + 640 * 1_000_000_001
    at = dt.datetime(2020, 1, 1) + dt.timedelta(microseconds=(cut - BASE_NS) // 1000)
    scan = table.scan(filter=col("ts") >= at)
    assert len(list(scan.plan_files())) == 1
    assert _ids(scan.to_arrow()) == list(range(640, 650))
    assert oracles.duckdb_ids(table, warehouse, where="id >= 640") == list(range(640, 650))


def test_data_files_inherit_first_row_ids_from_their_manifest(local_wh: Any) -> None:
    t = V3Table(local_wh)
    t.append(range(0, 300), range(300, 500))
    t.append(range(500, 520))
    table = t.load()
    snap = table.current_snapshot()
    assert snap is not None
    got = {}
    for m in read_manifest_files(table.backend, snap):
        for e in manifest_entries(table.backend, m):
            got[e.data_file.file_path] = e.data_file.first_row_id
    assert [got[p] for p in t.data_files] == [0, 300, 500]


def test_a_vector_replaces_the_position_delete_files_of_its_data_file(local_wh: Any) -> None:
    # a table upgraded from v2 keeps a position delete file; a deletion vector written later
    # holds all deletes of its data file, so the older position deletes no longer apply
    t = V3Table(local_wh)
    t.append(range(0, 100), range(100, 200))
    f0, f1 = t.data_files
    t.position_delete_file({f0: [1, 2], f1: [3]})
    before = t.load()
    assert _ids(before.to_arrow()) == [i for i in range(200) if i not in (1, 2, 103)]
    t.delete_positions({f0: [1, 7]})  # 2 is not in the vector: the row is back
    table = t.load()
    want = [i for i in range(200) if i not in (1, 7, 103)]
    assert _ids(table.to_arrow()) == want
    assert table.count() == len(want)
    assert oracles.duckdb_ids(table, local_wh) == want


def test_the_spec_scope_rules_of_deletion_vectors() -> None:
    from datashard.iceberg.deletes import DeleteFile, DeleteIndex
    from datashard.iceberg.manifest import POSITION_DELETES, DataFile

    data = DataFile(file_path="s3://b/t/data/a.parquet", record_count=10, file_size_in_bytes=1)
    dv = DeleteFile(
        DataFile(
            file_path="s3://b/t/data/d.puffin",
            file_format="PUFFIN",
            content=POSITION_DELETES,
            record_count=1,
            file_size_in_bytes=100,
            referenced_data_file=data.file_path,
            content_offset=4,
            content_size_in_bytes=40,
        ),
        sequence_number=2,
        spec_id=0,
    )
    old = DeleteFile(
        DataFile(
            file_path="s3://b/t/data/p.parquet",
            content=POSITION_DELETES,
            record_count=1,
            file_size_in_bytes=100,
        ),
        sequence_number=2,
        spec_id=0,
    )
    index = DeleteIndex([dv, old])
    # data seq <= vector seq: the vector applies, and the position delete file does not
    assert index.for_data_file(data, 1, 0) == (dv,)
    assert index.for_data_file(data, 2, 0) == (dv,)
    # a data file committed after the vector: neither applies
    assert index.for_data_file(data, 3, 0) == ()
    # another data file: the vector does not name it, the position delete file may hold it
    other = DataFile(file_path="s3://b/t/data/b.parquet", record_count=10, file_size_in_bytes=1)
    assert index.for_data_file(other, 1, 0) == (old,)
    # a vector that names no data file cannot be applied: an error, not rows it deleted
    lost = DeleteFile(replace(dv.file, referenced_data_file=None), 2, 0)
    with pytest.raises(CorruptMetadataError, match="d.puffin.*referenced_data_file"):
        DeleteIndex([lost])


# --------------------------------------------------------------------------------------------
# v3 types


def test_v3_types_read_as_pyiceberg_reads_them(local_wh: Any) -> None:
    t = V3Table(local_wh, fields=ALL_FIELDS)
    t.append(range(0, 50))
    table = t.load()
    got = table.to_arrow().sort_by("id")
    assert got.schema.field("ts").type == pa.timestamp("ns")
    assert got.schema.field("tz").type == pa.timestamp("ns", tz="UTC")
    assert got.schema.field("nothing").type == pa.null()
    assert got.schema.field("shape").type == pa.binary()
    # nanoseconds survive: row i is i seconds and i nanoseconds after 2020-01-01
    ns = [BASE_NS + i * 1_000_000_001 for i in range(50)]
    assert got.column("ts").cast(pa.int64()).to_pylist() == ns
    assert got.column("tz").cast(pa.int64()).to_pylist() == ns
    assert got.column("nothing").null_count == 50
    assert got.column("shape").to_pylist() == [_wkb_point(i, -i) for i in range(50)]
    from pyiceberg.table import StaticTable

    theirs = (
        StaticTable.from_metadata(table.metadata_location)
        .scan(selected_fields=("id", "ts", "tz", "nothing"))
        .to_arrow()
        .sort_by("id")
    )
    assert theirs.equals(got.select(["id", "ts", "tz", "nothing"]))


def test_a_variant_column_is_refused_by_name_and_the_other_columns_read(local_wh: Any) -> None:
    fields = [*DUCKDB_FIELDS, {"id": 6, "name": "payload", "required": False, "type": "variant"}]
    t = V3Table(local_wh, fields=fields)
    t.append(range(0, 10))
    table = t.load()
    with pytest.raises(UnsupportedFeatureError, match="'payload'.*variant"):
        table.to_arrow()
    assert _ids(table.scan(columns=["id", "ts"]).to_arrow()) == list(range(10))
    assert table.count() == 10


# --------------------------------------------------------------------------------------------
# corrupt vectors: an error naming the Puffin file, never wrong rows


def _corrupt(blob: bytes, how: str) -> bytes:
    if how == "crc":
        return blob[:-1] + bytes([blob[-1] ^ 0xFF])
    if how == "magic":
        return blob[:4] + b"\x00\x00\x00\x00" + blob[8:]
    if how == "length":
        return struct.pack(">I", len(blob) - 7) + blob[4:]
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [("crc", "CRC-32"), ("magic", "magic"), ("length", "length field")],
)
def test_a_corrupt_deletion_vector_is_an_error_naming_its_file(
    local_wh: Any, how: str, message: str
) -> None:
    t = V3Table(local_wh)
    t.append(range(0, 100))
    (f0,) = t.data_files
    bad = _corrupt(deletion_vector_blob([3, 4]), how)
    _, puffin = t.delete_positions({f0: [3, 4]}, blobs={f0: bad})
    table = t.load()
    for read in (table.to_arrow, table.count):
        with pytest.raises(CorruptMetadataError, match=message) as info:
            read()
        assert puffin in str(info.value)


def test_a_truncated_puffin_file_is_an_error_naming_it(local_wh: Any) -> None:
    t = V3Table(local_wh)
    t.append(range(0, 100))
    (f0,) = t.data_files
    _, puffin = t.delete_positions({f0: [3, 4]})
    key = key_for_uri(t.backend, puffin)
    t.backend.write(key, t.backend.read(key)[:10])
    with pytest.raises(CorruptMetadataError, match="truncated") as info:
        t.load().to_arrow()
    assert puffin in str(info.value)


def test_a_vector_with_another_cardinality_than_its_entry_is_an_error(local_wh: Any) -> None:
    t = V3Table(local_wh)
    t.append(range(0, 100))
    (f0,) = t.data_files
    _, puffin = t.delete_positions({f0: [3, 4]}, blobs={f0: deletion_vector_blob([3, 4, 5])})
    with pytest.raises(CorruptMetadataError, match="holds 3 positions.*record_count\\) is 2"):
        t.load().count()


def test_the_puffin_footer_lists_the_blobs_the_manifest_points_at(local_wh: Any) -> None:
    from datashard.iceberg.puffin import DELETION_VECTOR_V1, footer_length, parse_footer

    t = V3Table(local_wh)
    t.append(range(0, 100), range(100, 200))
    f0, f1 = t.data_files
    _, puffin = t.delete_positions({f0: [1], f1: [2, 3]})
    data = t.backend.read(key_for_uri(t.backend, puffin))
    blobs = parse_footer(data[-footer_length(data[-12:], len(data), puffin) :], puffin)
    table = t.load()
    snap = table.current_snapshot()
    assert snap is not None
    dvs = [
        e.data_file
        for m in read_manifest_files(table.backend, snap)
        if m.content == 1
        for e in manifest_entries(table.backend, m)
    ]
    assert [(b.type, b.offset, b.length, b.properties["referenced-data-file"]) for b in blobs] == [
        (DELETION_VECTOR_V1, d.content_offset, d.content_size_in_bytes, d.referenced_data_file)
        for d in dvs
    ]


@pytest.mark.parametrize(
    "positions",
    [
        [0],
        list(range(70_000)),  # run and bitmap containers
        [7, 65_535, 65_536, 1 << 31, (1 << 32) + 5, (3 << 32) + 1],  # several 32-bit keys
        list(range(0, 1 << 20, 3)),
    ],
    ids=["one", "runs", "wide", "dense"],
)
def test_deletion_vectors_decode_to_the_positions_encoded(positions: list[int]) -> None:
    from datashard.iceberg.puffin import deletion_vector_positions

    got = deletion_vector_positions(deletion_vector_blob(positions), "mem://x.puffin")
    assert got.tolist() == sorted(positions)


# --------------------------------------------------------------------------------------------
# writes are refused, and change nothing


def test_writes_to_a_v3_table_of_another_writer_keep_its_rows_and_row_ids(local_wh: Any) -> None:
    t, _, left = _v3_with_vectors(local_wh)
    table = t.load()
    lineage = ["id", "_row_id", "_last_updated_sequence_number"]

    def rows(tb: Any) -> dict[int, tuple[Any, ...]]:
        got = tb.scan(columns=lineage).to_arrow()
        return {r[0]: r for r in zip(*(got.column(c).to_pylist() for c in lineage), strict=True)}

    before = rows(table)
    next_row_id = table.metadata.next_row_id
    table.append(_rows([1000], ("id", "ts")))
    table.set_properties({"write.delete.mode": "merge-on-read"})
    table.delete(col("id").isin([1, 301]))  # merged into the other writer's vectors
    table.set_properties({"write.delete.mode": "copy-on-write"})
    table.delete(col("id") == 2)
    want = sorted({*left, 1000} - {1, 2, 301})
    _agree(table, local_wh, want)
    assert oracles.pyiceberg_ids(table, local_wh) == want
    table.compact()
    _agree(table, local_wh, want)
    after = rows(table)
    assert all(after[i] == before[i] for i in want if i != 1000)  # ids and sequence numbers
    assert after[1000][1] == next_row_id  # the appended row took the table's next row id
    duck = oracles.duckdb_rows(table, local_wh, ", ".join(lineage))
    assert sorted(duck) == sorted(after.values())


def test_a_v2_table_cannot_be_created_with_a_v3_type(local_wh: Any) -> None:
    from datashard import Schema, create_table
    from datashard.errors import SchemaError

    schema = Schema(0, DUCKDB_FIELDS)
    with pytest.raises(SchemaError, match="ts: timestamp_ns"):
        create_table("t2", schema, warehouse=local_wh.uri)
    assert local_wh.keys() == []
    table = create_table("t2", Schema(0, DUCKDB_FIELDS[:1]), warehouse=local_wh.uri)
    before = local_wh.snapshot_of_storage()
    with pytest.raises(SchemaError, match="shape: geometry"):
        table.update_schema().add_column("shape", "geometry").commit()
    assert local_wh.snapshot_of_storage() == before
    assert [f.name for f in load_table("t2", warehouse=local_wh.uri).schema().fields] == ["id"]


# --------------------------------------------------------------------------------------------
# row lineage


@BOTH
def test_row_lineage_columns_read_as_the_spec_inherits_them(warehouse: Any) -> None:
    # ids were written so that each row's id is its row id: file 1 holds ids 0-299 (first row
    # id 0), file 2 ids 300-499 (300), the third append ids 500-649 (500)
    t, _, left = _v3_with_vectors(warehouse)
    t.append(range(500, 650))
    table = t.load()
    columns = ["id", "_row_id", "_last_updated_sequence_number"]
    got = table.scan(columns=columns).to_arrow()
    assert got.column_names == columns
    assert got.schema.field("_row_id").type == pa.int64()
    rows = sorted(zip(*(got.column(c).to_pylist() for c in columns), strict=True))
    # the first append was sequence number 1, the vectors 2, the last append 3
    want = [(i, i, 1) for i in left] + [(i, i, 3) for i in range(500, 650)]
    assert rows == want  # deleted rows are gone, positions count from each file's first row
    # streamed by row group, with a filter, the same values
    streamed = pa.Table.from_batches(
        list(table.scan(columns=columns, filter=col("id") >= 480).to_batches(batch_size=7))
    )
    assert sorted(zip(*(streamed.column(c).to_pylist() for c in columns), strict=True)) == [
        r for r in want if r[0] >= 480
    ]


def test_stored_row_ids_win_over_inherited_ones(local_wh: Any) -> None:
    # a file rewritten by an engine keeps its rows' ids in a _row_id column (field id
    # 2147483540); nulls in it are inherited (first_row_id + position)
    t = V3Table(local_wh)
    t.append(range(0, 10), row_ids=[100 + i if i % 2 else None for i in range(10)])
    got = t.load().scan(columns=["id", "_row_id"]).to_arrow().to_pylist()
    assert [r["_row_id"] for r in got] == [100 + i if i % 2 else i for i in range(10)]


def test_row_lineage_columns_are_refused_on_a_v2_table(local_wh: Any) -> None:
    from datashard import Schema, create_table

    table = create_table(
        "v2",
        Schema(0, [{"id": 1, "name": "n", "type": "long", "required": True}]),
        warehouse=local_wh.uri,
    )
    table.append_records([{"n": 1}])
    with pytest.raises(ValidationError, match=r"'_row_id': row lineage exists in format version 3"):
        table.scan(columns=["n", "_row_id"])
