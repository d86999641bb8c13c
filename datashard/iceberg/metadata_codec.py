"""Table metadata JSON: :class:`TableMetadata` to and from the bytes of ``*.metadata.json``.

Field names are the Iceberg spec's (``format-version``, ``table-uuid``, ``snapshots``,
``snapshot-log``, ``metadata-log``, ``refs`` ...). Reading accepts what other Iceberg writers
produce (PyIceberg, Java): ``current-snapshot-id`` of ``-1`` or ``null``, absent optional
lists, gzip-compressed files. Anything unreadable raises
:class:`~datashard.errors.CorruptMetadataError` naming the file.

Format versions 2 and 3 are read. Version 3's row lineage fields (``next-row-id``, a
snapshot's ``first-row-id`` and ``added-rows``) are read and written; a version 3
table that is encrypted (``encryption-keys``, a snapshot's ``key-id``) or uses a
multi-argument transform (``source-ids``) raises
:class:`~datashard.errors.UnsupportedFeatureError` naming the feature. Version 1 (and anything
newer than 3) raises it too.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from datashard.errors import CorruptMetadataError, SchemaError, UnsupportedFeatureError
from datashard.iceberg.metadata import (
    MAIN_BRANCH,
    READ_VERSIONS,
    MetadataLogEntry,
    PartitionField,
    PartitionSpec,
    Snapshot,
    SnapshotLogEntry,
    SnapshotRef,
    SortField,
    SortOrder,
    TableMetadata,
)
from datashard.iceberg.schema import Schema

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# writing


def spec_to_json(spec: PartitionSpec) -> dict[str, Any]:
    """The spec JSON object of a partition spec."""
    return {
        "spec-id": spec.spec_id,
        "fields": [
            {
                "source-id": f.source_id,
                "field-id": f.field_id,
                "name": f.name,
                "transform": f.transform,
            }
            for f in spec.fields
        ],
    }


def sort_order_to_json(order: SortOrder) -> dict[str, Any]:
    """The spec JSON object of a sort order."""
    return {
        "order-id": order.order_id,
        "fields": [
            {
                "transform": f.transform,
                "source-id": f.source_id,
                "direction": f.direction,
                "null-order": f.null_order,
            }
            for f in order.fields
        ],
    }


def snapshot_to_json(s: Snapshot) -> dict[str, Any]:
    """The spec JSON object of a snapshot."""
    out: dict[str, Any] = {"snapshot-id": s.snapshot_id}
    if s.parent_snapshot_id is not None:
        out["parent-snapshot-id"] = s.parent_snapshot_id
    out["sequence-number"] = s.sequence_number
    out["timestamp-ms"] = s.timestamp_ms
    out["manifest-list"] = s.manifest_list
    summary = dict(s.summary)
    summary.setdefault("operation", "append")
    out["summary"] = summary
    if s.schema_id is not None:
        out["schema-id"] = s.schema_id
    if s.first_row_id is not None:
        out["first-row-id"] = s.first_row_id
    if s.added_rows is not None:
        out["added-rows"] = s.added_rows
    return out


def ref_to_json(r: SnapshotRef) -> dict[str, Any]:
    """The spec JSON object of a branch or tag."""
    out: dict[str, Any] = {"snapshot-id": r.snapshot_id, "type": r.type}
    if r.max_ref_age_ms is not None:
        out["max-ref-age-ms"] = r.max_ref_age_ms
    if r.max_snapshot_age_ms is not None:
        out["max-snapshot-age-ms"] = r.max_snapshot_age_ms
    if r.min_snapshots_to_keep is not None:
        out["min-snapshots-to-keep"] = r.min_snapshots_to_keep
    return out


def _around_snapshots(md: TableMetadata) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec JSON fields of ``md`` before ``snapshots`` and the statistics after it (the logs
    follow those), in the order written."""
    head = {
        "format-version": md.format_version,
        "table-uuid": md.table_uuid,
        "location": md.location,
        "last-sequence-number": md.last_sequence_number,
        "last-updated-ms": md.last_updated_ms,
        "last-column-id": md.last_column_id,
        "current-schema-id": md.current_schema_id,
        "schemas": [s.to_json() for s in md.schemas],
        "default-spec-id": md.default_spec_id,
        "partition-specs": [spec_to_json(s) for s in md.partition_specs],
        "last-partition-id": md.last_partition_id,
        "default-sort-order-id": md.default_sort_order_id,
        "sort-orders": [sort_order_to_json(o) for o in md.sort_orders],
        "properties": dict(md.properties),
        # -1 for "none", as Java writes it; PyIceberg and Java both read it back as no snapshot.
        "current-snapshot-id": -1 if md.current_snapshot_id is None else md.current_snapshot_id,
        "refs": {name: ref_to_json(r) for name, r in md.refs.items()},
    }
    if md.next_row_id is not None:
        head["next-row-id"] = md.next_row_id
    tail = {
        "statistics": [dict(s) for s in md.statistics],
        "partition-statistics": [dict(s) for s in md.partition_statistics],
    }
    return head, tail


