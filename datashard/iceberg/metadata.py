"""The table metadata model of Iceberg format versions 2 and 3: pure, immutable values.

Format version 3 adds row lineage (the table's ``next-row-id``, a snapshot's ``first-row-id``
and ``added-rows``). datashard creates version 2 tables by default and version 3 tables when
asked (:func:`new_table_metadata`), and writes both.

Nothing here knows JSON or Avro: :mod:`datashard.iceberg.metadata_codec` reads and writes these
classes. A commit builds new metadata with :func:`dataclasses.replace`; every class is a frozen
dataclass. Timestamps are milliseconds since the epoch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from datashard.errors import SchemaError, UnsupportedFeatureError, ValidationError
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import (
    DateType,
    IcebergType,
    IntType,
    NestedField,
    StructType,
    unwritten_types_in,
    v3_types_in,
)

#: The format version datashard creates by default.
FORMAT_VERSION = 2
#: The format versions datashard reads.
READ_VERSIONS = (2, 3)
#: The format versions datashard creates and writes.
WRITE_VERSIONS = (2, 3)
#: The first format version with row lineage and deletion vectors.
LINEAGE_VERSION = 3
MAIN_BRANCH = "main"
#: Partition field ids start at 1000; an unpartitioned table's last-partition-id is 999.
PARTITION_FIELD_ID_START = 1000

Operation = Literal["append", "replace", "overwrite", "delete"]
RefType = Literal["branch", "tag"]


class FrozenMap(Mapping[str, str]):
    """A read-only mapping of strings (a snapshot's summary): it cannot change after the
    snapshot is made, so codecs may memoise a snapshot's encoding by identity."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._items,))


@dataclass(frozen=True)
class Snapshot:
    """One table state. ``summary`` holds ``operation`` plus the counters of the spec; it is
    read-only (a :class:`FrozenMap`)."""

    snapshot_id: int
    parent_snapshot_id: int | None
    sequence_number: int
    timestamp_ms: int
    manifest_list: str
    summary: Mapping[str, str] = field(default_factory=lambda: {"operation": "append"})
    schema_id: int | None = None
    #: format version 3: the first row id the snapshot assigned, and how many it assigned
    #: (``None`` in version 2, and for snapshots made before a table was upgraded to 3)
    first_row_id: int | None = None
    added_rows: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.summary, FrozenMap):
            object.__setattr__(self, "summary", FrozenMap(self.summary))

    @property
    def operation(self) -> str:
        """The summary's ``operation`` (``append``, ``overwrite``, ``delete``, ``replace``)."""
        return self.summary.get("operation", "append")


@dataclass(frozen=True)
class SnapshotLogEntry:
    """When ``snapshot_id`` became the current snapshot."""

    timestamp_ms: int
    snapshot_id: int


@dataclass(frozen=True)
class MetadataLogEntry:
    """A previous metadata file and when it was written."""

    timestamp_ms: int
    metadata_file: str


@dataclass(frozen=True)
class SnapshotRef:
    """A named reference (branch or tag) to a snapshot, with optional retention settings."""

    snapshot_id: int
    type: RefType = "branch"
    max_ref_age_ms: int | None = None
    max_snapshot_age_ms: int | None = None
    min_snapshots_to_keep: int | None = None


@dataclass(frozen=True)
class PartitionField:
    """One partition field: ``transform`` applied to the source column ``source_id``."""

    source_id: int
    field_id: int
    transform: str
    name: str


@dataclass(frozen=True)
class PartitionSpec:
    """How data files are partitioned; spec 0 with no fields is unpartitioned."""

    spec_id: int = 0
    fields: tuple[PartitionField, ...] = ()

    @property
    def is_unpartitioned(self) -> bool:
        return all(f.transform == "void" for f in self.fields)

    @property
    def last_assigned_field_id(self) -> int:
        return max((f.field_id for f in self.fields), default=PARTITION_FIELD_ID_START - 1)

    def partition_type(self, schema: Schema) -> StructType:
        """The struct of partition values as manifests store it (all fields optional)."""
        return StructType(
            tuple(
                NestedField(
                    f.field_id,
                    f.name,
                    transform_result_type(f.transform, schema.find_type(f.source_id)),
                    False,
                )
                for f in self.fields
            )
        )


def transform_result_type(transform: str, source: IcebergType) -> IcebergType:
    """The type a partition transform produces from a ``source`` column type (spec table)."""
    name = transform.split("[", 1)[0]
    if name in ("identity", "void"):
        return source
    if name == "bucket":
        return IntType()
    if name == "truncate":
        return source
    if name in ("year", "month", "hour"):
        return IntType()
    if name == "day":
        return DateType()
    raise SchemaError(f"unknown partition transform {transform!r} on a {source} column")


