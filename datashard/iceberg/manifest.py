"""The manifest model: data files, manifest entries and manifest-list rows, as immutable values.

A *manifest* holds :class:`ManifestEntry` rows, one per data (or delete) file, with the file's
column statistics (:class:`DataFile`). A *manifest list* holds one :class:`ManifestFile` row per
manifest of a snapshot. Nothing here knows Avro: :mod:`datashard.iceberg.manifest_codec` reads
and writes them.

Sequence numbers and snapshot ids of ADDED entries may be left ``None``: they are written as
null and *inherited* from the manifest's :class:`ManifestFile` on read. So is a data file's
``first_row_id`` in format version 3 (row lineage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Manifest entry status values.
EXISTING, ADDED, DELETED = 0, 1, 2
#: Data file content values.
DATA, POSITION_DELETES, EQUALITY_DELETES = 0, 1, 2
#: Manifest content values.
MANIFEST_DATA, MANIFEST_DELETES = 0, 1


@dataclass(frozen=True, kw_only=True)
class DataFile:
    """One data file and its column statistics, keyed by field id.

    Bounds are the spec's single-value serialization (:mod:`datashard.iceberg.conversions`).
    ``partition`` maps partition field names to their physical values (``{}`` unpartitioned).
    """

    file_path: str
    record_count: int
    file_size_in_bytes: int
    file_format: str = "PARQUET"
    column_sizes: Mapping[int, int] = field(default_factory=dict)
    value_counts: Mapping[int, int] = field(default_factory=dict)
    null_value_counts: Mapping[int, int] = field(default_factory=dict)
    nan_value_counts: Mapping[int, int] = field(default_factory=dict)
    lower_bounds: Mapping[int, bytes] = field(default_factory=dict)
    upper_bounds: Mapping[int, bytes] = field(default_factory=dict)
    partition: Mapping[str, Any] = field(default_factory=dict)
    split_offsets: tuple[int, ...] | None = None
    content: int = DATA
    sort_order_id: int | None = None
    key_metadata: bytes | None = None
    equality_ids: tuple[int, ...] | None = None
    #: the one data file every delete of this delete file is in (position deletes, DVs)
    referenced_data_file: str | None = None
    #: where a deletion vector's blob starts in its Puffin file, and its length (v3)
    content_offset: int | None = None
    content_size_in_bytes: int | None = None
    #: the row id of the file's first row (format version 3 row lineage; ``None`` otherwise)
    first_row_id: int | None = None

    @property
    def is_deletes(self) -> bool:
        """True for a delete file (position or equality deletes, or a deletion vector)."""
        return self.content != DATA


#: Reserved field ids of position delete files (the spec's ``file_position_delete``).
DELETE_FILE_PATH_ID, DELETE_POS_ID, DELETE_ROW_ID = 2147483546, 2147483545, 2147483544


@dataclass(frozen=True)
class ManifestEntry:
    """A data file's row in a manifest; ``None`` ids/sequence numbers are inherited on read."""

    status: int
    snapshot_id: int | None
    sequence_number: int | None
    file_sequence_number: int | None
    data_file: DataFile

    @property
    def is_live(self) -> bool:
        """True for ADDED and EXISTING entries (the file is part of the snapshot)."""
        return self.status != DELETED


@dataclass(frozen=True)
class FieldSummary:
    """A manifest's summary of one partition field: nulls, NaNs and bounds (serialized)."""

    contains_null: bool
    contains_nan: bool | None = None
    lower_bound: bytes | None = None
    upper_bound: bytes | None = None


@dataclass(frozen=True)
class ManifestFile:
    """A manifest's row in a manifest list."""

    manifest_path: str
    manifest_length: int
    partition_spec_id: int
    content: int
    sequence_number: int
    min_sequence_number: int
    added_snapshot_id: int
    added_files_count: int
    existing_files_count: int
    deleted_files_count: int
    added_rows_count: int
    existing_rows_count: int
    deleted_rows_count: int
    partitions: tuple[FieldSummary, ...] | None = None
    key_metadata: bytes | None = None
    #: the first row id its data files inherit from (format version 3; ``None`` otherwise)
    first_row_id: int | None = None


__all__ = [
    "ADDED",
    "DATA",
    "DELETED",
    "DELETE_FILE_PATH_ID",
    "DELETE_POS_ID",
    "DELETE_ROW_ID",
    "EQUALITY_DELETES",
    "EXISTING",
    "MANIFEST_DATA",
    "MANIFEST_DELETES",
    "POSITION_DELETES",
    "DataFile",
    "FieldSummary",
    "ManifestEntry",
    "ManifestFile",
]