def metadata_to_dict(md: TableMetadata) -> dict[str, Any]:
    """The spec JSON object of table metadata."""
    head, tail = _around_snapshots(md)
    return {
        **head,
        "snapshots": [snapshot_to_json(s) for s in md.snapshots],
        **tail,
        "snapshot-log": [
            {"timestamp-ms": e.timestamp_ms, "snapshot-id": e.snapshot_id} for e in md.snapshot_log
        ],
        "metadata-log": [
            {"timestamp-ms": e.timestamp_ms, "metadata-file": e.metadata_file}
            for e in md.metadata_log
        ],
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


#: A str as a JSON string, exactly as ``_dumps`` writes one (``ensure_ascii=False``).
_json_str = json.encoder.encode_basestring


#: Encoded JSON of snapshots already written or read by this process, by snapshot id. A
#: snapshot never changes once made, and a table's metadata carries up to
#: ``history.expire.max-snapshots`` of them into every new version: encoding each once, not
#: once per commit, keeps a commit's cost flat as the table ages. An entry is used only for
#: the very object it was made from (identity), so a stale entry can never be written.
_SNAPSHOT_TEXT: dict[int, tuple[Snapshot, str]] = {}
_MEMO_LIMIT = 4096  # entries; cleared whole when full (tables keep ~100 snapshots)


def _snapshot_text(s: Snapshot) -> str:
    hit = _SNAPSHOT_TEXT.get(s.snapshot_id)
    if hit is not None and hit[0] is s:
        return hit[1]
    text = _dumps(snapshot_to_json(s))
    if len(_SNAPSHOT_TEXT) >= _MEMO_LIMIT:
        _SNAPSHOT_TEXT.clear()
    _SNAPSHOT_TEXT[s.snapshot_id] = (s, text)
    return text


def metadata_to_json(md: TableMetadata) -> bytes:
    """The UTF-8 JSON bytes of ``md`` for a ``*.metadata.json`` file (the same bytes as
    ``json.dumps(metadata_to_dict(md))`` in compact form)."""
    before, after = _around_snapshots(md)
    head = _dumps(before)
    snapshots = ",".join(_snapshot_text(s) for s in md.snapshots)
    # the two logs (up to write.metadata.previous-versions-max and history.expire.max-snapshots
    # entries) formatted directly: the same text json.dumps makes of their objects
    snapshot_log = ",".join(
        f'{{"timestamp-ms":{e.timestamp_ms},"snapshot-id":{e.snapshot_id}}}'
        for e in md.snapshot_log
    )
    metadata_log = ",".join(
        f'{{"timestamp-ms":{e.timestamp_ms},"metadata-file":{_json_str(e.metadata_file)}}}'
        for e in md.metadata_log
    )
    # "{...head...}" then the rest, keys in metadata_to_dict's order
    return (
        f'{head[:-1]},"snapshots":[{snapshots}],'
        f'"statistics":{_dumps(after["statistics"])},'
        f'"partition-statistics":{_dumps(after["partition-statistics"])},'
        f'"snapshot-log":[{snapshot_log}],"metadata-log":[{metadata_log}]}}'
    ).encode()


# ---------------------------------------------------------------------------------------------
# reading


class _Reader:
    """Typed access to a JSON object; every failure names the file and the key path."""

    def __init__(self, location: str) -> None:
        self.location = location

    def fail(self, what: str) -> CorruptMetadataError:
        return CorruptMetadataError(f"corrupt table metadata {self.location}: {what}")

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise self.fail(f"{path} must be a JSON object, got {type(value).__name__}")
        return value

    def get(
        self,
        d: Mapping[str, Any],
        key: str,
        kind: type[T],
        path: str,
        default: Any = ...,
        nullable: bool = False,
    ) -> Any:
        value = d.get(key)
        if type(value) is kind:  # the common case, decided at once
            return value
        if key not in d or (d[key] is None and not nullable and default is not ...):
            if default is ...:
                raise self.fail(f"missing required field {path + key!r}")
            return default
        value = d[key]
        if value is None and nullable:
            return None
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise self.fail(
                f"field {path + key!r} must be {kind.__name__}, got {type(value).__name__} "
                f"{value!r:.60}"
            )
        return value

    def items(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        parse: Callable[[Mapping[str, Any], str], T],
        required: bool = False,
        fast: Callable[[dict[str, Any]], T | None] | None = None,
    ) -> list[T]:
        """``parse`` of each object in the list ``d[key]``. ``fast``, if given, answers for a
        well-formed element at once (``None``: not sure, parse it with full checks)."""
        if required:
            raw = self.get(d, key, list, path)
        else:
            raw = self.get(d, key, list, path, default=[])
        out: list[T] = []
        for i, v in enumerate(raw):
            if fast is not None and type(v) is dict:
                got = fast(v)
                if got is not None:
                    out.append(got)
                    continue
            where = f"{path}{key}[{i}]"
            out.append(parse(self.obj(v, where), where + "."))
        return out


def _schema(r: _Reader, d: Mapping[str, Any], path: str) -> Schema:
    try:
        return Schema.from_json(d)
    except (SchemaError, TypeError, ValueError) as exc:
        raise r.fail(f"bad schema at {path[:-1]}: {exc}") from None


def _single_source(r: _Reader, f: Mapping[str, Any], p: str) -> None:
    """Refuse a multi-argument transform (format version 3's ``source-ids``)."""
    ids = f.get("source-ids")
    if ids is not None and "source-id" not in f:
        if isinstance(ids, list) and len(ids) == 1 and type(ids[0]) is int:
            return
        raise UnsupportedFeatureError(
            f"{r.location}: {p[:-1]} has a multi-argument transform {f.get('transform')!r} "
            f"over source-ids {ids!r} (format version 3), which datashard does not read"
        )


def _source_id(r: _Reader, f: Mapping[str, Any], p: str) -> int:
    _single_source(r, f, p)
    if "source-id" not in f and isinstance(f.get("source-ids"), list):
        return int(f["source-ids"][0])
    return int(r.get(f, "source-id", int, p))


def _spec(r: _Reader, d: Mapping[str, Any], path: str) -> PartitionSpec:
    def field(f: Mapping[str, Any], p: str) -> PartitionField:
        return PartitionField(
            _source_id(r, f, p),
            r.get(f, "field-id", int, p),
            r.get(f, "transform", str, p),
            r.get(f, "name", str, p),
        )

    return PartitionSpec(r.get(d, "spec-id", int, path), tuple(r.items(d, "fields", path, field)))


def _sort_order(r: _Reader, d: Mapping[str, Any], path: str) -> SortOrder:
    def field(f: Mapping[str, Any], p: str) -> SortField:
        return SortField(
            _source_id(r, f, p),
            r.get(f, "transform", str, p),
            r.get(f, "direction", str, p),
            r.get(f, "null-order", str, p),
        )

    return SortOrder(r.get(d, "order-id", int, path), tuple(r.items(d, "fields", path, field)))


#: Snapshots already parsed by this process, by id, with the JSON object each came from. A
#: table's every version repeats its retained snapshots; a writer that lost a race reads the
#: winner's version and finds all but one of them here. Used only when the JSON object is
#: equal to the one parsed before, so the result is exactly what parsing would give.
_SNAPSHOT_MEMO: dict[int, tuple[dict[str, Any], Snapshot]] = {}


def _known_snapshot(d: dict[str, Any]) -> Snapshot | None:
    sid = d.get("snapshot-id")
    hit = _SNAPSHOT_MEMO.get(sid) if type(sid) is int else None
    if hit is None or hit[0] != d:
        return None
    # == takes 1.0 and True for 1: the types must match too (the summary's values are str, and
    # a str equals only a str), so a file that a full parse would refuse is never let through
    if not all(type(d[k]) is type(v) for k, v in hit[0].items()):
        return None
    return hit[1]


def _snapshot(r: _Reader, d: Mapping[str, Any], path: str) -> Snapshot:
    snapshot = _parse_snapshot(r, d, path)
    if len(_SNAPSHOT_MEMO) >= _MEMO_LIMIT:
        _SNAPSHOT_MEMO.clear()
    _SNAPSHOT_MEMO[snapshot.snapshot_id] = (dict(d), snapshot)
    return snapshot


def _parse_snapshot(r: _Reader, d: Mapping[str, Any], path: str) -> Snapshot:
    summary = r.obj(
        r.get(d, "summary", dict, path, default={"operation": "append"}), path + "summary"
    )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in summary.items()):
        raise r.fail(f"{path}summary must map strings to strings")
    if d.get("key-id") is not None:
        raise UnsupportedFeatureError(
            f"{r.location}: {path}key-id {d['key-id']!r}: the snapshot's manifest list is "
            "encrypted (format version 3 table encryption), which datashard does not read"
        )
    return Snapshot(
        snapshot_id=r.get(d, "snapshot-id", int, path),
        parent_snapshot_id=r.get(d, "parent-snapshot-id", int, path, default=None, nullable=True),
        sequence_number=r.get(d, "sequence-number", int, path, default=0),
        timestamp_ms=r.get(d, "timestamp-ms", int, path),
        manifest_list=r.get(d, "manifest-list", str, path),
        summary=dict(summary),
        schema_id=r.get(d, "schema-id", int, path, default=None, nullable=True),
        first_row_id=r.get(d, "first-row-id", int, path, default=None, nullable=True),
        added_rows=r.get(d, "added-rows", int, path, default=None, nullable=True),
    )


