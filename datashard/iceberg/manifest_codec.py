"""The Avro codec of manifests and manifest lists (the model is :mod:`datashard.iceberg.manifest`).

Both are Avro object container files with the Iceberg v2 schemas of
:mod:`datashard.iceberg.avro_schemas` (field ids included) and the key/value metadata the spec
requires.

Sequence numbers and snapshot ids of ADDED entries may be left ``None``: they are written as
null and *inherited* from the manifest's :class:`ManifestFile` on read (pass it to
:func:`read_manifest`). A manifest written that way stays valid when a commit is retried on
a newer base with another sequence number. Unreadable files raise
:class:`~datashard.errors.CorruptMetadataError` naming the file.

Format version 3 manifests and manifest lists read and write too (``format_version=3``):
``first_row_id`` (inherited by the live data files without one as the spec says), and a
deletion vector's ``referenced_data_file``, ``content_offset`` and ``content_size_in_bytes``.
"""

from __future__ import annotations

import functools
import io
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import fastavro

from datashard.errors import CorruptMetadataError, DataShardError, ValidationError
from datashard.iceberg.avro_schemas import (
    MANIFEST_FILE_SCHEMA,
    MANIFEST_FILE_SCHEMA_V3,
    manifest_entry_schema,
)
from datashard.iceberg.conversions import from_bytes, to_bytes, to_physical
from datashard.iceberg.manifest import (
    ADDED,
    DATA,
    DELETED,
    EQUALITY_DELETES,
    EXISTING,
    MANIFEST_DATA,
    MANIFEST_DELETES,
    POSITION_DELETES,
    DataFile,
    FieldSummary,
    ManifestEntry,
    ManifestFile,
)
from datashard.iceberg.metadata import FORMAT_VERSION, PartitionSpec, transform_result_type
from datashard.iceberg.metadata_codec import spec_to_json
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import DoubleType, FloatType, StructType, UUIDType

_CODEC = "deflate"


# ---------------------------------------------------------------------------------------------
# writing


