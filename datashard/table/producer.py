"""The one snapshot producer: every commit that adds a snapshot is built on it.

A producer stages once per commit and builds per attempt:

- staged once (never rewritten on a retry): data files, streamed to storage from Arrow tables
  as they are encoded (:meth:`SnapshotProducer.stage_tables`: files of about the target size
  per partition value, large inputs written by several cores at once), and whatever manifests
  the operation writes up front, which are written concurrently with the first attempt's
  manifest list, or earlier by :meth:`SnapshotProducer.flush` (to bound memory);
- per attempt on the newest base ``v<N>``: the operation's manifests
  (:meth:`SnapshotProducer.manifests`), the manifest list
  ``metadata/snap-<snapshot-id>-<attempt>-<uuid>.avro``, the snapshot and, by
  :func:`datashard.table.updates.apply`, the new metadata.

On a format version 3 table every attempt assigns row ids against its base: the snapshot's
``first-row-id`` is the base's ``next-row-id``, each data manifest of the list without a
``first_row_id`` gets the next range (``assign_first_row_ids`` of the manifest codec; for a
manifest this commit wrote, exactly the rows of its files without one), and the snapshot's
``added-rows`` is what was handed out. Nothing of it is kept across attempts, so a commit that
lost a race reassigns from the newer base. New data files are written with a null
``first_row_id`` (they inherit one); files carried into a new manifest keep theirs. Rows a
rewrite carries into a new data file keep their ids: they are staged with the columns
``_row_id`` and ``_last_updated_sequence_number`` (:meth:`SnapshotProducer.lineage_fields`),
which are written into the file under the spec's reserved field ids.

:meth:`SnapshotProducer.commit` runs the one retry loop (:func:`datashard.table.commit.commit`);
staged files are deleted only when the commit provably did not land.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
from typing import Any, TypeVar

import pyarrow as pa

from datashard.errors import ConfigError
from datashard.iceberg.datafile import (
    DEFAULT_OPTIONS,
    ParquetFileWriter,
    ParquetOptions,
    dictionary_columns,
    fit_schema,
)
from datashard.iceberg.lineage import LAST_UPDATED_SEQUENCE_NUMBER, LINEAGE_FIELDS, ROW_ID
from datashard.iceberg.manifest import (
    EQUALITY_DELETES,
    MANIFEST_DATA,
    POSITION_DELETES,
    DataFile,
    ManifestEntry,
    ManifestFile,
)
from datashard.iceberg.manifest_codec import (
    assign_first_row_ids,
    build_manifest_file,
    unassigned_rows,
    write_manifest,
    write_manifest_list,
)
from datashard.iceberg.metadata import (
    LINEAGE_VERSION,
    PartitionSpec,
    Snapshot,
    TableMetadata,
    new_snapshot_id,
    now_ms,
)
from datashard.iceberg.partitioning import split_by_partition
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import NestedField
from datashard.storage.base import StorageBackend
from datashard.table.commit import CommitSettings, commit, delete_quietly, new_commit_id
from datashard.table.group import Group
from datashard.table.orphans import upkeep, upkeep_grace_ms
from datashard.table.process import shared_pool, submit
from datashard.table.updates import (
    COMMIT_ID,
    MAIN,
    AddSnapshot,
    AssertFormatVersion,
    AssertTableUUID,
    Requirement,
    SetSnapshotRef,
    apply,
    whole_number,
)
from datashard.table.versions import Loaded, TablePaths

T = TypeVar("T")
R = TypeVar("R")

#: What one attempt writes besides the manifest list: (key, bytes) pairs.
Writes = list[tuple[str, bytes]]


def stream_data_files(
    backend: StorageBackend,
    new_key: Callable[[], str],
    table: pa.Table,
    partition: Mapping[str, Any],
    schema: Schema,
    options: ParquetOptions,
    target: int,
    opened: list[str],
) -> list[DataFile]:
    """Stream ``table`` (of one partition, fitting ``schema``) into new data files at keys
    ``new_key`` gives, each closed after the row group that brings it to about ``target``
    bytes, in row order. Each key is added to ``opened`` before its file is written (the
    caller deletes them on failure)."""
    rows = options.rows_per_group(table, target)
    dictionary = dictionary_columns(table)
    out: list[DataFile] = []
    offset = 0
    while offset < table.num_rows:
        key = new_key()
        opened.append(key)
        with backend.open_output(key) as sink:
            writer = ParquetFileWriter(sink, schema, options, dictionary)
            while offset < table.num_rows:
                writer.write(table.slice(offset, rows), rows)
                offset += rows
                if writer.size >= target:
                    break
            stats = writer.finish()
            size = sink.tell()
        out.append(stats.to_data_file(backend.uri_for(key), size, partition))
    return out


class SnapshotProducer:
    """One commit that adds a snapshot on ``main``. Subclasses give :meth:`manifests` (the
    snapshot's manifests on a base) and :meth:`summary`; they may add :meth:`requirements`."""

    operation = "append"
    #: whether what this commit stages is valid only in the format version it started on (a
    #: rewrite carries row lineage, a delete writes position deletes or vectors): a table
    #: upgraded meanwhile is then a conflict. An append's new files are valid in both, and
    #: its per-attempt manifests follow the attempt's base.
    version_bound = True

    def __init__(self, backend: StorageBackend, paths: TablePaths, base: Loaded) -> None:
        self.backend = backend
        self.paths = paths
        self.base = base
        #: when this commit started (before it wrote anything): bounds it by
        #: ``commit.max-duration-ms`` (see :func:`datashard.table.commit.commit`)
        self.started = time.monotonic()
        self.snapshot_id = new_snapshot_id()
        self.commit_id = new_commit_id()
        md = base.metadata
        self.schema = md.current_schema()
        self.spec = md.spec()
        #: the format version this commit writes its manifests for (2 or 3)
        self.format_version = md.format_version
        #: rows of the data files without a ``first_row_id`` in each data manifest this commit
        #: wrote, by path (format version 3: the row id range each needs)
        self.unassigned: dict[str, int] = {}
        #: data files this commit adds
        self.added: list[DataFile] = []
        #: every object this commit staged (written, or pending below)
        self.staged_keys: list[str] = []
        #: staged objects not written yet: written with the first manifest list
        self._pending: Writes = []
        #: the manifests of the last attempt's snapshot
        self.last_manifests: list[ManifestFile] = []
        #: group commit (appends on tables that turn it on; see :mod:`datashard.table.group`)
        self.group: Group | None = None
        #: the snapshot of another writer that folded this commit in (group commit)
        self.folded_into: Snapshot | None = None
        #: how many attempts the commit took
        self.attempts = 0

    # -- staging -----------------------------------------------------------------------------

    def stage_tables(self, tables: Iterable[pa.Table], target_file_size: int | None = None) -> None:
        """Write ``tables`` as data files of the current schema and spec, now: one or more per
        partition value, each streamed to storage and closed at about ``target_file_size``
        bytes (default: the table property ``write.target-file-size-bytes``). A partition's
        rows are cut into one contiguous piece per :data:`PARALLEL_MIN_BYTES` of Arrow data,
        at most one per core, written concurrently on the process's pool. Files are added in
        row order.

        Raises ``ValidationError`` for data that does not fit the schema, before any request.
        On any failure the files this call wrote are deleted and no half-written file is left.
        """
        props = self.base.metadata.properties
        options = parquet_options(props)
        target = target_file_size if target_file_size is not None else target_size(props)
        parts: list[tuple[Mapping[str, Any], Schema, pa.Table]] = []
        for whole in tables:
            schema = self.write_schema(whole)
            parts.extend(
                (partition, schema, fit_schema(table, schema))
                for partition, table in split_by_partition(whole, self.spec, self.schema)
                if table.num_rows
            )
        jobs = [
            (partition, schema, piece)
            for partition, schema, table in parts
            for piece in _pieces(table, _cores())
        ]
        opened: list[str] = []  # keys of every file started (appended from the workers)

        def write(job: tuple[Mapping[str, Any], Schema, pa.Table]) -> list[DataFile]:
            return self._write_files(job[2], job[0], options, target, opened, job[1])

        try:
            for files in _in_order(write, jobs, _cores()):
                self.added.extend(files)
        except BaseException:
            delete_quietly(self.backend, opened)
            raise
        self.staged_keys.extend(opened)

    def _write_files(
        self,
        table: pa.Table,
        partition: Mapping[str, Any],
        options: ParquetOptions,
        target: int,
        opened: list[str],
        schema: Schema,
    ) -> list[DataFile]:
        """Stream ``table`` (fitting ``schema``) into new data files of about ``target`` bytes
        (each closed after the row group that reaches it), in row order."""
        return stream_data_files(
            self.backend,
            lambda: f"{self.paths.data_dir}/{uuid.uuid4()}.parquet",
            table,
            partition,
            schema,
            options,
            target,
            opened,
        )

    def lineage_fields(self) -> list[NestedField]:
        """The row-lineage columns a rewrite reads with the rows it carries into new files (so
        they keep their ``_row_id`` and ``_last_updated_sequence_number``): both on a format
        version 3 table, none before."""
        if self.format_version >= LINEAGE_VERSION:
            return [ROW_ID, LAST_UPDATED_SEQUENCE_NUMBER]
        return []

    def write_schema(self, table: pa.Table) -> Schema:
        """The schema ``table``'s rows are written with: the table's, plus the row-lineage
        columns when ``table`` carries them (a version 3 rewrite; a null value still inherits
        on read)."""
        if not self.lineage_fields() or not set(LINEAGE_FIELDS) & set(table.column_names):
            return self.schema
        return Schema(self.schema.schema_id, [*self.schema.fields, *self.lineage_fields()])

    def stage(self, key: str, body: bytes) -> None:
        """Stage one object of this commit (written by :meth:`flush` or the first attempt)."""
        self._pending.append((key, body))
        self.staged_keys.append(key)

    def flush(self) -> None:
        """Write the staged objects now, concurrently."""
        pending, self._pending = self._pending, []
        self._write_all(pending)

    def manifest_key(self, suffix: str = "m0") -> str:
        return f"{self.paths.metadata_dir}/{uuid.uuid4()}-{suffix}.avro"

    def encode_manifest(
        self,
        entries: Sequence[ManifestEntry],
        spec: PartitionSpec,
        sequence_number: int,
        suffix: str,
        snapshot_id: int | None = None,
        content: int = MANIFEST_DATA,
    ) -> tuple[ManifestFile, str, bytes]:
        """A manifest of ``entries`` (its manifest-list row, key and bytes; not written).
        ``snapshot_id`` is written into the entries (``None``: inherited on read); ``content``
        says whether they are data or delete files."""
        body = write_manifest(entries, self.schema, spec, snapshot_id, content, self.format_version)
        key = self.manifest_key(suffix)
        row = build_manifest_file(
            entries,
            manifest_path=self.backend.uri_for(key),
            manifest_length=len(body),
            spec=spec,
            schema=self.schema,
            added_snapshot_id=self.snapshot_id,
            sequence_number=sequence_number,
            content=content,
        )
        if content == MANIFEST_DATA:
            self.unassigned[row.manifest_path] = unassigned_rows(entries)
        return row, key, body

    # -- what subclasses give ------------------------------------------------------------------

    def manifests(
        self, md: TableMetadata, parent: Snapshot | None, seq: int
    ) -> tuple[list[ManifestFile], Writes]:
        """The manifests of the new snapshot on ``md`` and the objects this attempt writes for
        them (written with the manifest list). May raise ``CommitConflictError``."""
        raise NotImplementedError

    def summary(self, parent: Snapshot | None) -> dict[str, str]:
        """The snapshot summary (it must carry ``COMMIT_ID``: see :func:`snapshot_summary`)."""
        raise NotImplementedError

    def requirements(self) -> list[Requirement]:
        """Requirements checked on every base, besides the table's uuid."""
        return []

    # -- per attempt ---------------------------------------------------------------------------

    def build(self, loaded: Loaded, attempt: int) -> tuple[TableMetadata, list[str]]:
        """The new metadata on ``loaded`` and the keys this attempt wrote."""
        md = loaded.metadata
        seq = md.next_sequence_number
        parent = md.current_snapshot()
        if not self.version_bound:
            self.format_version = md.format_version  # upgraded meanwhile: write v3 from now
        manifests, writes = self.manifests(md, parent, seq)
        list_key = (
            f"{self.paths.metadata_dir}/snap-{self.snapshot_id}-{attempt}-{uuid.uuid4()}.avro"
        )
        first_row_id = added_rows = None
        if md.format_version >= LINEAGE_VERSION:
            first_row_id = md.next_row_id or 0
            manifests, added_rows = assign_first_row_ids(manifests, first_row_id, self.unassigned)
        body = write_manifest_list(
            manifests,
            self.snapshot_id,
            parent.snapshot_id if parent else None,
            seq,
            format_version=md.format_version,
            first_row_id=first_row_id,
        )
        written = [*(k for k, _ in writes), list_key]
        try:
            self._write_all([*self._pending, *writes, (list_key, body)])
        except BaseException:
            delete_quietly(self.backend, written)
            raise
        self._pending.clear()
        snapshot = Snapshot(
            snapshot_id=self.snapshot_id,
            parent_snapshot_id=parent.snapshot_id if parent else None,
            sequence_number=seq,
            timestamp_ms=max(now_ms(), md.last_updated_ms),
            manifest_list=self.backend.uri_for(list_key),
            summary=self.summary(parent),
            schema_id=md.current_schema_id,
            first_row_id=first_row_id,
            added_rows=added_rows,
        )
        new_md = apply(
            md,
            [AddSnapshot(snapshot), SetSnapshotRef(MAIN, self.snapshot_id)],
            base_location=loaded.location,
            now_ms=snapshot.timestamp_ms,
        )
        self.last_manifests = manifests
        return new_md, written

    def _write_all(self, writes: Writes) -> None:
        """Write objects concurrently (they are independent and unreferenced until the commit
        point); on any failure delete every one of them and re-raise."""
        if not writes:
            return
        if len(writes) == 1:
            try:
                self.backend.write(*writes[0])
                return
            except BaseException:
                delete_quietly(self.backend, [writes[0][0]])
                raise
        futures = [submit(self.backend.write, key, data) for key, data in writes]
        errors = [f.exception() for f in futures]
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            delete_quietly(self.backend, [k for k, _ in writes])
            raise failed

    # -- the whole commit ------------------------------------------------------------------------

    def commit(
        self, *, background: bool = False, after: Future[bool] | None = None
    ) -> tuple[Loaded, Future[bool] | bool]:
        """Run the commit loop: the new version and the version-hint write (with
        ``background``, running in the process's pool once ``after`` is done). On any failure
        the staged files are deleted unless the commit may have landed."""
        settings = CommitSettings.from_properties(self.base.metadata.properties)
        result = commit(
            self.backend,
            self.paths,
            self.base,
            self.build,
            [
                AssertTableUUID(self.base.metadata.table_uuid),
                *([AssertFormatVersion(self.format_version)] if self.version_bound else []),
                *self.requirements(),
            ],
            self.commit_id,
            settings,
            staged_keys=self.staged_keys,
            background=shared_pool() if background else None,
            after=after,
            started=self.started,
            upkeep=self._upkeep(),
            group=self.group,
        )
        self.folded_into = result.folded_into
        self.attempts = result.attempts
        return result.loaded, result.hint

    def _upkeep(self) -> Callable[[Loaded], None] | None:
        """The automatic upkeep this table's properties ask for (``None``: off)."""
        try:
            grace = upkeep_grace_ms(self.base.metadata.properties)
        except ConfigError:
            return None  # a malformed setting another engine wrote: no upkeep
        if grace is None:
            return None
        backend, paths = self.backend, self.paths
        return lambda loaded: upkeep(backend, paths, loaded, grace)

    def discard(self) -> None:
        """Delete what was staged so far (the commit will not run)."""
        self._pending.clear()
        delete_quietly(self.backend, self.staged_keys)


#: The table property that bounds the rows of one Parquet row group of a new data file.
ROW_GROUP_LIMIT = "write.parquet.row-group-limit"
#: The table property that bounds the bytes (of Arrow data) of one row group.
ROW_GROUP_BYTES = "write.parquet.row-group-size-bytes"
#: The table property that sets the size at which a new data file is closed.
TARGET_FILE_SIZE = "write.target-file-size-bytes"
#: Iceberg's default target size of a data file.
DEFAULT_TARGET_FILE_SIZE = 512 << 20
#: Arrow bytes of a partition's rows per concurrent writer: a smaller input is written by one
#: core (as fast, in fewer files).
PARALLEL_MIN_BYTES = 64 << 20


def parquet_options(properties: Mapping[str, str]) -> ParquetOptions:
    """How new data files are written, from table properties (``ConfigError`` naming a bad
    value): ``write.parquet.row-group-limit`` rows and ``write.parquet.row-group-size-bytes``
    bytes per row group at most; ``write.target-file-size-bytes`` is checked too."""
    target_size(properties)
    if ROW_GROUP_LIMIT not in properties and ROW_GROUP_BYTES not in properties:
        return DEFAULT_OPTIONS
    limit = whole_number(properties, ROW_GROUP_LIMIT, DEFAULT_OPTIONS.row_group_size, 1)
    group_bytes = whole_number(properties, ROW_GROUP_BYTES, DEFAULT_OPTIONS.row_group_bytes, 1)
    return ParquetOptions(row_group_size=limit, row_group_bytes=group_bytes)


def target_size(properties: Mapping[str, str]) -> int:
    """``write.target-file-size-bytes`` (default 512 MiB); ``ConfigError`` unless a whole
    number of at least 1."""
    return whole_number(properties, TARGET_FILE_SIZE, DEFAULT_TARGET_FILE_SIZE, 1)


def _cores() -> int:
    return max(1, os.cpu_count() or 1)


def _pieces(table: pa.Table, cores: int) -> list[pa.Table]:
    """``table`` cut into contiguous slices for ``cores`` writers: one per
    :data:`PARALLEL_MIN_BYTES` of Arrow data, at most ``cores`` (zero-copy)."""
    count = max(1, min(cores, table.nbytes // PARALLEL_MIN_BYTES, table.num_rows))
    step = -(-table.num_rows // count)
    return [table.slice(i, step) for i in range(0, table.num_rows, step)]


def _in_order(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """``fn`` of each item, in order: a single item runs here, more run on the shared pool, at
    most ``workers`` at once. On an error, every item started has ended before it is raised."""
    if len(items) <= 1:
        yield from (fn(item) for item in items)
        return
    running: deque[Future[R]] = deque()
    source = iter(items)
    error: BaseException | None = None
    try:
        for item in source:
            running.append(submit(fn, item))
            while len(running) >= workers:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()
    except BaseException as exc:
        error = exc
        raise
    finally:
        if error is not None or running:
            for future in running:
                future.cancel()
            wait(running)


def snapshot_summary(
    operation: str,
    added: Sequence[DataFile],
    removed: Sequence[DataFile],
    deleted_records: int,
    parent: Snapshot | None,
    commit_id: str,
    extra: Mapping[str, str] | None = None,
    *,
    added_deletes: Sequence[DataFile] = (),
    removed_deletes: Sequence[DataFile] = (),
) -> dict[str, str]:
    """The Iceberg snapshot summary of a commit that adds and removes whole data files and
    delete files.

    Running totals continue the parent's (from zero for a first snapshot); a total the parent
    does not carry (another writer left it out) is left out too rather than guessed.
    """
    added_records = sum(df.record_count for df in added)
    added_size = sum(df.file_size_in_bytes for df in added)
    removed_size = sum(df.file_size_in_bytes for df in removed)
    partitions = {repr(sorted(df.partition.items())) for df in (*added, *removed)}
    out = {
        "operation": operation,
        "added-data-files": str(len(added)),
        "added-records": str(added_records),
        "added-files-size": str(added_size),
        "changed-partition-count": str(len(partitions)),
        COMMIT_ID: commit_id,
    }
    if removed:
        out["deleted-data-files"] = str(len(removed))
        out["deleted-records"] = str(deleted_records)
        out["removed-files-size"] = str(removed_size)
    out.update(extra or {})
    prev: Mapping[str, Any] = parent.summary if parent is not None else {}
    for total, delta in (
        ("total-records", added_records - deleted_records),
        ("total-data-files", len(added) - len(removed)),
        ("total-files-size", added_size - removed_size),
    ):
        if parent is None or total in prev:
            try:
                out[total] = str(int(prev.get(total, 0)) + delta)
            except ValueError:
                pass
    deltas = _delete_counts(added_deletes, "added")
    gone = _delete_counts(removed_deletes, "removed")
    out.update({k: str(v) for k, v in {**deltas, **gone}.items() if v})
    for total, kind in (
        ("total-delete-files", "delete-files"),
        ("total-position-deletes", "position-deletes"),
        ("total-equality-deletes", "equality-deletes"),
    ):
        if parent is None or total in prev:
            try:
                value = int(prev.get(total, "0")) + deltas[f"added-{kind}"]
                out[total] = str(value - gone[f"removed-{kind}"])
            except ValueError:
                pass
    return out


def _delete_counts(files: Sequence[DataFile], verb: str) -> dict[str, int]:
    """The summary counters of delete files added or removed (``verb``)."""
    pos = [df for df in files if df.content == POSITION_DELETES]
    eq = [df for df in files if df.content == EQUALITY_DELETES]
    dvs = sum(1 for df in pos if df.file_format == "PUFFIN")  # deletion vectors
    return {
        f"{verb}-delete-files": len(pos) + len(eq),
        f"{verb}-position-delete-files": len(pos) - dvs,
        f"{verb}-dvs": dvs,
        f"{verb}-equality-delete-files": len(eq),
        f"{verb}-position-deletes": sum(df.record_count for df in pos),
        f"{verb}-equality-deletes": sum(df.record_count for df in eq),
    }


__all__ = ["SnapshotProducer", "Writes", "snapshot_summary"]