def _ref(r: _Reader, d: Mapping[str, Any], path: str) -> SnapshotRef:
    kind = r.get(d, "type", str, path)
    if kind not in ("branch", "tag"):
        raise r.fail(f"{path}type must be 'branch' or 'tag', got {kind!r}")
    return SnapshotRef(
        r.get(d, "snapshot-id", int, path),
        kind,
        r.get(d, "max-ref-age-ms", int, path, default=None, nullable=True),
        r.get(d, "max-snapshot-age-ms", int, path, default=None, nullable=True),
        r.get(d, "min-snapshots-to-keep", int, path, default=None, nullable=True),
    )


def _fast_snapshot_log(e: dict[str, Any]) -> SnapshotLogEntry | None:
    ts, sid = e.get("timestamp-ms"), e.get("snapshot-id")
    return SnapshotLogEntry(ts, sid) if type(ts) is int and type(sid) is int else None


def _fast_metadata_log(e: dict[str, Any]) -> MetadataLogEntry | None:
    ts, file = e.get("timestamp-ms"), e.get("metadata-file")
    return MetadataLogEntry(ts, file) if type(ts) is int and type(file) is str else None


def _decode(data: bytes, location: str) -> Any:
    raw = bytes(data)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptMetadataError(
                f"corrupt table metadata {location}: bad gzip stream ({exc})"
            ) from exc
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = "empty file" if not raw.strip() else f"not valid JSON ({exc})"
        raise CorruptMetadataError(
            f"corrupt table metadata {location}: {what}; the file may be truncated"
        ) from exc


