"""A scan cut into picklable pieces that other processes read: the Dask and Ray readers.

The driver plans the scan once (manifests read, files pruned by statistics, delete files
matched to data files) and cuts it into :class:`ReadPart` pieces: one per data file, or one per
group of row groups of a large file. A piece carries everything a worker needs and nothing
else: the backend (its config: a worker rebuilds the client; its ``repr`` hides credentials),
the table metadata trimmed to the snapshot read, the columns, the filter and the
:class:`~datashard.table.scan.FileScanTask`. :meth:`ReadPart.read` runs the one read path
(:class:`~datashard.table.scan.Scan` on the worker: footer, row groups chosen by statistics,
columns by field id, delete files, residual filter), so a worker returns exactly the rows
``Scan.to_arrow`` would for that file.

Process-wide state: :data:`_SCANS`, the worker's last few scans (each keeps the delete files it
read, so a worker reads an equality delete file once for all its pieces), guarded by a lock.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datashard.errors import ConfigError, ValidationError
from datashard.iceberg.expressions import AlwaysTrue, Expr, FilterLike
from datashard.iceberg.metadata import TableMetadata
from datashard.storage.base import StorageBackend
from datashard.table.scan import FileScanTask, Scan

#: Files larger than this are read as several pieces (groups of row groups) by default.
DEFAULT_PIECE_BYTES = 256 << 20


@dataclass(frozen=True)
class ScanSource:
    """What every piece of one scan shares (pickled once per Dask graph)."""

    backend: StorageBackend
    metadata: TableMetadata
    snapshot_id: int | None
    columns: tuple[str, ...]
    filter: Expr

    def __repr__(self) -> str:
        return (
            f"ScanSource({self.metadata.location!r}, snapshot={self.snapshot_id}, "
            f"columns={list(self.columns)})"
        )

    def scan(self) -> Scan:
        """The scan on this process (kept for the next pieces of the same scan)."""
        key = pickle.dumps(self)
        with _LOCK:
            found = _SCANS.get(key)
            if found is not None:
                _SCANS.move_to_end(key)
                return found
        scan = Scan(
            self.backend,
            self.metadata,
            columns=list(self.columns),
            filter=self.filter,
            snapshot_id=self.snapshot_id,
        )
        with _LOCK:
            _SCANS[key] = scan
            while len(_SCANS) > _MAX_SCANS:
                _SCANS.popitem(last=False)
        return scan


@dataclass(frozen=True)
class ReadPart:
    """One piece of a scan: a data file, or some of its row groups."""

    source: ScanSource
    task: FileScanTask
    #: the row groups (by index in the file) this piece reads; ``None``: the whole file
    row_groups: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        groups = "" if self.row_groups is None else f", row_groups={list(self.row_groups)}"
        return f"ReadPart({self.task.file_path!r}{groups})"

    @property
    def size_bytes(self) -> int:
        """About how many bytes of the file this piece reads (from the manifest)."""
        offsets = self.task.data_file.split_offsets
        if self.row_groups is None or not offsets:
            return self.task.file_size_in_bytes
        ends = [*offsets[1:], self.task.file_size_in_bytes]
        return sum(ends[i] - offsets[i] for i in self.row_groups)

    @property
    def num_rows(self) -> int | None:
        """The rows this piece returns when the manifest tells (a whole file with no delete
        file and no filter); ``None`` otherwise."""
        exact = (
            self.row_groups is None
            and not self.task.deletes
            and isinstance(self.source.filter, AlwaysTrue)
        )
        return self.task.record_count if exact else None

    def read(self) -> pa.Table:
        """The piece's matching rows in the scan's output schema (deletes applied)."""
        scan = self.source.scan()
        schema = output_schema(scan)
        if self.row_groups is None:
            table = scan._read_task(self.task)
        else:
            reader = scan._open(self.task)
            wanted = set(self.row_groups)
            columns = list(scan.columns)
            tables = [
                reader.read_row_group(rg).select(columns)
                for rg in reader.row_groups()
                if rg in wanted
            ]
            table = pa.concat_tables(tables) if tables else schema.empty_table()
        return table if table.schema == schema else table.cast(schema)


def output_schema(scan: Scan) -> pa.Schema:
    """The Arrow schema of the rows ``scan`` returns."""
    return scan._output_schema()


def source_of(scan: Scan) -> ScanSource:
    """What a worker needs to read pieces of ``scan``: the metadata trimmed to the snapshot
    read (and the current one, which decides the schema of a time-travel read). Raises
    ``ConfigError`` for a ``memory://`` table (it lives in one process)."""
    backend = scan._backend
    if backend.scheme == "memory":
        raise ConfigError(
            "a memory:// table lives in one process: Dask and Ray workers cannot read or "
            "write it; use a file://, s3://, az:// or gs:// warehouse"
        )
    md = scan.metadata
    keep = {s.snapshot_id for s in (scan.snapshot, md.current_snapshot()) if s is not None}
    trimmed = dataclasses.replace(
        md,
        snapshots=tuple(s for s in md.snapshots if s.snapshot_id in keep),
        snapshot_log=(),
        metadata_log=(),
        refs={},
        statistics=(),
        partition_statistics=(),
    )
    snapshot_id = scan.snapshot.snapshot_id if scan.snapshot is not None else None
    return ScanSource(backend, trimmed, snapshot_id, tuple(scan.columns), scan.filter)