@dataclass(frozen=True)
class SortField:
    """One sort key: a transform of a source column, a direction and a null order."""

    source_id: int
    transform: str = "identity"
    direction: Literal["asc", "desc"] = "asc"
    null_order: Literal["nulls-first", "nulls-last"] = "nulls-first"


@dataclass(frozen=True)
class SortOrder:
    """How data files are sorted; order 0 with no fields is unsorted."""

    order_id: int = 0
    fields: tuple[SortField, ...] = ()


UNPARTITIONED = PartitionSpec(0, ())
UNSORTED = SortOrder(0, ())


@dataclass(frozen=True)
class TableMetadata:
    """The content of one ``v<N>.metadata.json`` (format version 2 or 3)."""

    table_uuid: str
    location: str
    last_updated_ms: int
    last_column_id: int
    schemas: tuple[Schema, ...]
    current_schema_id: int
    format_version: int = FORMAT_VERSION
    last_sequence_number: int = 0
    partition_specs: tuple[PartitionSpec, ...] = (UNPARTITIONED,)
    default_spec_id: int = 0
    last_partition_id: int = PARTITION_FIELD_ID_START - 1
    properties: Mapping[str, str] = field(default_factory=dict)
    current_snapshot_id: int | None = None
    snapshots: tuple[Snapshot, ...] = ()
    snapshot_log: tuple[SnapshotLogEntry, ...] = ()
    metadata_log: tuple[MetadataLogEntry, ...] = ()
    sort_orders: tuple[SortOrder, ...] = (UNSORTED,)
    default_sort_order_id: int = 0
    refs: Mapping[str, SnapshotRef] = field(default_factory=dict)
    #: Statistics files and partition statistics files, kept as their JSON objects.
    statistics: tuple[Mapping[str, Any], ...] = ()
    partition_statistics: tuple[Mapping[str, Any], ...] = ()
    #: format version 3: higher than every row id assigned (``None`` in version 2)
    next_row_id: int | None = None

    # -- lookups ---------------------------------------------------------------------------

    def current_schema(self) -> Schema:
        """The schema new data is written with."""
        return self.schema_by_id(self.current_schema_id)

    def schema_by_id(self, schema_id: int) -> Schema:
        """The schema with that id; raises :class:`SchemaError` when there is none."""
        for s in self.schemas:
            if s.schema_id == schema_id:
                return s
        raise SchemaError(
            f"table {self.location} has no schema {schema_id}; "
            f"schema ids are {[s.schema_id for s in self.schemas]}"
        )

    def schema_for(self, snapshot: Snapshot) -> Schema:
        """The schema a snapshot was written with (the current one when it does not say)."""
        if snapshot.schema_id is None:
            return self.current_schema()
        return self.schema_by_id(snapshot.schema_id)

    def spec(self, spec_id: int | None = None) -> PartitionSpec:
        """The partition spec with that id (default: the default spec)."""
        wanted = self.default_spec_id if spec_id is None else spec_id
        for s in self.partition_specs:
            if s.spec_id == wanted:
                return s
        raise SchemaError(f"table {self.location} has no partition spec {wanted}")

    def sort_order(self) -> SortOrder:
        """The default sort order."""
        for o in self.sort_orders:
            if o.order_id == self.default_sort_order_id:
                return o
        return UNSORTED

    def current_snapshot(self) -> Snapshot | None:
        """The snapshot the table is at now, or ``None`` for a table without data commits."""
        if self.current_snapshot_id is None:
            return None
        return self.snapshot_by_id(self.current_snapshot_id)

    def snapshot_by_id(self, snapshot_id: int) -> Snapshot | None:
        """The snapshot with that id, or ``None`` when the table does not keep it."""
        for s in self.snapshots:
            if s.snapshot_id == snapshot_id:
                return s
        return None

    def snapshot_as_of(self, timestamp_ms: int) -> Snapshot | None:
        """The snapshot that was current at ``timestamp_ms``, from the snapshot log.

        ``None`` when the table had no snapshot then (or that snapshot was expired).
        """
        found: int | None = None
        for entry in self.snapshot_log:
            if entry.timestamp_ms <= timestamp_ms:
                found = entry.snapshot_id
            else:
                break
        return None if found is None else self.snapshot_by_id(found)

    def ancestors(self, snapshot_id: int | None = None) -> Iterator[Snapshot]:
        """The snapshot (default: current) followed by its parents, newest first, while kept."""
        sid = self.current_snapshot_id if snapshot_id is None else snapshot_id
        seen: set[int] = set()
        while sid is not None and sid not in seen:
            seen.add(sid)
            snap = self.snapshot_by_id(sid)
            if snap is None:
                return
            yield snap
            sid = snap.parent_snapshot_id

    def table_property(self, key: str, default: str | None = None) -> str | None:
        """A table property, or ``default``."""
        return self.properties.get(key, default)

    @property
    def next_sequence_number(self) -> int:
        """The sequence number the next commit's snapshot takes."""
        return self.last_sequence_number + 1


