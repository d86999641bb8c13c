"""Reading a snapshot: plan the data files (pruned by manifest statistics), then read them.

``Scan`` is immutable and lazy: nothing is read until :meth:`Scan.plan_files` or one of the
``to_*`` methods runs. Data files are read by Parquet field id, not by column name, so a column
renamed or reordered since a file was written still reads correctly, and a column added later
reads as nulls in older files.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

import pyarrow as pa

from datashard.errors import (
    CorruptMetadataError,
    SchemaError,
    SnapshotExpiredError,
    StorageError,
    ValidationError,
)
from datashard.iceberg.conversions import from_bytes
from datashard.iceberg.deletes import DeleteFile
from datashard.iceberg.expressions import (
    Bound,
    BoundTrue,
    Expr,
    FilterLike,
    bind_schema,
    might_match,
    referenced_columns,
    to_expr,
)
from datashard.iceberg.lineage import LINEAGE_FIELDS
from datashard.iceberg.manifest import (
    DELETED,
    MANIFEST_DATA,
    DataFile,
    ManifestEntry,
    ManifestFile,
)
from datashard.iceberg.metadata import Snapshot, TableMetadata, epoch_ms
from datashard.iceberg.partitioning import PartitionPruner
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import NestedField, to_arrow_field
from datashard.io.deletes import FileDeletes
from datashard.io.parquet import DataFileReader
from datashard.table.deletes import DeleteReader, delete_index
from datashard.table.manifests import manifest_entries, read_manifest_files
from datashard.table.process import bounded_map, submit
from datashard.table.versions import TablePaths, key_for_uri, load_newest

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import polars as pl

    from datashard.storage.base import StorageBackend

#: Data files and manifests read at once by one scan.
DEFAULT_WORKERS = 8
#: Row groups (and data file footers) :meth:`Scan.to_batches` reads ahead of the one it yields.
READ_AHEAD = 4


@dataclass(frozen=True)
class FileScanTask:
    """One data file to read, with what the manifest says about it."""

    file_path: str
    data_file: DataFile
    record_count: int
    file_size_in_bytes: int
    #: the data sequence number: the commit order of the file
    sequence_number: int = 0
    #: the partition spec the file was written with
    spec_id: int = 0
    #: the delete files that apply to it (position deletes, equality deletes)
    deletes: tuple[DeleteFile, ...] = ()


class Scan:
    """A read of one snapshot: which columns, which rows.

    ``max_workers`` bounds the manifests read at once and the data files read at once (on the
    process's shared pool, ``datashard.table.process``); :meth:`to_arrow` and :meth:`to_pandas`
    start a manifest's files as soon as it is parsed. The backend's own request limit
    (``max_concurrency``) applies on top.

    Raises ``ValidationError`` when built for an unknown column, snapshot id or a time before
    the first snapshot.
    """

    def __init__(
        self,
        backend: StorageBackend,
        metadata: TableMetadata,
        *,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        max_workers: int = DEFAULT_WORKERS,
    ) -> None:
        self._backend = backend
        self.metadata = metadata
        self.snapshot = _choose_snapshot(metadata, snapshot_id, as_of)
        self.schema = _schema_for(metadata, self.snapshot)
        self.filter: Expr = to_expr(filter)
        self.max_workers = max(1, max_workers)
        if columns is None:
            self.columns: tuple[str, ...] = tuple(self.schema.column_names)
        else:
            if isinstance(columns, str):
                columns = [columns]
            self.columns = _checked_columns(self, list(columns))
        if not self.columns:
            raise ValidationError("a scan must read at least one column; columns=[] was given")
        self._bound: Bound = bind_schema(self.filter, self.schema)
        self._deletes = DeleteReader(backend, metadata)
        self._read_fields = _read_fields(self, self.columns, self.filter)

    # -- planning -------------------------------------------------------------------------

    def plan_files(self) -> Iterator[FileScanTask]:
        """The data files of the snapshot that might hold matching rows (stats-pruned)."""
        tasks = [task for group in self._planned_groups() for task in group]
        tasks.sort(key=lambda t: t.sequence_number)  # rows come back in commit order
        return iter(tasks)

    def _planned_groups(self) -> Iterator[list[FileScanTask]]:
        """The matching files of each data manifest, manifest by manifest as they are read
        (concurrently, in manifest-list order)."""
        if self.snapshot is None:
            return iter(())
        pruner = PartitionPruner(self.metadata, self._bound)  # datashard.iceberg.partitioning
        listed = [m for m in self._manifest_files(self.snapshot) if pruner.manifest_might_match(m)]
        manifests = [m for m in listed if _is_data_manifest(m)]
        deletes = delete_index(
            self.metadata,
            listed,
            self._entries,
            lambda m, df: self._might_match(pruner, m.partition_spec_id, df),
        )

        def entries(m: ManifestFile) -> list[FileScanTask]:
            tasks = []
            for entry in self._entries(m):
                if _is_deleted(entry.status):
                    continue
                df = entry.data_file
                if not self._might_match(pruner, m.partition_spec_id, df):
                    continue
                seq = entry.sequence_number or 0
                tasks.append(
                    FileScanTask(
                        df.file_path,
                        df,
                        df.record_count,
                        df.file_size_in_bytes,
                        seq,
                        m.partition_spec_id,
                        deletes.for_data_file(df, seq, m.partition_spec_id),
                    )
                )
            return tasks

        if len(manifests) <= 1:
            return iter([entries(m) for m in manifests])
        return bounded_map(entries, manifests, self.max_workers)

    def _manifest_files(self, snapshot: Snapshot) -> list[ManifestFile]:
        try:
            return read_manifest_files(self._backend, snapshot)
        except CorruptMetadataError as exc:
            raise self._expired(exc) from exc

    def _entries(self, m: ManifestFile) -> list[ManifestEntry]:
        try:
            return manifest_entries(self._backend, m)
        except CorruptMetadataError as exc:
            raise self._expired(exc) from exc

    def _expired(self, exc: CorruptMetadataError) -> CorruptMetadataError | SnapshotExpiredError:
        """For a manifest list or manifest of the scanned snapshot found missing:
        ``SnapshotExpiredError`` when the newest metadata no longer keeps the snapshot (its
        files were removed after it left the kept history), else ``exc`` itself."""
        if not isinstance(exc.__cause__, FileNotFoundError) or self.snapshot is None:
            return exc
        snapshot_id = self.snapshot.snapshot_id
        try:
            paths = TablePaths(key_for_uri(self._backend, self.metadata.location))
            newest = load_newest(self._backend, paths)
        except (StorageError, CorruptMetadataError):
            return exc
        if newest is None or newest.metadata.snapshot_by_id(snapshot_id) is not None:
            return exc
        return SnapshotExpiredError(
            f"snapshot {snapshot_id} of table {self.metadata.location} is no longer kept (the "
            f"newest version, v{newest.version}, keeps {len(newest.metadata.snapshots)} "
            "snapshots; history.expire.max-snapshots sets how many) and its metadata files "
            f"were removed ({exc}); refresh() the table and read again, or raise "
            "history.expire.max-snapshots to keep snapshots longer"
        )

    def deletes_of(self, task: FileScanTask) -> FileDeletes | None:
        """The rows the delete files of ``task`` delete, read (``None`` when none apply):
        for readers that read a data file in pieces, such as the row-group loader."""
        return self._deletes.file_deletes(task.data_file, task.deletes)

    def fields_for(self, task: FileScanTask | None) -> list[NestedField]:
        """The fields a reader of ``task``'s file reads by field id: the columns of the scan
        and of its filter, then those its equality deletes compare (for readers that read a
        data file in pieces, such as the row-group loader)."""
        if task is None:
            return list(self._read_fields)
        extra = self._deletes.equality_fields(task.deletes, self._read_fields)
        return [*self._read_fields, *extra]

    @property
    def bound(self) -> Bound:
        """The scan's filter bound to its schema."""
        return self._bound

    def _might_match(self, pruner: PartitionPruner, spec_id: int, df: DataFile) -> bool:
        """Whether a data or delete file may hold a row in the filter's range (partition
        values, then column statistics; for a delete file they describe the deleted rows)."""
        if not pruner.file_might_match(spec_id, df):
            return False
        return isinstance(self._bound, BoundTrue) or might_match(self._bound, df, from_bytes)

    # -- reading --------------------------------------------------------------------------

    @property
    def backend(self) -> StorageBackend:
        """The storage the scan reads through."""
        return self._backend

    def output_schema(self) -> pa.Schema:
        """The Arrow schema of the rows the scan returns (its columns, in order)."""
        by_name = {**{f.name: f for f in self.schema.fields}, **LINEAGE_FIELDS}
        return pa.schema([to_arrow_field(by_name[c]) for c in self.columns])

    def read_task(self, task: FileScanTask, row_groups: Sequence[int] | None = None) -> pa.Table:
        """The matching rows of one file :meth:`plan_files` gave, deletes and the filter
        applied, in the scan's columns: a piece of the scan another process can read (Dask
        and Ray read scans this way). ``row_groups``: only these row groups of the file (by
        index), of those the filter does not rule out."""
        if row_groups is None:
            table = self._deletes.read(
                task.data_file,
                task.deletes,
                self._read_fields,
                self._bound,
                sequence_number=task.sequence_number,
            )
            return table.select(list(self.columns))
        reader = self._open(task)
        wanted = set(row_groups)
        columns = list(self.columns)
        tables = [
            reader.read_row_group(rg).select(columns) for rg in reader.row_groups() if rg in wanted
        ]
        return pa.concat_tables(tables) if tables else self.output_schema().empty_table()

    def _read_task(self, task: FileScanTask) -> pa.Table:
        return self.read_task(task)

    def _tables(self) -> Iterator[pa.Table]:
        tasks = list(self.plan_files())
        if len(tasks) <= 1:
            yield from (self._read_task(t) for t in tasks)
            return
        yield from bounded_map(self._read_task, tasks, self.max_workers)

    def _all_tables(self) -> list[pa.Table]:
        """Every matching file read, in commit order. A manifest's files start reading as soon
        as it is parsed, while later manifests are still being read: on object storage the
        planning and the reading overlap instead of taking a round trip each."""
        started: list[tuple[int, Future[pa.Table]]] = []
        in_flight: deque[Future[pa.Table]] = deque()
        for group in self._planned_groups():
            for task in group:
                while len(in_flight) >= self.max_workers:  # at most max_workers reads at once
                    in_flight.popleft().result()
                future = submit(self._read_task, task)
                in_flight.append(future)
                started.append((task.sequence_number, future))
        started.sort(key=lambda pair: pair[0])  # stable: commit order, as plan_files gives
        return [future.result() for _, future in started]

    def to_arrow(self) -> pa.Table:
        """The matching rows as one Arrow table (an empty one with the schema if none)."""
        schema = self.output_schema()
        tables = [t if t.schema == schema else t.cast(schema) for t in self._all_tables()]
        if not tables:
            return schema.empty_table()
        return pa.concat_tables(tables)

    def to_batches(self, batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
        """The matching rows as Arrow record batches, in commit order, streamed row group by
        row group: at most :data:`READ_AHEAD` row groups are fetched and decoded ahead of the
        one being yielded, so memory stays near that many row groups whatever the table's size.

        ``batch_size``: rows per batch (the last may be shorter); ``None`` yields each row
        group's rows as they come. Raises ``ValidationError`` for a ``batch_size`` that is not
        a positive int.
        """
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValidationError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
        return _rebatch(self._row_group_tables(), self.output_schema(), batch_size)

    def to_arrow_batch_reader(self, batch_size: int | None = None) -> pa.RecordBatchReader:
        """The matching rows as a pyarrow ``RecordBatchReader`` (streamed as by
        :meth:`to_batches`), for DuckDB, Polars, Arrow Flight or ``pyarrow.dataset``."""
        schema = self.output_schema()
        return pa.RecordBatchReader.from_batches(schema, self.to_batches(batch_size))

    def _open(self, task: FileScanTask) -> DataFileReader:
        """A reader of ``task``'s file: its footer read, its deletes and the filter given."""
        reader, _ = self._deletes.open(
            task.data_file,
            task.deletes,
            self._read_fields,
            self._bound,
            sequence_number=task.sequence_number,
        )
        return reader

    def _row_group_tables(self) -> Iterator[pa.Table]:
        """Each chosen row group's matching rows (output columns), in commit order, with at
        most :data:`READ_AHEAD` row groups (and as many footers) read ahead."""
        tasks = iter(self.plan_files())
        opening: deque[Future[DataFileReader]] = deque()
        pending: deque[Future[pa.Table]] = deque()
        columns = list(self.columns)

        def read(reader: DataFileReader, row_group: int) -> pa.Table:
            return reader.read_row_group(row_group).select(columns)

        def jobs() -> Iterator[tuple[DataFileReader, int]]:
            while True:
                while len(opening) < READ_AHEAD:
                    task = next(tasks, None)
                    if task is None:
                        break
                    opening.append(submit(self._open, task))
                if not opening:
                    return
                reader = opening.popleft().result()
                for row_group in reader.row_groups():
                    yield reader, row_group

        work = jobs()
        try:
            while True:
                while len(pending) < READ_AHEAD:
                    job = next(work, None)
                    if job is None:
                        break
                    pending.append(submit(read, *job))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in (*pending, *opening):
                future.cancel()

    def to_pandas(self, **kwargs: Any) -> pd.DataFrame:
        """The matching rows as a pandas DataFrame (``kwargs`` go to ``Table.to_pandas``)."""
        return self.to_arrow().to_pandas(**kwargs)

    def to_duckdb(
        self,
        name: str,
        connection: duckdb.DuckDBPyConnection | None = None,
        *,
        stream: bool = False,
    ) -> duckdb.DuckDBPyConnection:
        """The matching rows registered as the view ``name`` in a DuckDB connection (a new
        in-memory one when ``connection`` is ``None``), which is returned.

        By default the rows are read into one Arrow table first (the view can be queried any
        number of times). With ``stream=True`` the view is over :meth:`to_arrow_batch_reader`
        instead: memory stays near a few row groups, but the view can be read only ONCE.
        Raises ``ImportError`` naming the package when duckdb is not installed.
        """
        duckdb_module = optional_import("duckdb", "to_duckdb")
        if not isinstance(name, str) or not name:
            raise ValidationError(f"to_duckdb needs a view name (a non-empty str), got {name!r}")
        con = duckdb_module.connect() if connection is None else connection
        data = self.to_arrow_batch_reader() if stream else self.to_arrow()
        con.register(name, data)
        return con

    @overload
    def to_polars(self, *, lazy: Literal[False] = False) -> pl.DataFrame: ...
    @overload
    def to_polars(self, *, lazy: Literal[True]) -> pl.LazyFrame: ...
    def to_polars(self, *, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
        """The matching rows as a polars DataFrame (read whole, through :meth:`to_arrow`).
        Raises ``ImportError`` naming the package when polars is not installed.

        ``lazy=True``: a ``polars.LazyFrame`` that reads nothing until collected, then reads
        through this scan with what polars pushes down: only the columns the query uses, the
        filter's comparisons as the scan's filter (files and row groups that cannot match are
        skipped), and a row limit (see :mod:`datashard.table.polars_io`).
        """
        if lazy:
            from datashard.table.polars_io import lazy_frame

            return lazy_frame(self)
        polars = optional_import("polars", "to_polars")
        frame: pl.DataFrame = polars.DataFrame(self.to_arrow())
        return frame

    def count(self) -> int:
        """How many rows match: from manifest record counts alone when there is no filter and
        no delete file applies; from the position delete files when only they apply; else by
        reading the rows."""
        if isinstance(self._bound, BoundTrue):
            total = 0
            narrow: Scan | None = None
            for task in self.plan_files():
                if not task.deletes:
                    total += task.record_count
                    continue
                n = self._deletes.count(task.data_file, task.deletes)
                if n is None:  # equality deletes: read one column with them applied
                    narrow = narrow or replace_columns(self, list(self.columns[:1]))
                    n = narrow._read_task(task).num_rows
                total += n
            return total
        narrow = replace_columns(self, [f.name for f in self._read_fields][:1])
        return sum(t.num_rows for t in narrow._tables())

    # -- derived scans ----------------------------------------------------------------------

    def select(self, *columns: str) -> Scan:
        """The same scan reading only ``columns``."""
        return replace_columns(self, list(columns))

    def where(self, expr: FilterLike) -> Scan:
        """The same scan with ``expr`` and-ed to its filter."""
        new = _copy(self)
        new.filter = self.filter & to_expr(expr)
        new._bound = bind_schema(new.filter, self.schema)
        new._read_fields = _read_fields(new, new.columns, new.filter)
        return new

    # -- other engines (datashard.dask, datashard.ray) ----------------------------------------

    def to_dask(self, **kwargs: Any) -> Any:
        """The matching rows as a lazy Dask DataFrame read by Dask workers
        (``datashard.dask.read_table(self, **kwargs)``). ``ImportError`` naming the package
        when dask is not installed."""
        return importlib.import_module("datashard.dask").read_table(self, **kwargs)

    def to_ray(self, **kwargs: Any) -> Any:
        """The matching rows as a Ray Dataset read by Ray tasks
        (``datashard.ray.read_table(self, **kwargs)``). ``ImportError`` naming the package
        when ray is not installed."""
        return importlib.import_module("datashard.ray").read_table(self, **kwargs)


def optional_import(module: str, method: str) -> Any:
    """``module`` imported, or ``ImportError`` saying which package ``method`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{method}() needs the optional package {module!r}: pip install {module}"
        ) from exc


def _rebatch(
    tables: Iterator[pa.Table], schema: pa.Schema, batch_size: int | None
) -> Iterator[pa.RecordBatch]:
    """The rows of ``tables`` as record batches of ``schema``: ``batch_size`` rows each (the
    last fewer), or as they come when ``None``."""
    buffered: list[pa.Table] = []
    rows = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        if table.schema != schema:
            table = table.cast(schema)
        if batch_size is None:
            yield from table.to_batches()
            continue
        buffered.append(table)
        rows += table.num_rows
        if rows < batch_size:
            continue
        whole = pa.concat_tables(buffered)
        start = 0
        while rows - start >= batch_size:
            yield _one_batch(whole.slice(start, batch_size))
            start += batch_size
        buffered = [whole.slice(start)] if start < rows else []
        rows -= start
    if rows:
        yield _one_batch(pa.concat_tables(buffered))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.to_batches()
    if len(batches) == 1:
        return batches[0]
    return table.combine_chunks().to_batches()[0]


def _copy(scan: Scan) -> Scan:
    new = Scan.__new__(Scan)
    new.__dict__.update(scan.__dict__)
    return new


def replace_columns(scan: Scan, columns: list[str]) -> Scan:
    """``scan`` reading ``columns`` (validated against its schema)."""
    new = _copy(scan)
    new.columns = _checked_columns(scan, columns)
    new._read_fields = _read_fields(new, new.columns, scan.filter)
    return new


def _checked_columns(scan: Scan, columns: list[str]) -> tuple[str, ...]:
    """``columns`` if the scan can read them all: the schema's columns, and on a format
    version 3 table the row-lineage columns; ``ValidationError`` naming the others."""
    names = scan.schema.column_names
    lineage = [c for c in columns if c in LINEAGE_FIELDS and c not in names]
    if lineage and scan.metadata.format_version < 3:
        raise ValidationError(
            f"column(s) {', '.join(map(repr, lineage))}: row lineage exists in format version "
            f"3 tables only; table {scan.metadata.location} is version "
            f"{scan.metadata.format_version}"
        )
    unknown = [c for c in columns if c not in names and c not in lineage]
    if unknown:
        raise ValidationError(
            f"unknown column(s) {', '.join(map(repr, unknown))}; the table has: {', '.join(names)}"
        )
    return tuple(columns)


def _read_fields(scan: Scan, columns: Sequence[str], filter: Expr) -> list[NestedField]:
    """The fields a reader reads for ``columns`` and ``filter``: the schema's, then the
    row-lineage columns asked for."""
    needed = set(columns) | referenced_columns(filter)
    fields = [f for f in scan.schema.fields if f.name in needed]
    have = {f.name for f in fields}
    return fields + [LINEAGE_FIELDS[c] for c in columns if c in LINEAGE_FIELDS and c not in have]


def _is_data_manifest(m: ManifestFile) -> bool:
    return int(getattr(m, "content", 0) or 0) == MANIFEST_DATA


def _is_deleted(status: Any) -> bool:
    return int(status) == DELETED


def _choose_snapshot(
    metadata: TableMetadata, snapshot_id: int | None, as_of: datetime | int | float | None
) -> Snapshot | None:
    if snapshot_id is not None and as_of is not None:
        raise ValidationError("pass snapshot_id or as_of, not both")
    if snapshot_id is not None:
        snap = metadata.snapshot_by_id(snapshot_id)
        if snap is None:
            known = [s.snapshot_id for s in metadata.snapshots]
            raise ValidationError(
                f"no snapshot with id {snapshot_id} in table {metadata.location}; "
                f"known snapshots: {known[-10:]}{' ...' if len(known) > 10 else ''}"
            )
        return snap
    if as_of is not None:
        ms = epoch_ms(as_of, "as_of")
        snap = metadata.snapshot_as_of(ms)
        if snap is None:
            first = min((s.timestamp_ms for s in metadata.snapshots), default=None)
            raise ValidationError(
                f"table {metadata.location} has no snapshot at or before {ms} ms"
                + (f"; its first snapshot is at {first} ms" if first is not None else "")
            )
        return snap
    return metadata.current_snapshot()


def _schema_for(metadata: TableMetadata, snapshot: Snapshot | None) -> Schema:
    if snapshot is not None and snapshot.snapshot_id != metadata.current_snapshot_id:
        try:
            return metadata.schema_for(snapshot)  # time travel reads with the schema of then
        except SchemaError:
            pass
    return metadata.current_schema()


__all__ = ["FileScanTask", "Scan"]