def scan_of(
    table_or_scan: Any,
    columns: Sequence[str] | None,
    filter: FilterLike,
    snapshot_id: int | None,
) -> Scan:
    """The scan a ``read_table`` reads: ``table.scan(columns, filter, snapshot_id)``, or the
    scan given narrowed by ``columns`` and ``filter``."""
    if isinstance(table_or_scan, Scan):
        if snapshot_id is not None:
            raise ValidationError(
                "snapshot_id is chosen when the scan is made: table.scan(snapshot_id=...)"
            )
        scan = table_or_scan
        if columns is not None:
            scan = scan.select(*columns)
        if filter is not None:
            scan = scan.where(filter)
        return scan
    scan_method = getattr(table_or_scan, "scan", None)
    if scan_method is None:
        raise ValidationError(
            f"read_table takes a datashard Table or Scan, got {type(table_or_scan).__name__}"
        )
    result: Scan = scan_method(columns, filter, snapshot_id)
    return result


def plan_parts(scan: Scan, piece_bytes: int | None = DEFAULT_PIECE_BYTES) -> list[ReadPart]:
    """The pieces of ``scan``, in commit order: one per planned file, a file larger than
    ``piece_bytes`` cut into groups of whole row groups of about that many bytes (by the
    row-group offsets in the manifest; ``None``: never cut)."""
    source = source_of(scan)
    parts: list[ReadPart] = []
    for task in scan.plan_files():
        for groups in _row_group_groups(task, piece_bytes):
            parts.append(ReadPart(source, task, groups))
    return parts


def _row_group_groups(
    task: FileScanTask, piece_bytes: int | None
) -> Sequence[tuple[int, ...] | None]:
    offsets = task.data_file.split_offsets
    size = task.file_size_in_bytes
    if piece_bytes is None or size <= piece_bytes or not offsets or len(offsets) < 2:
        return [None]
    ends = [*offsets[1:], size]
    groups: list[tuple[int, ...]] = []
    current: list[int] = []
    held = 0
    for i, start in enumerate(offsets):
        current.append(i)
        held += ends[i] - start
        if held >= piece_bytes:
            groups.append(tuple(current))
            current, held = [], 0
    if current:
        groups.append(tuple(current))
    return groups if len(groups) > 1 else [None]


#: A worker's recent scans, by their pickled source (see the module docstring).
_SCANS: OrderedDict[bytes, Scan] = OrderedDict()
_MAX_SCANS = 8
_LOCK = threading.Lock()


__all__ = [
    "DEFAULT_PIECE_BYTES",
    "ReadPart",
    "ScanSource",
    "output_schema",
    "plan_parts",
    "scan_of",
    "source_of",
]