def new_snapshot_id() -> int:
    """A random positive 63-bit snapshot id, as the spec's writers use."""
    value = uuid.uuid4().int
    return (value ^ (value >> 64)) & 0x7FFF_FFFF_FFFF_FFFF or 1


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every metadata timestamp."""
    return time.time_ns() // 1_000_000


def epoch_ms(when: datetime | int | float, what: str) -> int:
    """Epoch milliseconds of a datetime (naive means UTC) or of a number already in ms;
    ``ValidationError`` naming ``what`` and the value otherwise."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp() * 1000)
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return int(when)
    raise ValidationError(
        f"{what} must be a datetime or epoch milliseconds, got {type(when).__name__}: {when!r}"
    )


def new_table_metadata(
    schema: Schema,
    location: str,
    properties: Mapping[str, str] | None = None,
    *,
    partition_spec: PartitionSpec = UNPARTITIONED,
    sort_order: SortOrder = UNSORTED,
    table_uuid: str | None = None,
    timestamp_ms: int | None = None,
    format_version: int = FORMAT_VERSION,
) -> TableMetadata:
    """Metadata of a new, empty table (no snapshot) at ``location``, keeping the schema's ids.

    ``location`` is the table's absolute URI without a trailing ``/``. A ``format_version`` 3
    table starts with ``next-row-id`` 0 and may use the nanosecond timestamps version 3 added
    (``UnsupportedFeatureError`` naming a column of the other v3 types, which datashard does
    not write); a version 2 table refuses them all (``SchemaError`` naming the columns).
    ``ValidationError`` for a format version datashard does not write.
    """
    if format_version not in WRITE_VERSIONS:
        raise ValidationError(
            f"format-version {format_version!r}: datashard creates Iceberg format versions "
            f"{' and '.join(map(str, WRITE_VERSIONS))}"
        )
    props = dict(properties or {})
    unwritten = unwritten_types_in(schema.as_struct())
    if unwritten and format_version >= LINEAGE_VERSION:
        raise UnsupportedFeatureError(
            f"column(s) {', '.join(unwritten)}: datashard writes the format version 3 types "
            "timestamp_ns and timestamptz_ns, not these"
        )
    newer = v3_types_in(schema.as_struct())
    if newer and format_version < LINEAGE_VERSION:
        raise SchemaError(
            f"column(s) {', '.join(newer)} have types of Iceberg format version 3, which a "
            f"format version {format_version} table cannot hold; create it with "
            "properties={'format-version': '3'}"
        )
    for k, v in props.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SchemaError(f"table property {k!r}: keys and values must be strings, got {v!r}")
    for f in partition_spec.fields:
        schema.find_field(f.source_id)
    return TableMetadata(
        table_uuid=table_uuid or str(uuid.uuid4()),
        location=location.rstrip("/"),
        last_updated_ms=now_ms() if timestamp_ms is None else timestamp_ms,
        last_column_id=schema.highest_field_id,
        schemas=(schema,),
        current_schema_id=schema.schema_id,
        partition_specs=(partition_spec,),
        default_spec_id=partition_spec.spec_id,
        last_partition_id=partition_spec.last_assigned_field_id,
        properties=props,
        sort_orders=(sort_order,),
        default_sort_order_id=sort_order.order_id,
        format_version=format_version,
        next_row_id=0 if format_version >= LINEAGE_VERSION else None,
    )


__all__ = [
    "FORMAT_VERSION",
    "FrozenMap",
    "LINEAGE_VERSION",
    "WRITE_VERSIONS",
    "MAIN_BRANCH",
    "PARTITION_FIELD_ID_START",
    "READ_VERSIONS",
    "UNPARTITIONED",
    "UNSORTED",
    "MetadataLogEntry",
    "Operation",
    "PartitionField",
    "PartitionSpec",
    "RefType",
    "Snapshot",
    "SnapshotLogEntry",
    "SnapshotRef",
    "SortField",
    "SortOrder",
    "TableMetadata",
    "new_snapshot_id",
    "new_table_metadata",
    "epoch_ms",
    "now_ms",
    "transform_result_type",
]
