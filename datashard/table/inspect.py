"""``Table.inspect``: a table's metadata as Arrow tables, with PyIceberg's names and types.

Each method returns a ``pyarrow.Table`` whose columns are named and typed as PyIceberg 0.12's
``table.inspect`` returns them, so notebooks written for PyIceberg work unchanged:
:meth:`InspectTable.snapshots`, :meth:`~InspectTable.history`, :meth:`~InspectTable.refs`
(from the metadata alone), :meth:`~InspectTable.manifests` (one manifest list read),
:meth:`~InspectTable.files` and :meth:`~InspectTable.partitions` (the manifest list and every
manifest of the snapshot read). Types of the columns that hold table values (``partition``,
``readable_metrics``) are the Arrow types datashard reads those columns as.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from datashard.errors import ValidationError
from datashard.iceberg.conversions import from_bytes
from datashard.iceberg.manifest import (
    DATA,
    EQUALITY_DELETES,
    MANIFEST_DATA,
    MANIFEST_DELETES,
    POSITION_DELETES,
    ManifestFile,
)
from datashard.iceberg.metadata import Snapshot, TableMetadata, transform_result_type
from datashard.iceberg.types import (
    IcebergType,
    ListType,
    MapType,
    NestedField,
    StructType,
    to_arrow_type,
)
from datashard.storage.base import StorageBackend
from datashard.table.manifests import ManifestReader

_SNAPSHOTS = pa.schema(
    [
        pa.field("committed_at", pa.timestamp("ms"), nullable=False),
        pa.field("snapshot_id", pa.int64(), nullable=False),
        pa.field("parent_id", pa.int64(), nullable=True),
        pa.field("operation", pa.string(), nullable=True),
        pa.field("manifest_list", pa.string(), nullable=False),
        pa.field("summary", pa.map_(pa.string(), pa.string()), nullable=True),
    ]
)
_HISTORY = pa.schema(
    [
        pa.field("made_current_at", pa.timestamp("ms"), nullable=False),
        pa.field("snapshot_id", pa.int64(), nullable=False),
        pa.field("parent_id", pa.int64(), nullable=True),
        pa.field("is_current_ancestor", pa.bool_(), nullable=False),
    ]
)
_REFS = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("type", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("snapshot_id", pa.int64(), nullable=False),
        pa.field("max_reference_age_in_ms", pa.int64(), nullable=True),
        pa.field("min_snapshots_to_keep", pa.int32(), nullable=True),
        pa.field("max_snapshot_age_in_ms", pa.int64(), nullable=True),
    ]
)
_SUMMARY = pa.struct(
    [
        pa.field("contains_null", pa.bool_(), nullable=False),
        pa.field("contains_nan", pa.bool_(), nullable=True),
        pa.field("lower_bound", pa.string(), nullable=True),
        pa.field("upper_bound", pa.string(), nullable=True),
    ]
)
_MANIFESTS = pa.schema(
    [
        pa.field("content", pa.int8(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("partition_spec_id", pa.int32(), nullable=False),
        pa.field("added_snapshot_id", pa.int64(), nullable=False),
        pa.field("added_data_files_count", pa.int32(), nullable=False),
        pa.field("existing_data_files_count", pa.int32(), nullable=False),
        pa.field("deleted_data_files_count", pa.int32(), nullable=False),
        pa.field("added_delete_files_count", pa.int32(), nullable=False),
        pa.field("existing_delete_files_count", pa.int32(), nullable=False),
        pa.field("deleted_delete_files_count", pa.int32(), nullable=False),
        pa.field("partition_summaries", pa.list_(_SUMMARY), nullable=False),
    ]
)
_PARTITION_COUNTS = [
    pa.field("record_count", pa.int64(), nullable=False),
    pa.field("file_count", pa.int32(), nullable=False),
    pa.field("total_data_file_size_in_bytes", pa.int64(), nullable=False),
    pa.field("position_delete_record_count", pa.int64(), nullable=False),
    pa.field("position_delete_file_count", pa.int32(), nullable=False),
    pa.field("equality_delete_record_count", pa.int64(), nullable=False),
    pa.field("equality_delete_file_count", pa.int32(), nullable=False),
    pa.field("last_updated_at", pa.timestamp("ms"), nullable=True),
    pa.field("last_updated_snapshot_id", pa.int64(), nullable=True),
]


class InspectTable:
    """The metadata tables of one table's metadata version (see the module docstring)."""

    def __init__(self, backend: StorageBackend, metadata: TableMetadata) -> None:
        self._backend = backend
        self._md = metadata
        self._reader = ManifestReader(backend)

    # -- from the metadata alone ---------------------------------------------------------

    def snapshots(self) -> pa.Table:
        """One row per snapshot the metadata keeps: ``committed_at``, ``snapshot_id``,
        ``parent_id``, ``operation``, ``manifest_list``, ``summary`` (without ``operation``)."""
        rows = [
            {
                "committed_at": s.timestamp_ms,
                "snapshot_id": s.snapshot_id,
                "parent_id": s.parent_snapshot_id,
                "operation": s.operation,
                "manifest_list": s.manifest_list,
                "summary": [(k, v) for k, v in s.summary.items() if k != "operation"],
            }
            for s in self._md.snapshots
        ]
        return pa.Table.from_pylist(rows, schema=_SNAPSHOTS)

    def history(self) -> pa.Table:
        """One row per snapshot-log entry, oldest first: ``made_current_at``, ``snapshot_id``,
        ``parent_id``, ``is_current_ancestor``."""
        ancestors = {s.snapshot_id for s in self._md.ancestors()}
        rows = []
        for entry in self._md.snapshot_log:
            snap = self._md.snapshot_by_id(entry.snapshot_id)
            rows.append(
                {
                    "made_current_at": entry.timestamp_ms,
                    "snapshot_id": entry.snapshot_id,
                    "parent_id": snap.parent_snapshot_id if snap is not None else None,
                    "is_current_ancestor": entry.snapshot_id in ancestors,
                }
            )
        return pa.Table.from_pylist(rows, schema=_HISTORY)

    def refs(self) -> pa.Table:
        """One row per branch and tag: ``name``, ``type`` (``BRANCH``/``TAG``),
        ``snapshot_id`` and the retention settings."""
        rows = [
            {
                "name": name,
                "type": ref.type.upper(),
                "snapshot_id": ref.snapshot_id,
                "max_reference_age_in_ms": ref.max_ref_age_ms,
                "min_snapshots_to_keep": ref.min_snapshots_to_keep,
                "max_snapshot_age_in_ms": ref.max_snapshot_age_ms,
            }
            for name, ref in self._md.refs.items()
        ]
        return pa.Table.from_pylist(rows, schema=_REFS)

    # -- from manifests --------------------------------------------------------------------

    def manifests(self) -> pa.Table:
        """One row per manifest of the current snapshot (none for an empty table), with its
        file counts by content and a summary per partition field (bounds as readable text)."""
        snapshot = self._md.current_snapshot()
        rows = []
        for m in self._reader.manifests(snapshot) if snapshot is not None else []:
            data = m.content == MANIFEST_DATA
            deletes = m.content == MANIFEST_DELETES
            rows.append(
                {
                    "content": m.content,
                    "path": m.manifest_path,
                    "length": m.manifest_length,
                    "partition_spec_id": m.partition_spec_id,
                    "added_snapshot_id": m.added_snapshot_id,
                    "added_data_files_count": m.added_files_count if data else 0,
                    "existing_data_files_count": m.existing_files_count if data else 0,
                    "deleted_data_files_count": m.deleted_files_count if data else 0,
                    "added_delete_files_count": m.added_files_count if deletes else 0,
                    "existing_delete_files_count": m.existing_files_count if deletes else 0,
                    "deleted_delete_files_count": m.deleted_files_count if deletes else 0,
                    "partition_summaries": self._summaries(m),
                }
            )
        return pa.Table.from_pylist(rows, schema=_MANIFESTS)

    def files(self, snapshot_id: int | None = None) -> pa.Table:
        """One row per live data and delete file of the snapshot (default: the current one),
        with its statistics raw (by field id) and readable (``readable_metrics``, by column).
        ``ValidationError`` when the table does not keep ``snapshot_id``."""
        schema = self._files_schema()
        if snapshot_id is None and self._md.current_snapshot() is None:
            return schema.empty_table()
        snapshot = self._snapshot(snapshot_id)
        fields = self._md.current_schema().fields
        rows = []
        for m in self._reader.manifests(snapshot):
            names = [f.name for f in self._md.spec(m.partition_spec_id).fields]
            for e in self._reader.entries(m):
                if not e.is_live:
                    continue
                df = e.data_file
                rows.append(
                    {
                        "content": df.content,
                        "file_path": df.file_path,
                        "file_format": df.file_format,
                        "spec_id": m.partition_spec_id,
                        "partition": {n: df.partition.get(n) for n in names},
                        "record_count": df.record_count,
                        "file_size_in_bytes": df.file_size_in_bytes,
                        "column_sizes": _pairs(df.column_sizes),
                        "value_counts": _pairs(df.value_counts),
                        "null_value_counts": _pairs(df.null_value_counts),
                        "nan_value_counts": _pairs(df.nan_value_counts),
                        "lower_bounds": _pairs(df.lower_bounds),
                        "upper_bounds": _pairs(df.upper_bounds),
                        "key_metadata": df.key_metadata,
                        "split_offsets": list(df.split_offsets) if df.split_offsets else None,
                        "equality_ids": list(df.equality_ids) if df.equality_ids else None,
                        "sort_order_id": df.sort_order_id,
                        "readable_metrics": {
                            f.name: {
                                "column_size": df.column_sizes.get(f.field_id),
                                "value_count": df.value_counts.get(f.field_id),
                                "null_value_count": df.null_value_counts.get(f.field_id),
                                "nan_value_count": df.nan_value_counts.get(f.field_id),
                                "lower_bound": _readable(f, df.lower_bounds),
                                "upper_bound": _readable(f, df.upper_bounds),
                            }
                            for f in fields
                        },
                    }
                )
        return pa.Table.from_pylist(rows, schema=schema)

    def partitions(self, snapshot_id: int | None = None) -> pa.Table:
        """One row per partition of the snapshot (default: the current one; one row in all for
        an unpartitioned table) with its live record, file and delete-file counts and the
        snapshot that last added a file to it. ``ValidationError`` when there is no such
        snapshot."""
        snapshot = self._snapshot(snapshot_id)
        manifests = self._reader.manifests(snapshot)
        struct = self._partition_struct({m.partition_spec_id for m in manifests})
        fields = list(_PARTITION_COUNTS)
        if struct.num_fields:
            fields = [
                pa.field("partition", struct, nullable=False),
                pa.field("spec_id", pa.int32(), nullable=False),
                *fields,
            ]
        by_key: dict[Any, dict[str, Any]] = {}
        for m in manifests:
            names = [f.name for f in self._md.spec(m.partition_spec_id).fields]
            for e in self._reader.entries(m):
                if not e.is_live:
                    continue
                df = e.data_file
                values = {n: df.partition.get(n) for n in names}
                key = tuple(sorted(values.items(), key=lambda kv: kv[0]))
                row = by_key.setdefault(key, _partition_row(values, m.partition_spec_id))
                snap = self._md.snapshot_by_id(e.snapshot_id) if e.snapshot_id is not None else None
                if snap is not None and (
                    row["last_updated_at"] is None or row["last_updated_at"] < snap.timestamp_ms
                ):
                    row["last_updated_at"] = snap.timestamp_ms
                    row["last_updated_snapshot_id"] = snap.snapshot_id
                if df.content == DATA:
                    row["record_count"] += df.record_count
                    row["file_count"] += 1
                    row["total_data_file_size_in_bytes"] += df.file_size_in_bytes
                elif df.content == POSITION_DELETES:
                    row["position_delete_record_count"] += df.record_count
                    row["position_delete_file_count"] += 1
                elif df.content == EQUALITY_DELETES:
                    row["equality_delete_record_count"] += df.record_count
                    row["equality_delete_file_count"] += 1
        return pa.Table.from_pylist(list(by_key.values()), schema=pa.schema(fields))

    # -- helpers -----------------------------------------------------------------------------

    def _snapshot(self, snapshot_id: int | None) -> Snapshot:
        if snapshot_id is None:
            snap = self._md.current_snapshot()
            if snap is None:
                raise ValidationError(
                    f"table {self._md.location} has no snapshot yet: nothing to inspect"
                )
            return snap
        found = self._md.snapshot_by_id(snapshot_id)
        if found is None:
            raise ValidationError(
                f"no snapshot {snapshot_id} in table {self._md.location}; it keeps "
                f"{len(self._md.snapshots)} snapshots (see inspect.snapshots())"
            )
        return found

    def _partition_struct(self, spec_ids: set[int] | None = None) -> pa.StructType:
        """Every partition field of the chosen specs (all by default), by field id."""
        schema = self._md.current_schema()
        chosen = {}
        for spec in self._md.partition_specs:
            if spec_ids is not None and spec.spec_id not in spec_ids:
                continue
            for f in spec.fields:
                chosen[f.field_id] = f
        return pa.struct(
            [
                pa.field(
                    chosen[i].name,
                    to_arrow_type(
                        transform_result_type(
                            chosen[i].transform, schema.find_type(chosen[i].source_id)
                        )
                    ),
                )
                for i in sorted(chosen)
            ]
        )

    def _files_schema(self) -> pa.Schema:
        metrics = []
        for f in self._md.current_schema().fields:
            bound = to_arrow_type(f.field_type)
            metrics.append(
                pa.field(
                    f.name,
                    pa.struct(
                        [
                            pa.field("column_size", pa.int64()),
                            pa.field("value_count", pa.int64()),
                            pa.field("null_value_count", pa.int64()),
                            pa.field("nan_value_count", pa.int64()),
                            pa.field("lower_bound", bound),
                            pa.field("upper_bound", bound),
                        ]
                    ),
                    nullable=False,
                )
            )
        return pa.schema(
            [
                pa.field("content", pa.int8(), nullable=False),
                pa.field("file_path", pa.string(), nullable=False),
                pa.field("file_format", pa.dictionary(pa.int32(), pa.string()), nullable=False),
                pa.field("spec_id", pa.int32(), nullable=False),
                pa.field("partition", self._partition_struct(), nullable=False),
                pa.field("record_count", pa.int64(), nullable=False),
                pa.field("file_size_in_bytes", pa.int64(), nullable=False),
                pa.field("column_sizes", pa.map_(pa.int32(), pa.int64())),
                pa.field("value_counts", pa.map_(pa.int32(), pa.int64())),
                pa.field("null_value_counts", pa.map_(pa.int32(), pa.int64())),
                pa.field("nan_value_counts", pa.map_(pa.int32(), pa.int64())),
                pa.field("lower_bounds", pa.map_(pa.int32(), pa.binary())),
                pa.field("upper_bounds", pa.map_(pa.int32(), pa.binary())),
                pa.field("key_metadata", pa.binary()),
                pa.field("split_offsets", pa.list_(pa.int64())),
                pa.field("equality_ids", pa.list_(pa.int32())),
                pa.field("sort_order_id", pa.int32()),
                pa.field("readable_metrics", pa.struct(metrics)),
            ]
        )

    def _summaries(self, m: ManifestFile) -> list[dict[str, Any]]:
        if not m.partitions:
            return []
        spec = self._md.spec(m.partition_spec_id)
        schema = self._md.current_schema()
        out = []
        for pf, summary in zip(spec.fields, m.partitions, strict=False):
            t = transform_result_type(pf.transform, schema.find_type(pf.source_id))
            out.append(
                {
                    "contains_null": summary.contains_null,
                    "contains_nan": summary.contains_nan,
                    "lower_bound": _human(pf.transform, t, summary.lower_bound),
                    "upper_bound": _human(pf.transform, t, summary.upper_bound),
                }
            )
        return out