def _map(m: Mapping[int, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in sorted(m.items())]


def _avro_partition(partition: Mapping[str, Any], ptype: StructType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in ptype.fields:
        v = partition.get(f.name)
        if v is not None:
            v = to_physical(f.field_type, v)
            if isinstance(f.field_type, UUIDType):
                v = v.bytes
        out[f.name] = v
    unknown = set(partition) - {f.name for f in ptype.fields}
    if unknown:
        raise ValidationError(
            f"partition values {sorted(unknown)} are not fields of the partition spec "
            f"{[f.name for f in ptype.fields]}"
        )
    return out


def _entry_record(
    e: ManifestEntry, snapshot_id: int | None, ptype: StructType, format_version: int
) -> dict[str, Any]:
    f = e.data_file
    record: dict[str, Any] = {
        "status": e.status,
        "snapshot_id": e.snapshot_id if e.snapshot_id is not None else snapshot_id,
        "sequence_number": e.sequence_number,
        "file_sequence_number": e.file_sequence_number,
        "data_file": {
            "content": f.content,
            "file_path": f.file_path,
            "file_format": f.file_format,
            "partition": _avro_partition(f.partition, ptype),
            "record_count": f.record_count,
            "file_size_in_bytes": f.file_size_in_bytes,
            "column_sizes": _map(f.column_sizes),
            "value_counts": _map(f.value_counts),
            "null_value_counts": _map(f.null_value_counts),
            "nan_value_counts": _map(f.nan_value_counts),
            "lower_bounds": _map(f.lower_bounds),
            "upper_bounds": _map(f.upper_bounds),
            "key_metadata": f.key_metadata,
            "split_offsets": list(f.split_offsets) if f.split_offsets is not None else None,
            "equality_ids": list(f.equality_ids) if f.equality_ids is not None else None,
            "sort_order_id": f.sort_order_id,
            "referenced_data_file": f.referenced_data_file,
        },
    }
    if format_version >= 3:
        record["data_file"].update(
            first_row_id=f.first_row_id,
            content_offset=f.content_offset,
            content_size_in_bytes=f.content_size_in_bytes,
        )
    return record


@functools.lru_cache(maxsize=64)
def _parsed_entry_schema(partition_type: StructType, format_version: int = 2) -> Any:
    return fastavro.parse_schema(manifest_entry_schema(partition_type, format_version))


_PARSED_MANIFEST_FILE_SCHEMA = fastavro.parse_schema(MANIFEST_FILE_SCHEMA)
_PARSED_MANIFEST_FILE_SCHEMA_V3 = fastavro.parse_schema(MANIFEST_FILE_SCHEMA_V3)


def _write_avro(
    parsed: Any, records: Iterable[dict[str, Any]], metadata: Mapping[str, str]
) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, parsed, records, codec=_CODEC, metadata=dict(metadata))
    return buf.getvalue()


def write_manifest(
    entries: Sequence[ManifestEntry],
    schema: Schema,
    spec: PartitionSpec,
    snapshot_id: int | None,
    content: int = MANIFEST_DATA,
    format_version: int = FORMAT_VERSION,
) -> bytes:
    """The bytes of a manifest of ``format_version`` (2 or 3) holding ``entries``.

    ``snapshot_id`` fills entries whose ``snapshot_id`` is ``None``; pass ``None`` to write
    them as null (inherited from the manifest list's ``added_snapshot_id`` on read). Entry
    sequence numbers are written as given (``None`` = inherit: only valid for ADDED entries),
    and so are a version 3 data file's ``first_row_id`` (``None`` = inherit).
    """
    ptype = spec.partition_type(schema)
    avro_schema = _parsed_entry_schema(ptype, format_version)
    metadata = {
        "schema": json.dumps(schema.to_json(), separators=(",", ":")),
        "schema-id": str(schema.schema_id),
        "partition-spec": json.dumps(spec_to_json(spec)["fields"], separators=(",", ":")),
        "partition-spec-id": str(spec.spec_id),
        "format-version": str(format_version),
        "content": "deletes" if content == MANIFEST_DELETES else "data",
    }
    for e in entries:
        if e.status != ADDED and (e.sequence_number is None or e.file_sequence_number is None):
            raise ValidationError(
                f"manifest entry for {e.data_file.file_path} has status {e.status} but no "
                "sequence number; only ADDED entries may inherit theirs"
            )
    header = _manifest_header(ptype, tuple(metadata.items()), format_version)
    return _container(
        header,
        [
            _encode(avro_schema, _entry_record(e, snapshot_id, ptype, format_version))
            for e in entries
        ],
    )


@functools.lru_cache(maxsize=64)
def _manifest_header(
    partition_type: StructType, metadata: tuple[tuple[str, str], ...], format_version: int
) -> bytes:
    """The Avro header of a manifest (schema, metadata, sync marker): the same for every
    manifest of one table schema, spec, content and format version, so made once by fastavro
    and reused."""
    return _write_avro(_parsed_entry_schema(partition_type, format_version), (), dict(metadata))


def _encode(parsed: Any, record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def _container(header: bytes, encoded: Sequence[bytes]) -> bytes:
    """An Avro object container file: ``header`` (fastavro's, ending in the file's sync marker),
    then the encoded records as one deflate block (raw RFC 1951, as Avro's codec says)."""
    if not encoded:
        return header
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    block = deflate.compress(b"".join(encoded)) + deflate.flush()
    return b"".join([header, _avro_long(len(encoded)), _avro_long(len(block)), block, header[-16:]])


def _manifest_file_record(m: ManifestFile) -> dict[str, Any]:
    """The manifest-list record of ``m`` (``first_row_id`` is only in the v3 schema)."""
    return {
        "manifest_path": m.manifest_path,
        "manifest_length": m.manifest_length,
        "partition_spec_id": m.partition_spec_id,
        "content": m.content,
        "sequence_number": m.sequence_number,
        "min_sequence_number": m.min_sequence_number,
        "added_snapshot_id": m.added_snapshot_id,
        "added_files_count": m.added_files_count,
        "existing_files_count": m.existing_files_count,
        "deleted_files_count": m.deleted_files_count,
        "added_rows_count": m.added_rows_count,
        "existing_rows_count": m.existing_rows_count,
        "deleted_rows_count": m.deleted_rows_count,
        "partitions": None
        if m.partitions is None
        else [
            {
                "contains_null": p.contains_null,
                "contains_nan": p.contains_nan,
                "lower_bound": p.lower_bound,
                "upper_bound": p.upper_bound,
            }
            for p in m.partitions
        ],
        "key_metadata": m.key_metadata,
        "first_row_id": m.first_row_id,
    }


def write_manifest_list(
    manifests: Sequence[ManifestFile],
    snapshot_id: int,
    parent_snapshot_id: int | None,
    sequence_number: int,
    *,
    format_version: int = FORMAT_VERSION,
    first_row_id: int | None = None,
) -> bytes:
    """The bytes of a manifest list of ``format_version`` (2 or 3) for snapshot
    ``snapshot_id``; a version 3 list records the snapshot's ``first_row_id`` and each
    manifest's (assigned by :func:`assign_first_row_ids`)."""
    metadata = {
        "snapshot-id": str(snapshot_id),
        "parent-snapshot-id": "null" if parent_snapshot_id is None else str(parent_snapshot_id),
        "sequence-number": str(sequence_number),
        "format-version": str(format_version),
    }
    parsed = _PARSED_MANIFEST_FILE_SCHEMA
    if format_version >= 3:
        if first_row_id is None:
            raise ValidationError("a format version 3 manifest list needs the first-row-id")
        metadata["first-row-id"] = str(first_row_id)
        parsed = _PARSED_MANIFEST_FILE_SCHEMA_V3
    # The header (schema, metadata, sync marker) from fastavro, the one data block from the
    # records' encodings, each made once per process: a list repeats its parent's manifests,
    # so encoding only the new ones keeps an old table's commit as cheap as a young one's.
    header = _write_avro(parsed, (), metadata)
    return _container(header, [_manifest_file_bytes(m, format_version) for m in manifests])


def assign_first_row_ids(
    manifests: Sequence[ManifestFile],
    first_row_id: int,
    unassigned: Mapping[str, int] | None = None,
) -> tuple[list[ManifestFile], int]:
    """Format version 3's First Row ID Assignment: ``manifests`` with every data manifest that
    has no ``first_row_id`` given one, in order, from ``first_row_id`` on, and the number of
    row ids assigned (the snapshot's ``added-rows``). Each takes the next id after the rows the
    previous one may hand out: ``unassigned[path]`` when the caller knows how many of its data
    files have no ``first_row_id`` (rows), else its added and existing rows, as the spec
    recommends. Delete manifests and manifests with one keep theirs."""
    out: list[ManifestFile] = []
    next_id = first_row_id
    for m in manifests:
        if m.content != MANIFEST_DATA or m.first_row_id is not None:
            out.append(m)
            continue
        out.append(replace(m, first_row_id=next_id))
        known = None if unassigned is None else unassigned.get(m.manifest_path)
        next_id += known if known is not None else m.added_rows_count + m.existing_rows_count
    return out, next_id - first_row_id


def unassigned_rows(entries: Sequence[ManifestEntry]) -> int:
    """The rows of the live data files among ``entries`` that have no ``first_row_id``: those
    that inherit a row id range from their manifest."""
    return sum(
        e.data_file.record_count
        for e in entries
        if e.is_live and e.data_file.content == DATA and e.data_file.first_row_id is None
    )


def _avro_long(n: int) -> bytes:
    """``n`` in Avro's zig-zag variable-length encoding."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: Avro encodings of manifest-list records, by the ManifestFile they encode (identity).
_RECORD_BYTES: dict[tuple[int, int], tuple[ManifestFile, bytes]] = {}
_RECORD_MEMO_LIMIT = 4096


def _manifest_file_bytes(m: ManifestFile, format_version: int) -> bytes:
    memo = (id(m), format_version)
    hit = _RECORD_BYTES.get(memo)
    if hit is not None and hit[0] is m:
        return hit[1]
    parsed = (
        _PARSED_MANIFEST_FILE_SCHEMA_V3 if format_version >= 3 else _PARSED_MANIFEST_FILE_SCHEMA
    )
    data = _encode(parsed, _manifest_file_record(m))
    if len(_RECORD_BYTES) >= _RECORD_MEMO_LIMIT:
        _RECORD_BYTES.clear()
    _RECORD_BYTES[memo] = (m, data)  # holding m keeps its id from being reused
    return data


def build_manifest_file(
    entries: Sequence[ManifestEntry],
    *,
    manifest_path: str,
    manifest_length: int,
    spec: PartitionSpec,
    schema: Schema,
    added_snapshot_id: int,
    sequence_number: int,
    content: int = MANIFEST_DATA,
) -> ManifestFile:
    """The manifest-list row of a manifest just written from ``entries``.

    Counts files and rows by status, sets ``min_sequence_number`` to the smallest data sequence
    number of the live entries (``sequence_number`` for inherited ones) and summarizes every
    partition field.
    """
    counts = {EXISTING: [0, 0], ADDED: [0, 0], DELETED: [0, 0]}
    min_seq = sequence_number
    for e in entries:
        c = counts[e.status]
        c[0] += 1
        c[1] += e.data_file.record_count
        if e.status != DELETED and e.sequence_number is not None:
            min_seq = min(min_seq, e.sequence_number)
    return ManifestFile(
        manifest_path=manifest_path,
        manifest_length=manifest_length,
        partition_spec_id=spec.spec_id,
        content=content,
        sequence_number=sequence_number,
        min_sequence_number=min_seq,
        added_snapshot_id=added_snapshot_id,
        added_files_count=counts[ADDED][0],
        existing_files_count=counts[EXISTING][0],
        deleted_files_count=counts[DELETED][0],
        added_rows_count=counts[ADDED][1],
        existing_rows_count=counts[EXISTING][1],
        deleted_rows_count=counts[DELETED][1],
        partitions=_summaries(entries, spec.partition_type(schema)),
    )


def _summaries(entries: Sequence[ManifestEntry], ptype: StructType) -> tuple[FieldSummary, ...]:
    out = []
    for f in ptype.fields:
        values = [e.data_file.partition.get(f.name) for e in entries]
        present = [to_physical(f.field_type, v) for v in values if v is not None]
        is_float = isinstance(f.field_type, (FloatType, DoubleType))
        nan = [v for v in present if is_float and v != v]
        ordered = [v for v in present if not (is_float and v != v)]
        out.append(
            FieldSummary(
                contains_null=len(present) < len(values),
                contains_nan=bool(nan) if is_float else False,
                lower_bound=to_bytes(f.field_type, min(ordered)) if ordered else None,
                upper_bound=to_bytes(f.field_type, max(ordered)) if ordered else None,
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# reading


def _read_avro(data: bytes, location: str, what: str) -> tuple[dict[str, str], list[Any]]:
    try:
        reader = fastavro.reader(io.BytesIO(bytes(data)))
        records = list(reader)
        meta = {
            k: v.decode() if isinstance(v, bytes) else str(v) for k, v in reader.metadata.items()
        }
    except Exception as exc:  # fastavro raises many unrelated types for bad bytes
        raise CorruptMetadataError(
            f"corrupt {what} {location}: not a readable Avro file ({type(exc).__name__}: "
            f"{exc}); the file may be truncated"
        ) from exc
    return meta, records


def _get_map(rec: Mapping[str, Any], key: str) -> dict[int, Any]:
    raw = rec.get(key)
    if raw is None:
        return {}
    if isinstance(raw, Mapping):  # a writer may use an Avro map with string keys
        return {int(k): v for k, v in raw.items()}
    return {int(kv["key"]): kv["value"] for kv in raw}


def _partition_values(
    raw: Mapping[str, Any] | None, location: str, schema: Schema | None, spec_fields: list[Any]
) -> dict[str, Any]:
    if not raw:
        return {}
    out = dict(raw)
    if schema is None:
        return out
    for pf in spec_fields:
        name = pf.get("name")
        if name in out and out[name] is not None:
            try:
                src = schema.find_type(int(pf["source-id"]))
                out[name] = to_physical(transform_result_type(str(pf["transform"]), src), out[name])
            except (DataShardError, KeyError, ValueError, TypeError):
                pass
    return out


def read_manifest(
    data: bytes, location: str, manifest: ManifestFile | None = None
) -> list[ManifestEntry]:
    """The entries of the manifest ``data`` read from ``location``.

    With ``manifest`` (its row in the manifest list), null snapshot ids and the sequence numbers
    of ADDED entries are inherited from it, as the spec says, and the byte length is checked
    against ``manifest_length`` (Avro alone cannot tell a file cut at a block boundary). Raises
    :class:`CorruptMetadataError` naming ``location`` for a truncated or malformed file.
    """
    if manifest is not None and manifest.manifest_length != len(data):
        raise CorruptMetadataError(
            f"corrupt manifest {location}: {len(data)} bytes, but the manifest list says "
            f"{manifest.manifest_length}; the file is truncated or was replaced"
        )
    meta, records = _read_avro(data, location, "manifest")
    schema: Schema | None = None
    spec_fields: list[Any] = []
    try:
        if "schema" in meta:
            schema = Schema.from_json(json.loads(meta["schema"]))
        if "partition-spec" in meta:
            spec_fields = list(json.loads(meta["partition-spec"]))
    except (ValueError, DataShardError):
        schema = None
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(_entry(rec, manifest, location, schema, spec_fields))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptMetadataError(
                f"corrupt manifest {location}: entry {i} is malformed ({type(exc).__name__}: {exc})"
            ) from exc
    if manifest is not None and manifest.first_row_id is not None:
        out = inherit_row_ids(out, manifest.first_row_id)
    return out


def inherit_row_ids(entries: list[ManifestEntry], first_row_id: int) -> list[ManifestEntry]:
    """Format version 3: each live data file without a ``first_row_id`` takes the manifest's
    plus the record counts of the live files before it that had none (the spec's First Row ID
    Inheritance; DELETED entries are skipped, as the Java reference reader does)."""
    out = []
    next_id = first_row_id
    for e in entries:
        df = e.data_file
        if df.content == DATA and df.first_row_id is None and e.status != DELETED:
            e = ManifestEntry(
                e.status,
                e.snapshot_id,
                e.sequence_number,
                e.file_sequence_number,
                replace(df, first_row_id=next_id),
            )
            next_id += df.record_count
        out.append(e)
    return out


def _entry(
    rec: Mapping[str, Any],
    manifest: ManifestFile | None,
    location: str,
    schema: Schema | None,
    spec_fields: list[Any],
) -> ManifestEntry:
    status = int(rec["status"])
    if status not in (EXISTING, ADDED, DELETED):
        raise ValueError(f"status {status} is not 0, 1 or 2")
    df = rec["data_file"]
    content = int(df.get("content") or 0)
    if content not in (DATA, POSITION_DELETES, EQUALITY_DELETES):
        raise ValueError(f"data_file.content {content} is not 0, 1 or 2")
    offsets = df.get("split_offsets")
    eq_ids = df.get("equality_ids")
    data_file = DataFile(
        content=content,
        file_path=str(df["file_path"]),
        file_format=str(df["file_format"]).upper(),
        partition=_partition_values(df.get("partition"), location, schema, spec_fields),
        record_count=int(df["record_count"]),
        file_size_in_bytes=int(df["file_size_in_bytes"]),
        column_sizes=_get_map(df, "column_sizes"),
        value_counts=_get_map(df, "value_counts"),
        null_value_counts=_get_map(df, "null_value_counts"),
        nan_value_counts=_get_map(df, "nan_value_counts"),
        lower_bounds=_get_map(df, "lower_bounds"),
        upper_bounds=_get_map(df, "upper_bounds"),
        key_metadata=df.get("key_metadata"),
        split_offsets=tuple(offsets) if offsets is not None else None,
        equality_ids=tuple(eq_ids) if eq_ids is not None else None,
        sort_order_id=df.get("sort_order_id"),
        referenced_data_file=df.get("referenced_data_file"),
        content_offset=df.get("content_offset"),
        content_size_in_bytes=df.get("content_size_in_bytes"),
        first_row_id=df.get("first_row_id"),
    )
    snapshot_id = rec.get("snapshot_id")
    seq = rec.get("sequence_number")
    file_seq = rec.get("file_sequence_number")
    if manifest is not None:
        if snapshot_id is None:
            snapshot_id = manifest.added_snapshot_id
        if status == ADDED:
            seq = manifest.sequence_number if seq is None else seq
            file_seq = manifest.sequence_number if file_seq is None else file_seq
        elif manifest.sequence_number == 0:  # a v1 manifest carried into v2: sequence 0
            seq = 0 if seq is None else seq
            file_seq = 0 if file_seq is None else file_seq
    return ManifestEntry(status, snapshot_id, seq, file_seq, data_file)


def _first(rec: Mapping[str, Any], *names: str, default: Any = ...) -> Any:
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    if default is ...:
        raise KeyError(names[0])
    return default


def read_manifest_list(data: bytes, location: str) -> list[ManifestFile]:
    """The manifests listed in the manifest list ``data`` read from ``location``.

    Raises :class:`CorruptMetadataError` naming ``location`` for a truncated or malformed file.
    """
    _, records = _read_avro(data, location, "manifest list")
    out = []
    for i, rec in enumerate(records):
        try:
            parts = rec.get("partitions")
            out.append(
                ManifestFile(
                    manifest_path=str(rec["manifest_path"]),
                    manifest_length=int(rec["manifest_length"]),
                    partition_spec_id=int(rec["partition_spec_id"]),
                    content=int(_first(rec, "content", default=MANIFEST_DATA)),
                    sequence_number=int(_first(rec, "sequence_number", default=0)),
                    min_sequence_number=int(_first(rec, "min_sequence_number", default=0)),
                    added_snapshot_id=int(rec["added_snapshot_id"]),
                    added_files_count=int(
                        _first(rec, "added_files_count", "added_data_files_count", default=0)
                    ),
                    existing_files_count=int(
                        _first(rec, "existing_files_count", "existing_data_files_count", default=0)
                    ),
                    deleted_files_count=int(
                        _first(rec, "deleted_files_count", "deleted_data_files_count", default=0)
                    ),
                    added_rows_count=int(_first(rec, "added_rows_count", default=0)),
                    existing_rows_count=int(_first(rec, "existing_rows_count", default=0)),
                    deleted_rows_count=int(_first(rec, "deleted_rows_count", default=0)),
                    partitions=None
                    if parts is None
                    else tuple(
                        FieldSummary(
                            bool(p["contains_null"]),
                            p.get("contains_nan"),
                            p.get("lower_bound"),
                            p.get("upper_bound"),
                        )
                        for p in parts
                    ),
                    key_metadata=rec.get("key_metadata"),
                    first_row_id=rec.get("first_row_id"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptMetadataError(
                f"corrupt manifest list {location}: entry {i} is malformed "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return out


def read_manifest_list_paths(data: bytes, location: str) -> tuple[str | None, list[str]]:
    """The ``parent-snapshot-id`` a manifest list records in its header (``None`` when it
    has none) and the paths of the manifests it lists: what cleanup needs, without building
    each :class:`ManifestFile`."""
    header, records = _read_avro(data, location, "manifest list")
    try:
        paths = [str(rec["manifest_path"]) for rec in records]
    except (KeyError, TypeError) as exc:
        raise CorruptMetadataError(
            f"corrupt manifest list {location}: an entry has no manifest_path ({exc})"
        ) from exc
    parent = header.get("parent-snapshot-id")
    return (parent if parent and parent.lstrip("-").isdigit() else None), paths


def decode_bounds(data_file: DataFile, schema: Schema) -> tuple[dict[int, Any], dict[int, Any]]:
    """The lower and upper bounds of ``data_file`` decoded to physical values by field id.

    Bounds of ids the schema does not know, or that do not decode, are left out.
    """
    lower: dict[int, Any] = {}
    upper: dict[int, Any] = {}
    for target, source in ((lower, data_file.lower_bounds), (upper, data_file.upper_bounds)):
        for fid, raw in source.items():
            if fid in schema.field_ids:
                t = schema.find_type(fid)
                if t.is_primitive:
                    try:
                        target[fid] = from_bytes(t, raw)
                    except DataShardError:
                        continue
    return lower, upper


__all__ = [
    "assign_first_row_ids",
    "build_manifest_file",
    "decode_bounds",
    "inherit_row_ids",
    "read_manifest",
    "read_manifest_list",
    "read_manifest_list_paths",
    "unassigned_rows",
    "write_manifest",
    "write_manifest_list",
]