def metadata_from_json(data: bytes, location: str) -> TableMetadata:
    """Parse a ``*.metadata.json`` file read from ``location``.

    Raises :class:`CorruptMetadataError` naming ``location`` for bad JSON (a truncated file), a
    missing or mistyped field, or inconsistent ids; :class:`UnsupportedFeatureError` for a
    format version other than 2 and 3, or a version 3 feature datashard does not read
    (encryption, multi-argument transforms).
    """
    r = _Reader(location)
    d = r.obj(_decode(data, location), "the document")
    version = r.get(d, "format-version", int, "")
    if version not in READ_VERSIONS:
        raise UnsupportedFeatureError(
            f"{location}: format-version {version} is not supported; datashard reads Iceberg "
            f"format versions {' and '.join(map(str, READ_VERSIONS))}"
        )
    next_row_id = None
    if version >= 3:
        next_row_id = r.get(d, "next-row-id", int, "")
        keys = d.get("encryption-keys")
        if keys:
            raise UnsupportedFeatureError(
                f"{location}: the table is encrypted (format version 3 encryption-keys: "
                f"{len(keys) if isinstance(keys, list) else keys!r}), which datashard does "
                "not read"
            )
    schemas = r.items(d, "schemas", "", lambda s, p: _schema(r, s, p), required=True)
    specs = r.items(d, "partition-specs", "", lambda s, p: _spec(r, s, p), required=True)
    orders = r.items(d, "sort-orders", "", lambda s, p: _sort_order(r, s, p))
    snapshots = r.items(d, "snapshots", "", lambda s, p: _snapshot(r, s, p), fast=_known_snapshot)
    properties = r.obj(r.get(d, "properties", dict, "", default={}), "properties")
    if not all(isinstance(v, str) for v in properties.values()):
        raise r.fail("properties must map strings to strings")
    raw_refs = r.obj(r.get(d, "refs", dict, "", default={}), "refs")
    refs = {
        name: _ref(r, r.obj(v, f"refs.{name}"), f"refs.{name}.") for name, v in raw_refs.items()
    }
    current = r.get(d, "current-snapshot-id", int, "", default=None, nullable=True)
    if current == -1:
        current = None
    if current is not None and MAIN_BRANCH not in refs:
        refs[MAIN_BRANCH] = SnapshotRef(current, "branch")  # the spec's implied main branch
    snap_log = r.items(
        d,
        "snapshot-log",
        "",
        lambda e, p: SnapshotLogEntry(
            r.get(e, "timestamp-ms", int, p), r.get(e, "snapshot-id", int, p)
        ),
        fast=_fast_snapshot_log,
    )
    meta_log = r.items(
        d,
        "metadata-log",
        "",
        lambda e, p: MetadataLogEntry(
            r.get(e, "timestamp-ms", int, p), r.get(e, "metadata-file", str, p)
        ),
        fast=_fast_metadata_log,
    )
    stats = r.items(d, "statistics", "", lambda e, p: dict(e))
    part_stats = r.items(d, "partition-statistics", "", lambda e, p: dict(e))
    md = TableMetadata(
        format_version=version,
        table_uuid=r.get(d, "table-uuid", str, ""),
        location=r.get(d, "location", str, ""),
        last_sequence_number=r.get(d, "last-sequence-number", int, ""),
        last_updated_ms=r.get(d, "last-updated-ms", int, ""),
        last_column_id=r.get(d, "last-column-id", int, ""),
        schemas=tuple(schemas),
        current_schema_id=r.get(d, "current-schema-id", int, ""),
        partition_specs=tuple(specs),
        default_spec_id=r.get(d, "default-spec-id", int, ""),
        last_partition_id=r.get(d, "last-partition-id", int, ""),
        properties=dict(properties),
        current_snapshot_id=current,
        snapshots=tuple(snapshots),
        snapshot_log=tuple(snap_log),
        metadata_log=tuple(meta_log),
        sort_orders=tuple(orders) or (SortOrder(),),
        default_sort_order_id=r.get(d, "default-sort-order-id", int, "", default=0),
        refs=refs,
        statistics=tuple(stats),
        partition_statistics=tuple(part_stats),
        next_row_id=next_row_id,
    )
    _check_consistency(r, md)
    return md


def _check_consistency(r: _Reader, md: TableMetadata) -> None:
    schema_ids = {s.schema_id for s in md.schemas}
    if md.current_schema_id not in schema_ids:
        raise r.fail(
            f"current-schema-id {md.current_schema_id} is not among the schemas "
            f"{sorted(schema_ids)}"
        )
    if md.default_spec_id not in {s.spec_id for s in md.partition_specs}:
        raise r.fail(f"default-spec-id {md.default_spec_id} is not among the partition-specs")
    snapshot_ids = {s.snapshot_id for s in md.snapshots}
    if md.current_snapshot_id is not None and md.current_snapshot_id not in snapshot_ids:
        raise r.fail(f"current-snapshot-id {md.current_snapshot_id} is not among the snapshots")
    for name, ref in md.refs.items():
        if ref.snapshot_id not in snapshot_ids:
            raise r.fail(f"ref {name!r} points at snapshot {ref.snapshot_id}, which is not kept")


__all__ = [
    "metadata_from_json",
    "metadata_to_dict",
    "metadata_to_json",
    "ref_to_json",
    "snapshot_to_json",
    "sort_order_to_json",
    "spec_to_json",
]