def _partition_row(values: Mapping[str, Any], spec_id: int) -> dict[str, Any]:
    return {
        "partition": dict(values),
        "spec_id": spec_id,
        "record_count": 0,
        "file_count": 0,
        "total_data_file_size_in_bytes": 0,
        "position_delete_record_count": 0,
        "position_delete_file_count": 0,
        "equality_delete_record_count": 0,
        "equality_delete_file_count": 0,
        "last_updated_at": None,
        "last_updated_snapshot_id": None,
    }


def _pairs(values: Mapping[int, Any]) -> list[tuple[int, Any]]:
    return sorted(values.items())


def _nested(t: IcebergType) -> bool:
    return isinstance(t, (StructType, ListType, MapType))


def _readable(f: NestedField, bounds: Mapping[int, bytes]) -> Any:
    """A column's bound as its value (``None`` when absent or for a nested column)."""
    raw = bounds.get(f.field_id)
    if raw is None or _nested(f.field_type):
        return None
    return from_bytes(f.field_type, raw)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _human(transform: str, t: IcebergType, raw: bytes | None) -> str | None:
    """A partition bound as text, as Iceberg prints partition values (``2024-05-01`` for a day,
    ``2024-05`` for a month, the value itself for identity, bucket and truncate)."""
    if not raw:
        return None
    value = from_bytes(t, raw)
    if transform == "year":
        return f"{1970 + value:04d}"
    if transform == "month":
        return f"{1970 + value // 12:04d}-{value % 12 + 1:02d}"
    if transform == "day":
        return (date(1970, 1, 1) + timedelta(days=value)).isoformat()
    if transform == "hour":
        return (_EPOCH + timedelta(hours=value)).strftime("%Y-%m-%d-%H")
    if isinstance(value, bytes):
        return value.hex()
    if type(t).__name__ == "DateType":
        return (date(1970, 1, 1) + timedelta(days=value)).isoformat()
    return str(value)


__all__ = ["InspectTable"]
