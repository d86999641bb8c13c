"""Work on other processes, for the Dask and Ray adapters: a scan cut into picklable pieces
that workers read, and the driver's side of a write whose files workers wrote.

The driver plans the scan once (manifests read, files pruned by statistics, delete files
matched to data files) and cuts it into :class:`ReadPart` pieces: one per data file, or one per
group of row groups of a large file. A piece carries everything a worker needs and nothing
else: the backend (its config: a worker rebuilds the client; its ``repr`` hides credentials),
the table metadata trimmed to the snapshot read, the columns, the filter and the
:class:`~datashard.table.scan.FileScanTask`. :meth:`ReadPart.read` runs the one read path
(:class:`~datashard.table.scan.Scan` on the worker: footer, row groups chosen by statistics,
columns by field id, delete files, residual filter), so a worker returns exactly the rows
``Scan.to_arrow`` would for that file.

Writes: the workers write with a :class:`~datashard.table.add_files.DataFileWriter` whose file
names carry a prefix unique to the write; the driver commits what they return with
``Table.add_files`` (:func:`commit_written`) and, when the write or the commit provably failed,
deletes every file with that prefix (:func:`remove_written`).

Process-wide state: :data:`_SCANS`, the worker's last few scans (each keeps the delete files it
read, so a worker reads an equality delete file once for all its pieces), guarded by a lock.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datashard.errors import CommitStateUnknownError, ConfigError, SchemaError, ValidationError
from datashard.iceberg.expressions import AlwaysTrue, Expr, FilterLike
from datashard.iceberg.manifest import MANIFEST_DATA
from datashard.iceberg.metadata import Snapshot, TableMetadata
from datashard.iceberg.schema import Schema
from datashard.storage.base import StorageBackend
from datashard.table.add_files import DataFileWriter, WrittenFile
from datashard.table.commit import delete_quietly
from datashard.table.manifests import ManifestReader
from datashard.table.scan import FileScanTask, Scan
from datashard.table.updates import check_idempotency_key, snapshot_with_key
from datashard.table.versions import key_for_uri

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
        schema = scan.output_schema()
        table = scan.read_task(self.task, self.row_groups)
        return table if table.schema == schema else table.cast(schema)


def source_of(scan: Scan) -> ScanSource:
    """What a worker needs to read pieces of ``scan``: the metadata trimmed to the snapshot
    read (and the current one, which decides the schema of a time-travel read). Raises
    ``ConfigError`` for a ``memory://`` table (it lives in one process)."""
    backend = scan.backend
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
    row-group offsets in the manifest; ``None``: never cut). ``ValidationError`` for a
    ``piece_bytes`` that is not ``None`` or a positive int."""
    if piece_bytes is not None and (
        not isinstance(piece_bytes, int) or isinstance(piece_bytes, bool) or piece_bytes < 1
    ):
        raise ValidationError(f"piece_bytes must be None or an int >= 1, got {piece_bytes!r}")
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


# --------------------------------------------------------------------------------------------
# distributed writes: the driver's side


def check_columns(schema: Schema, given: pa.Schema) -> None:
    """``SchemaError`` naming the column unless data of ``given`` can be appended to a table
    of ``schema`` (columns by name; safe widenings allowed; optional columns may be absent)."""
    names = set(schema.column_names)
    extra = [n for n in given.names if n not in names]
    if extra:
        raise SchemaError(
            f"column(s) {', '.join(map(repr, extra))} are not in the table; its columns are: "
            + ", ".join(schema.column_names)
        )
    try:
        schema.coerce_arrow(given.empty_table())
    except ValidationError as exc:
        raise SchemaError(f"the data does not fit the table schema: {exc}") from exc


def remove_written(backend: StorageBackend, writer: DataFileWriter) -> list[str]:
    """Delete every file ``writer`` (by its name prefix) wrote under the table's ``data/``;
    their keys. For the distributed helpers, when their commit provably did not land."""
    if not writer.name_prefix:
        raise ValidationError("remove_written needs a writer with a name prefix")
    keys = [m.key for m in backend.list(f"{writer.data_dir}/{writer.name_prefix}")]
    delete_quietly(backend, keys)
    return keys


def commit_written(
    add_files: Callable[..., Snapshot],
    writer: DataFileWriter,
    files: Sequence[WrittenFile],
    idempotency_key: str | None = None,
) -> Snapshot | None:
    """Commit what the workers of one distributed write returned (``add_files`` is the
    table's); ``None`` when they wrote nothing. Files the writer's prefix names that are not
    committed (a retried task's first attempt; every file, when the ``idempotency_key`` had
    landed already) are deleted after the commit; when the commit provably failed, every file
    the writer wrote is deleted and the error re-raised (with ``CommitStateUnknownError`` the
    files are kept: the commit may have landed)."""
    if not files:
        remove_written(writer.backend, writer)  # a task that failed half-way may have left one
        return None
    try:
        result = add_files(list(files), idempotency_key=idempotency_key)
    except CommitStateUnknownError:
        raise
    except BaseException:
        remove_written(writer.backend, writer)
        raise
    if idempotency_key is not None and not _holds(writer.backend, result, files[0].path):
        remove_written(writer.backend, writer)  # another attempt of this write landed first
        return result
    committed = {key_for_uri(writer.backend, f.path) for f in files}
    stray = [
        m.key
        for m in writer.backend.list(f"{writer.data_dir}/{writer.name_prefix}")
        if m.key not in committed
    ]
    delete_quietly(writer.backend, stray)
    return result


def already_landed(md: TableMetadata, idempotency_key: str | None) -> Snapshot | None:
    """The retained snapshot of ``md`` carrying ``idempotency_key`` (``None``: none, or no
    key); ``ValidationError`` for a malformed key."""
    if idempotency_key is None:
        return None
    return snapshot_with_key(md, check_idempotency_key(idempotency_key))


def _holds(backend: StorageBackend, snapshot: Snapshot, path: str) -> bool:
    """Whether ``snapshot`` added the data file ``path`` (reads its own manifests)."""
    reader = ManifestReader(backend)
    for m in reader.manifests(snapshot):
        if m.content != MANIFEST_DATA or m.added_snapshot_id != snapshot.snapshot_id:
            continue
        if any(e.data_file.file_path == path for e in reader.entries(m)):
            return True
    return False


def new_operation_prefix() -> str:
    """A file name prefix unique to one distributed write."""
    return f"{uuid.uuid4().hex[:16]}-"


#: A worker's recent scans, by their pickled source (see the module docstring).
_SCANS: OrderedDict[bytes, Scan] = OrderedDict()
_MAX_SCANS = 8
_LOCK = threading.Lock()


__all__ = [
    "DEFAULT_PIECE_BYTES",
    "ReadPart",
    "ScanSource",
    "plan_parts",
    "scan_of",
    "source_of",
    "already_landed",
    "check_columns",
    "commit_written",
    "new_operation_prefix",
    "remove_written",
]
