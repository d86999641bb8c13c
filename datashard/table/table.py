"""``Table``: one Iceberg table on a backend: its snapshots, reads, and appends.

A ``Table`` holds the metadata version it last loaded and does not reload before a commit: the
conditional create of the next version detects a stale base, and the commit loop then reloads.
That keeps a warm, uncontended append at five storage requests (data, manifest, manifest list,
metadata, hint). Call :meth:`Table.refresh` to see other writers' commits.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

import pyarrow as pa

from datashard.errors import (
    CorruptMetadataError,
    ObjectNotFoundError,
    TableError,
    TableNotFoundError,
    ValidationError,
)
from datashard.iceberg.defaults import fill_write_defaults_arrow, fill_write_defaults_records
from datashard.iceberg.expressions import FilterLike, bind_schema
from datashard.iceberg.metadata import RefType, Snapshot, TableMetadata
from datashard.iceberg.partitioning import SpecLike
from datashard.iceberg.records import find_unencodable
from datashard.iceberg.schema import Schema, check_not_empty
from datashard.iceberg.schema_update import SchemaUpdate
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.table import add_files as _add_files
from datashard.table import compact as _compact
from datashard.table import evolution, expire, orphans, refs, rewrite, row_delta
from datashard.table import properties as table_properties
from datashard.table import upsert as _upsert
from datashard.table.append import AppendCommit, Progress, WriterState
from datashard.table.history import HistoryEntry
from datashard.table.history import history as history_of
from datashard.table.inspect import InspectTable
from datashard.table.process import ProcessLocal
from datashard.table.scan import Scan
from datashard.table.updates import (
    AlreadyCommittedError,
    check_idempotency_key,
    check_writable,
    snapshot_with_key,
)
from datashard.table.versions import (
    Loaded,
    TablePaths,
    deleted_version,
    key_for_uri,
    load_newest,
    parse_version,
    version_of,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import polars as pl

#: What ``append`` and ``overwrite`` take: a pandas DataFrame, a pyarrow Table or RecordBatch.
DataLike: TypeAlias = "pd.DataFrame | pa.Table | pa.RecordBatch"
CompactResult = _compact.CompactResult
UpsertResult = _upsert.UpsertResult
ExpireResult = expire.ExpireResult
Cutoff = expire.Cutoff


class Table:
    """An Iceberg v2 table. Get one from ``create_table`` / ``load_table``."""

    def __init__(
        self,
        backend: StorageBackend,
        paths: TablePaths | None,
        loaded: Loaded,
        *,
        name: str,
    ) -> None:
        self._backend = backend
        self._paths = paths
        self._loaded = loaded
        self.name = name
        #: what this writer keeps between its appends (manifests, entries, prefetches)
        self._writer = WriterState()
        #: background work of recent commits (version-hint writes) not known to be done; work
        #: a parent process started is not waited for in a forked child (no thread runs it)
        self._background: ProcessLocal[list[Future[bool]]] = ProcessLocal(list)
        #: a read-only table's metadata key, and whether ``load_table(name)`` found it
        self._read_only_key = ""
        self._found_by_name = False

    # -- opening tables written elsewhere ----------------------------------------------------

    @classmethod
    def from_metadata(cls, metadata_uri: str, **storage_options: Any) -> Table:
        """The table a metadata file describes, read-only (any Iceberg writer's file naming).

        ``storage_options`` configure the backend for the URI's scheme (endpoint, keys ...).
        Raises ``TableNotFoundError`` when the file is missing, ``SupersededVersionError`` when it
        is a datashard version that newer versions superseded (retired, or deleted since),
        ``CorruptMetadataError`` when it does not parse.
        """
        directory = posixpath.dirname(metadata_uri.rstrip("/"))  # .../<table>/metadata
        table_root = posixpath.dirname(directory)
        root = posixpath.dirname(table_root)
        if "://" in metadata_uri and root.endswith(":/"):
            root = table_root  # a table at the root of a bucket: keys start at "metadata/"
        backend = open_backend(root, **storage_options)
        return cls.from_backend_key(backend, key_for_uri(backend, metadata_uri))

    @classmethod
    def from_backend_key(
        cls, backend: StorageBackend, key: str, *, name: str | None = None
    ) -> Table:
        """The table whose metadata file is ``key`` on ``backend``, read-only. ``name`` says
        ``load_table(name)`` found it (only metadata files another writer named there)."""
        uri = backend.uri_for(key)
        try:
            data = backend.read(key)
        except ObjectNotFoundError:
            # a superseded version of a datashard table is deleted a day after it was retired
            raise deleted_version(backend, key) or TableNotFoundError(
                f"no table metadata at {uri}"
            ) from None
        md = parse_version(data, uri, 0).metadata  # SupersededVersionError for a retired one
        table_name = name or posixpath.basename(md.location.rstrip("/"))
        table = cls(backend, None, Loaded(md, 0, uri), name=table_name)
        table._read_only_key = key
        table._found_by_name = name is not None
        return table

    # -- what the table is -------------------------------------------------------------------

    @property
    def metadata(self) -> TableMetadata:
        """The metadata as last loaded or committed by this object."""
        return self._loaded.metadata

    @property
    def metadata_location(self) -> str:
        """The URI of the metadata file this object holds."""
        return self._loaded.location

    @property
    def version(self) -> int:
        """N of the ``v<N>.metadata.json`` this object holds (0 for a read-only table)."""
        return self._loaded.version

    @property
    def location(self) -> str:
        """The table's absolute URI."""
        return self.metadata.location

    @property
    def backend(self) -> StorageBackend:
        """The storage backend the table's files are read from and written to."""
        return self._backend

    @property
    def properties(self) -> Mapping[str, str]:
        """The table properties (``commit.*``, ``write.*``, upkeep settings ...) as loaded."""
        return self.metadata.properties

    @property
    def read_only(self) -> bool:
        """True for a table opened from a metadata file (no datashard commits)."""
        return self._paths is None

    def schema(self) -> Schema:
        """The current schema."""
        return self.metadata.current_schema()

    def __repr__(self) -> str:
        return f"Table({self.name!r}, location={self.location!r}, version={self.version})"

    def flush(self) -> None:
        """Wait for the background work of earlier commits (best-effort version-hint writes,
        manifest reads for a coming merge)."""
        self._writer.prefetch.wait()
        self._wait_background()

    def _wait_background(self) -> None:
        pending = self._background.get()
        self._background.set([])
        for work in pending:
            work.result()

    def _last_background(self) -> Future[bool] | None:
        """The newest background work of this process still running, if any."""
        running = self._background.get()
        if not running or running[-1].done():
            return None
        return running[-1]

    def _keep_background(self, work: Future[bool] | bool) -> None:
        """Track a commit's background work without waiting for it: the next commit need not
        wait for this one's hint write (it is advisory, and readers probe past a stale one).
        At most :data:`_MAX_BACKGROUND` stay in flight; beyond that the oldest is waited for."""
        running = [w for w in self._background.get() if not w.done()]
        if isinstance(work, Future):
            running.append(work)
        while len(running) > _MAX_BACKGROUND:
            running.pop(0).exception()  # advisory work: its errors are not ours
        self._background.set(running)

    def refresh(self) -> Table:
        """Load the newest metadata (other writers' commits); returns ``self``."""
        self._wait_background()
        if self._paths is None:
            return self
        loaded = load_newest(self._backend, self._paths, self._loaded)
        if loaded is None:
            raise TableNotFoundError(f"table {self.name!r} at {self.location} has no metadata")
        self._loaded = loaded
        return self

    # -- snapshots ---------------------------------------------------------------------------

    def current_snapshot(self) -> Snapshot | None:
        """The current snapshot, or ``None`` for a table with no data commit yet."""
        return self.metadata.current_snapshot()

    def snapshots(self) -> list[Snapshot]:
        """The snapshots the metadata keeps, oldest first."""
        return sorted(self.metadata.snapshots, key=lambda s: (s.sequence_number, s.timestamp_ms))

    def snapshot(self, snapshot_id: int) -> Snapshot:
        """The snapshot with that id; ``ValidationError`` if the table does not keep it."""
        snap = self.metadata.snapshot_by_id(snapshot_id)
        if snap is None:
            raise ValidationError(
                f"no snapshot {snapshot_id} in table {self.location}; it has "
                f"{len(self.metadata.snapshots)} snapshots (see snapshots())"
            )
        return snap

    def history(self) -> list[HistoryEntry]:
        """When each snapshot became current, oldest first (the snapshot log), with its
        operation and the counts of its summary (:class:`~datashard.table.history.HistoryEntry`)."""
        return history_of(self.metadata)

    # -- reads -------------------------------------------------------------------------------

    def scan(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
    ) -> Scan:
        """A read of the current snapshot (or of ``snapshot_id`` / the one current ``as_of``)."""
        return Scan(
            self._backend,
            self.metadata,
            columns=columns,
            filter=filter,
            snapshot_id=snapshot_id,
            as_of=as_of,
        )

    def to_arrow(self) -> pa.Table:
        """The current snapshot as an Arrow table."""
        return self.scan().to_arrow()

    def to_pandas(self, **kwargs: Any) -> pd.DataFrame:
        """The current snapshot as a pandas DataFrame."""
        return self.scan().to_pandas(**kwargs)

    def count(self) -> int:
        """Rows in the current snapshot (from manifest counts)."""
        return self.scan().count()

    def to_batches(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        *,
        batch_size: int | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """``scan(columns, filter, snapshot_id, as_of).to_batches(batch_size)``: Arrow record
        batches streamed in bounded memory (see :meth:`Scan.to_batches`)."""
        return self.scan(columns, filter, snapshot_id, as_of).to_batches(batch_size)

    def to_arrow_batch_reader(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        *,
        batch_size: int | None = None,
    ) -> pa.RecordBatchReader:
        """``scan(...).to_arrow_batch_reader(batch_size)``: a ``pyarrow.RecordBatchReader``
        for DuckDB, Polars or Arrow Flight (read once, streamed)."""
        return self.scan(columns, filter, snapshot_id, as_of).to_arrow_batch_reader(batch_size)

    def to_duckdb(
        self,
        name: str,
        connection: duckdb.DuckDBPyConnection | None = None,
        *,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        stream: bool = False,
    ) -> duckdb.DuckDBPyConnection:
        """The rows registered as the DuckDB view ``name`` (see :meth:`Scan.to_duckdb`); the
        connection. ``ImportError`` naming the package when duckdb is not installed."""
        scan = self.scan(columns, filter, snapshot_id, as_of)
        return scan.to_duckdb(name, connection, stream=stream)

    @overload
    def to_polars(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        *,
        lazy: Literal[False] = False,
    ) -> pl.DataFrame: ...
    @overload
    def to_polars(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        *,
        lazy: Literal[True],
    ) -> pl.LazyFrame: ...
    def to_polars(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        as_of: datetime | int | float | None = None,
        *,
        lazy: bool = False,
    ) -> pl.DataFrame | pl.LazyFrame:
        """The rows as a polars DataFrame, or with ``lazy=True`` a ``polars.LazyFrame`` that
        reads only what its query needs when collected (see :meth:`Scan.to_polars`).
        ``ImportError`` naming the package when polars is not installed."""
        scan = self.scan(columns, filter, snapshot_id, as_of)
        return scan.to_polars(lazy=True) if lazy else scan.to_polars()

    def to_dask(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """The rows as a lazy Dask DataFrame, one partition per data file, each read by a Dask
        worker through datashard's read path (``datashard.dask.read_table``). ``ImportError``
        naming the package when dask is not installed."""
        return self.scan(columns, filter, snapshot_id).to_dask(**kwargs)

    def to_ray(
        self,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """The rows as a Ray Dataset, one read task per data file (``datashard.ray.read_table``).
        ``ImportError`` naming the package when ray is not installed."""
        return self.scan(columns, filter, snapshot_id).to_ray(**kwargs)

    @property
    def inspect(self) -> InspectTable:
        """The metadata of the version this object holds as Arrow tables, with PyIceberg's
        column names: ``inspect.snapshots()``, ``history()``, ``refs()``, ``manifests()``,
        ``files()``, ``partitions()`` (:class:`~datashard.table.inspect.InspectTable`)."""
        return InspectTable(self._backend, self.metadata)

    # -- writes ------------------------------------------------------------------------------

    def append(
        self,
        data: DataLike,
        *,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> Snapshot:
        """Append a pandas DataFrame, pyarrow Table or RecordBatch as one new snapshot.

        The data is validated first (``ValidationError`` naming the field, expected and actual
        type); nothing is written unless it fits. Raises ``CommitRetriesExhaustedError``,
        ``CommitConflictError`` or ``CommitStateUnknownError`` from the commit.

        ``idempotency_key`` (e.g. ``"run-17/task-42"``) makes a retried task append once: the
        key is recorded in the snapshot summary (``datashard.idempotency-key``), and when a
        snapshot the table keeps already carries it (found on the table as loaded, or on any
        newer version a commit attempt builds on) nothing is written and that snapshot is
        returned.

        ``progress(rows_written, rows, "rows")`` is called as the data files are written (in
        slices of about 256 MiB of Arrow data); an exception it raises cancels the append
        (what was written is deleted, the table is unchanged).
        """
        with self.transaction(idempotency_key=idempotency_key, progress=progress) as tx:
            if tx.snapshot is not None:
                return tx.snapshot  # already landed: the data is not even converted
            tx.append(data)
        assert tx.snapshot is not None
        return tx.snapshot

    def append_records(
        self,
        records: Sequence[Mapping[str, Any]],
        schema: Schema | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Snapshot:
        """Append Python dicts as one new snapshot (see :meth:`append`, also for
        ``idempotency_key``).

        ``schema``, if given, must be the table's current schema (same fields, ids, types and
        order); it documents what the caller expects and is checked, not applied.
        """
        with self.transaction(idempotency_key=idempotency_key) as tx:
            if tx.snapshot is not None:
                return tx.snapshot
            tx.append_records(records, schema)
        assert tx.snapshot is not None
        return tx.snapshot

    def data_file_writer(self) -> _add_files.DataFileWriter:
        """A picklable writer of this table's data files (current schema, spec and write
        properties) for workers on other processes or machines: ``writer.write(data)`` writes
        Parquet data files under the table's ``data/`` and returns their descriptions
        (:class:`~datashard.table.add_files.WrittenFile`); nothing is committed until they are
        passed to :meth:`add_files`."""
        return _add_files.DataFileWriter.for_table(self._backend, self._writable(), self.metadata)

    def write_data_files(self, data: Any) -> list[_add_files.WrittenFile]:
        """``data_file_writer().write(data)``: write data files, commit nothing."""
        return self.data_file_writer().write(data)

    def add_files(
        self,
        files: Sequence[_add_files.FileLike],
        *,
        idempotency_key: str | None = None,
    ) -> Snapshot:
        """Commit data files written elsewhere as ONE new append snapshot.

        ``files``: what :meth:`write_data_files` (or a :meth:`data_file_writer` on a worker)
        returned, and/or URIs of Parquet files under the table location (or paths relative to
        it) that carry the table's field ids. Plain files are checked by their footer (and
        their partition source columns are read on a partitioned table); each must hold one
        partition value. Raises ``ValidationError`` / ``SchemaError`` naming the file and what
        was expected (see :func:`~datashard.table.add_files.check_files`), the table unchanged.
        The files are never deleted by this call, even when the commit fails.
        """
        with self.transaction(idempotency_key=idempotency_key) as tx:
            if tx.snapshot is not None:
                return tx.snapshot
            tx.add_files(files)
        assert tx.snapshot is not None
        return tx.snapshot

    @contextmanager
    def transaction(
        self, *, idempotency_key: str | None = None, progress: Progress | None = None
    ) -> Iterator[Transaction]:
        """Several appends committed as ONE snapshot when the block ends without error.

        ``with table.transaction() as tx: tx.append(df1); tx.append(df2)``. An exception in the
        block discards everything (nothing was written). With ``idempotency_key`` (see
        :meth:`append`), ``tx.snapshot`` is already set on entry when a snapshot the table
        keeps carries the key; the appends of the block are then dropped at its end, and
        equally when a concurrent writer lands the key first. ``progress``: see :meth:`append`.
        """
        self._writable()  # a read-only or format version 3 table: refused before any work
        tx = Transaction(self, idempotency_key, progress)
        yield tx
        tx.commit()

    # -- evolution, rewrites, maintenance, refs (one module each under datashard/table/) ----

    def update_schema(self) -> SchemaUpdate:
        """A builder of schema changes committed together: ``with t.update_schema() as u:
        u.add_column("c", "long")`` (see :mod:`datashard.iceberg.schema_update`)."""

        def committer(update: SchemaUpdate) -> Schema:
            paths = self._writable()
            self._loaded = evolution.commit_schema(self._backend, paths, self._loaded, update)
            return self.schema()

        return SchemaUpdate(self.schema(), _committer=committer)

    def update_partition_spec(self, spec: SpecLike) -> None:
        """Make ``spec`` the default partition spec; old files keep theirs."""
        paths = self._writable()
        self._loaded = evolution.commit_partition_spec(self._backend, paths, self._loaded, spec)

    def set_properties(self, updates: Mapping[str, str | int]) -> None:
        """Set table properties in one commit (values are stored as strings; an int is
        written in decimal). A value datashard reads but cannot use (see
        docs/maintenance.md) raises ``ConfigError``, a bad or reserved key
        (``format-version``) ``ValidationError``; either leaves the table unchanged."""
        self._update_properties(updates, ())

    def remove_properties(self, *keys: str) -> None:
        """Remove table properties in one commit (absent keys are ignored); a reserved key
        raises ``ValidationError`` with the table unchanged."""
        self._update_properties({}, keys)

    def update_properties(
        self, updates: Mapping[str, str | int] | None = None, remove: Iterable[str] = ()
    ) -> None:
        """Set ``updates`` and remove the keys ``remove`` in ONE commit (a key may not be in
        both); errors as for :meth:`set_properties`, with the table unchanged."""
        self._update_properties({} if updates is None else updates, remove)

    def _update_properties(self, updates: Mapping[str, object], keys: Iterable[str]) -> None:
        if not isinstance(updates, Mapping):
            raise ValidationError(
                "table properties are set from a mapping of keys to values, got "
                f"{type(updates).__name__}"
            )
        values, removals = table_properties.property_updates(updates, keys)
        paths = self._writable()
        self._loaded = table_properties.commit_properties(
            self._backend, paths, self._loaded, values, removals
        )

    def overwrite(self, data: DataLike, filter: FilterLike = None) -> Snapshot | None:
        """Replace the rows matching ``filter`` (every row when ``None``) with ``data``; the
        new snapshot, or ``None`` when nothing changed."""
        paths = self._writable()
        schema = self.schema()
        bind_schema(filter, schema)  # a bad filter fails before the data is converted
        arrow = schema.coerce_arrow(fill_write_defaults_arrow(_to_arrow(data), schema))
        tables = [arrow] if arrow.num_rows else []
        if row_delta.delete_mode(self.properties) == "merge-on-read":
            loaded = row_delta.delete_rows(
                self._backend, paths, self._loaded, filter, tables, "overwrite"
            )
        else:
            loaded = rewrite.overwrite(self._backend, paths, self._loaded, filter, tables)
        return self._snapshot_after(loaded)

    def upsert(self, data: DataLike, join_cols: Sequence[str] | None = None) -> UpsertResult:
        """Rows of ``data`` whose key (the ``join_cols``; default: the schema's identifier
        fields) matches a row of the table replace it, the others are added, in ONE snapshot;
        how many were updated and inserted (:class:`~datashard.table.upsert.UpsertResult`).

        A matched row with the same values is left alone (and not counted). Follows
        ``write.delete.mode`` as :meth:`delete` does. ``ValidationError`` (the table unchanged,
        nothing read) for a key column the schema lacks, a null key, or a key that appears
        twice in ``data``; ``CommitConflictError`` when a concurrent commit added or removed
        rows with one of the keys.
        """
        paths = self._writable()
        schema = self.schema()
        keys = _upsert.join_columns(schema, join_cols)
        arrow = schema.coerce_arrow(fill_write_defaults_arrow(_to_arrow(data), schema))
        _upsert.check_keys(arrow, keys)
        if not arrow.num_rows:
            return UpsertResult(0, 0)
        loaded, result = _upsert.upsert(self._backend, paths, self._loaded, arrow, keys)
        self._set(loaded)
        return result

    def delete(self, filter: FilterLike) -> Snapshot | None:
        """Delete the rows matching ``filter``; the new snapshot, or ``None`` when no row
        matched. With the table property ``write.delete.mode=merge-on-read`` the rows are
        deleted by position delete files (no data file is rewritten); by default
        (``copy-on-write``) the files holding them are rewritten without them."""
        paths = self._writable()
        if filter is None:
            raise ValidationError(
                "delete needs a filter; to delete every row pass an always-true filter "
                "explicitly, e.g. table.overwrite(empty_table)"
            )
        if row_delta.delete_mode(self.properties) == "merge-on-read":
            loaded = row_delta.delete_rows(self._backend, paths, self._loaded, filter)
        else:
            loaded = rewrite.delete(self._backend, paths, self._loaded, filter)
        return self._snapshot_after(loaded)

    def compact(
        self,
        target_file_size: int | None = None,
        *,
        min_input_files: int = 2,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> CompactResult:
        """Rewrite small data files into files of about ``target_file_size`` bytes (default:
        the table property ``write.target-file-size-bytes``, else 128 MiB).

        ``progress(files_done, files, "files")`` is called as input files are rewritten; an
        exception it raises cancels the compaction (the table is unchanged)."""
        paths = self._writable()
        size = _compact.target_file_size(target_file_size, self.properties)
        loaded, result = _compact.compact(
            self._backend,
            paths,
            self._loaded,
            size,
            min_input_files=min_input_files,
            dry_run=dry_run,
            progress=progress,
        )
        self._set(loaded)
        return result

    def expire_snapshots(
        self,
        older_than: Cutoff | None = None,
        retain_last: int | None = None,
        *,
        dry_run: bool = False,
    ) -> ExpireResult:
        """Drop snapshots older than ``older_than``, keeping at least ``retain_last``
        ancestors of the current snapshot, and delete the files only they used. Left out,
        both come from the table's policy: ``history.expire.max-snapshot-age-ms`` (5 days)
        and ``history.expire.min-snapshots-to-keep`` (1)."""
        paths = self._writable()
        loaded, result = expire.expire_snapshots(
            self._backend, paths, self._loaded, older_than, retain_last, dry_run=dry_run
        )
        self._set(loaded)
        return result

    def remove_orphan_files(
        self, older_than: Cutoff | None = None, dry_run: bool = False
    ) -> list[str]:
        """Delete unreferenced files older than ``older_than`` (default: 3 days); their
        URIs."""
        paths = self._writable()
        return orphans.remove_orphan_files(
            self._backend, paths, self._loaded, older_than, dry_run=dry_run
        )

    def rollback_to(self, snapshot_id: int) -> Snapshot:
        """Make an ancestor of the current snapshot current again."""
        return self._set_current(snapshot_id, ancestor_only=True)

    def set_current(self, snapshot_id: int) -> Snapshot:
        """Make any snapshot the table keeps current."""
        return self._set_current(snapshot_id, ancestor_only=False)

    def create_tag(self, name: str, snapshot_id: int | None = None) -> None:
        """Name a snapshot (default: the current one); tagged snapshots are never expired."""
        self._add_ref(name, snapshot_id, "tag")

    def create_branch(self, name: str, snapshot_id: int | None = None) -> None:
        """A branch ``name`` at a snapshot (default: the current one), readable by name."""
        self._add_ref(name, snapshot_id, "branch")

    def remove_ref(self, name: str) -> None:
        """Remove a tag or branch (not ``main``)."""
        paths = self._writable()
        self._loaded = refs.remove_ref(self._backend, paths, self._loaded, name)

    def _set_current(self, snapshot_id: int, *, ancestor_only: bool) -> Snapshot:
        paths = self._writable()
        self._loaded = refs.set_current(
            self._backend, paths, self._loaded, snapshot_id, ancestor_only=ancestor_only
        )
        return self.snapshot(snapshot_id)

    def _add_ref(self, name: str, snapshot_id: int | None, kind: RefType) -> None:
        paths = self._writable()
        self._loaded = refs.add_ref(self._backend, paths, self._loaded, name, snapshot_id, kind)

    def _set(self, loaded: Loaded | None) -> None:
        if loaded is not None:
            self._loaded = loaded

    def _snapshot_after(self, loaded: Loaded | None) -> Snapshot | None:
        if loaded is None:
            return None
        self._loaded = loaded
        snap = loaded.metadata.current_snapshot()
        if snap is None:  # pragma: no cover - a rewrite always makes one
            raise CorruptMetadataError(f"{loaded.location} has no current snapshot after a rewrite")
        return snap

    # -- used by Transaction -----------------------------------------------------------------

    def _writable(self) -> TablePaths:
        if self._paths is None:
            raise TableError(self._read_only_message())
        check_writable(self._loaded.metadata)  # before anything is staged: v3 is read-only
        return self._paths

    def _read_only_message(self) -> str:
        """Why this table is read-only and what does let one write, by how it was opened."""
        uri = self.metadata_location
        parts = self._read_only_key.split("/")
        if version_of(self._read_only_key) is not None:
            # datashard's own v<N> file, opened as a file: the table is writable by name
            if len(parts) == 3 and parts[1] == "metadata":
                how = f"load_table({parts[0]!r}, warehouse={self._backend.root_uri!r})"
            else:
                how = "load_table(name, warehouse=...) with the warehouse that holds it"
            return (
                f"table {self.location} was opened from its metadata file {uri} and is "
                f"read-only (that file is one fixed version); to write, load it by name: {how} "
                "opens its newest version for writing"
            )
        if self._found_by_name:
            opened = (
                f"load_table({self.name!r}) found only metadata files that another Iceberg "
                f"writer (PyIceberg, Spark ...) named, such as {uri}, so table {self.location} "
                "is read-only"
            )
        else:
            opened = (
                f"table {self.location} was opened from its metadata file {uri}, which another "
                "Iceberg writer (PyIceberg, Spark ...) named, and is read-only; loading it by "
                "name is read-only too"
            )
        return (
            f"{opened}: datashard commits only to tables whose metadata files it names "
            "v<N>.metadata.json. To write with datashard, copy the rows into a new table: "
            "create_table('<new name>', table.schema(), warehouse=...).append(table.to_arrow())"
            "; or keep writing this table with the writer that made it"
        )

    def _commit_appends(
        self,
        tables: list[pa.Table],
        key: str | None = None,
        progress: Progress | None = None,
        files: Sequence[_add_files.CheckedFile] = (),
    ) -> Snapshot:
        paths = self._writable()
        if files:
            producer: AppendCommit = _add_files.AddFilesCommit(
                self._backend, paths, self._loaded, self._writer, key, files=files
            )
        else:
            producer = AppendCommit(self._backend, paths, self._loaded, self._writer, key)
        try:
            loaded, hint = producer.append(tables, self._last_background(), progress)
        except AlreadyCommittedError as landed:
            # another attempt of this task landed first: its files were deleted, nothing new
            self.refresh()
            return landed.snapshot
        self._loaded = loaded
        self._keep_background(hint)
        # with group commit another writer's snapshot may carry these rows
        snap = producer.folded_into or loaded.metadata.current_snapshot()
        if snap is None:  # pragma: no cover - an append always makes one
            raise CorruptMetadataError(f"{loaded.location} has no current snapshot after append")
        return snap


#: Commits' background writes one table keeps in flight before a commit waits for the oldest.
_MAX_BACKGROUND = 4


class Transaction:
    """Appends collected for one atomic snapshot (see :meth:`Table.transaction`)."""

    def __init__(
        self, table: Table, idempotency_key: str | None = None, progress: Progress | None = None
    ) -> None:
        self._table = table
        self._progress = progress
        self._schema = table.schema()
        self._pending: list[pa.Table] = []
        self._files: list[_add_files.CheckedFile] = []
        self._key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        #: the snapshot committed; set on entry when the idempotency key already landed
        self.snapshot: Snapshot | None = (
            None if self._key is None else snapshot_with_key(table.metadata, self._key)
        )
        self._done = False

    def append(self, data: DataLike) -> None:
        """Validate ``data`` against the table schema now; write it at commit."""
        self._check_open()
        table = fill_write_defaults_arrow(_to_arrow(data), self._schema)
        check_not_empty(table.num_rows)
        self._pending.append(self._schema.coerce_arrow(table))

    def append_records(
        self, records: Sequence[Mapping[str, Any]], schema: Schema | None = None
    ) -> None:
        """Validate dicts against the table schema now; write them at commit."""
        self._check_open()
        if schema is not None:
            check_same_schema(self._schema, schema)
        if isinstance(records, Mapping) or not isinstance(records, Sequence):
            raise ValidationError(
                f"append_records takes a list of dicts, got {type(records).__name__}"
            )
        check_not_empty(len(records))
        records = fill_write_defaults_records(records, self._schema)
        self._pending.append(self._schema.records_to_arrow(records))

    def add_files(self, files: Sequence[_add_files.FileLike]) -> None:
        """Check data files written elsewhere now (see :meth:`Table.add_files`); add them to
        the snapshot at commit."""
        self._check_open()
        checked = _add_files.check_files(self._table.backend, self._table.metadata, files)
        have = {f.data_file.file_path for f in self._files}
        again = next((f for f in checked if f.data_file.file_path in have), None)
        if again is not None:
            raise ValidationError(f"file {again.data_file.file_path} was added twice")
        self._files.extend(checked)

    def commit(self) -> Snapshot | None:
        """Commit the pending appends as one snapshot (none if nothing was appended)."""
        self._check_open()
        self._done = True
        if self.snapshot is not None:  # the idempotency key already landed: write nothing
            return self.snapshot
        if not self._pending and not self._files:
            return None
        self.snapshot = self._table._commit_appends(
            self._pending, self._key, self._progress, self._files
        )
        return self.snapshot

    def _check_open(self) -> None:
        if self._done:
            raise TableError("this transaction was already committed; start a new one")


def _to_arrow(data: DataLike) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValidationError(f"the DataFrame does not convert to Arrow: {exc}") from exc
        except UnicodeEncodeError as exc:  # a lone surrogate in an object column
            named = find_unencodable((str(n), data.iloc[:, i]) for i, n in enumerate(data.columns))
            raise named or ValidationError(
                f"the DataFrame does not convert to Arrow: {exc}"
            ) from exc
    raise ValidationError(
        "append takes a pandas.DataFrame, pyarrow.Table or pyarrow.RecordBatch, got "
        f"{type(data).__name__} (use append_records for a list of dicts)"
    )


def check_same_schema(table_schema: Schema, given: Schema) -> None:
    """``ValidationError`` unless ``given`` has the table schema's fields, in its order."""
    if not isinstance(given, Schema):
        raise ValidationError(f"schema must be a datashard Schema, got {type(given).__name__}")
    if tuple(table_schema.fields) == tuple(given.fields):
        return
    want = [str(f) for f in table_schema.fields]
    got = [str(f) for f in given.fields]
    if sorted(want) == sorted(got):
        raise ValidationError(
            "the schema given has the table's fields in another order: "
            f"got [{', '.join(got)}], the table has [{', '.join(want)}]; pass table.schema() "
            "or no schema"
        )
    missing = [w for w in want if w not in got]
    extra = [g for g in got if g not in want]
    raise ValidationError(
        "the schema given does not match the table's: "
        f"table fields not in it: {missing or 'none'}; fields the table lacks: {extra or 'none'}"
    )


__all__ = ["DataLike", "Table", "Transaction", "check_same_schema"]
