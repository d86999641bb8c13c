"""Commits that remove or replace data files: ``overwrite``, ``delete`` and compaction.

A :class:`FileRewrite` removes a set of live data files (by path) and adds new ones, as one
snapshot. Its data files are written once, before the commit loop; every attempt re-reads the
base's manifest list, rewrites only the manifests that hold a removed file (live files carried as
EXISTING, removed ones as DELETED, with their sequence numbers), and adds one manifest for the
new files.

Conflicts are checked on every base the commit builds on (:class:`NoConflictingChanges`): the
snapshots committed since the one this rewrite read must not have removed a file it removes
(always), nor, for ``overwrite`` and ``delete``, added a file that might hold rows in the
filter's range (by partition values and column statistics). Either raises
``CommitConflictError`` and the rewrite's files are deleted. Appends elsewhere (files that cannot
match the filter) commit and are kept. Compaction checks only removals, so concurrent appends
never fail it and are never lost.

``overwrite(data, filter)`` and ``delete(filter)``: files the filter cannot match (statistics,
partitions) are kept untouched; the others are read; a file whose every row matches is dropped
whole, a file with some matching rows is rewritten with the rest. A row where the filter is
null (a comparison with a null value) does not match and is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from datashard.append import snapshot_summary
from datashard.commit import (
    MAIN,
    AddSnapshot,
    AssertTableUUID,
    CommitSettings,
    Loaded,
    SetSnapshotRef,
    apply,
    commit,
    new_commit_id,
)
from datashard.conversions import from_bytes
from datashard.datafile import write_parquet
from datashard.errors import CommitConflictError, StorageError
from datashard.expressions import (
    Bound,
    BoundAnd,
    BoundOr,
    BoundPredicate,
    BoundTrue,
    FilterLike,
    bind,
    might_match,
    to_arrow_expression,
    to_expr,
)
from datashard.layout import TablePaths, key_for_uri
from datashard.manifest import (
    ADDED,
    DELETED,
    EXISTING,
    MANIFEST_DATA,
    DataFile,
    ManifestEntry,
    ManifestFile,
    build_manifest_file,
    read_manifest,
    read_manifest_list,
    write_manifest,
    write_manifest_list,
)
from datashard.metadata import Snapshot, TableMetadata, new_snapshot_id, now_ms
from datashard.partitioning import PartitionPruner, split_by_partition
from datashard.scan import read_parquet_by_id
from datashard.schema import Schema
from datashard.storage.base import StorageBackend
from datashard.types import (
    BinaryType,
    DoubleType,
    FixedType,
    FloatType,
    StringType,
    to_arrow_type,
)


def bind_filter(md: TableMetadata, filter: FilterLike) -> Bound:
    """``filter`` bound to the current schema; ``ValidationError`` for an unknown column."""
    schema = md.current_schema()
    fields = {f.name: f for f in schema.fields}
    arrow_types = {f.name: to_arrow_type(f.field_type) for f in schema.fields}
    return bind(to_expr(filter), fields, arrow_types)


# --------------------------------------------------------------------------------------------
# reading what a snapshot holds


class ManifestReader:
    """Reads manifest lists and manifests, remembering manifests by path (they never change)."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self._entries: dict[str, list[ManifestEntry]] = {}

    def manifests(self, snapshot: Snapshot | None) -> list[ManifestFile]:
        if snapshot is None:
            return []
        data = self.backend.read(key_for_uri(self.backend, snapshot.manifest_list))
        return list(read_manifest_list(data, snapshot.manifest_list))

    def entries(self, m: ManifestFile) -> list[ManifestEntry]:
        cached = self._entries.get(m.manifest_path)
        if cached is None:
            data = self.backend.read(key_for_uri(self.backend, m.manifest_path))
            cached = read_manifest(data, m.manifest_path, m)
            self._entries[m.manifest_path] = cached
        return cached

    def live_files(self, snapshot: Snapshot | None) -> list[tuple[ManifestFile, ManifestEntry]]:
        out: list[tuple[ManifestFile, ManifestEntry]] = []
        for m in self.manifests(snapshot):
            if m.content != MANIFEST_DATA:
                continue
            out.extend((m, e) for e in self.entries(m) if e.is_live)
        return out


def file_might_match(bound: Bound, pruner: PartitionPruner, spec_id: int, df: DataFile) -> bool:
    """Whether ``df`` might hold a row matching ``bound`` (partition values, then stats)."""
    if isinstance(bound, BoundTrue):
        return True
    if not pruner.file_might_match(spec_id, df):
        return False
    return might_match(bound, df, from_bytes)


def must_match(bound: Bound, df: DataFile) -> bool:
    """Whether the statistics of ``df`` prove that EVERY row matches ``bound`` (strict; ``False``
    when they cannot tell). Such a file is dropped without being read."""
    if isinstance(bound, BoundTrue):
        return True
    if isinstance(bound, BoundAnd):
        return must_match(bound.left, df) and must_match(bound.right, df)
    if isinstance(bound, BoundOr):
        return must_match(bound.left, df) or must_match(bound.right, df)
    if not isinstance(bound, BoundPredicate):
        return False
    try:
        return _predicate_must_match(bound, df)
    except Exception:  # an undecodable or incomparable bound proves nothing
        return False


def _predicate_must_match(p: BoundPredicate, df: DataFile) -> bool:
    fid = p.field_id
    nulls = df.null_value_counts.get(fid)
    values = df.value_counts.get(fid)
    if p.op == "is null":
        return nulls is not None and values is not None and nulls == values
    if nulls != 0:
        return False  # unknown, or a null row that matches no comparison
    if p.op == "not null":
        return True
    if isinstance(p.iceberg_type, (StringType, BinaryType, FixedType)):
        return False  # bounds may be truncated: they cannot prove every value
    if isinstance(p.iceberg_type, (FloatType, DoubleType)) and df.nan_value_counts.get(fid) != 0:
        return False
    raw_lo, raw_hi = df.lower_bounds.get(fid), df.upper_bounds.get(fid)
    if raw_lo is None or raw_hi is None:
        return False
    lo = pa.scalar(from_bytes(p.iceberg_type, raw_lo), type=p.arrow_type).as_py()
    hi = pa.scalar(from_bytes(p.iceberg_type, raw_hi), type=p.arrow_type).as_py()
    v = p.values[0] if p.values else None
    if p.op == "==":
        return bool(lo == hi == v)
    if p.op == "!=":
        return bool(v < lo or v > hi)
    if p.op == "<":
        return bool(hi < v)
    if p.op == "<=":
        return bool(hi <= v)
    if p.op == ">":
        return bool(lo > v)
    if p.op == ">=":
        return bool(lo >= v)
    if p.op == "in":
        return bool(lo == hi and lo in p.values)
    if p.op == "not in":
        return all(x < lo or x > hi for x in p.values)
    return False


# --------------------------------------------------------------------------------------------
# conflict detection


@dataclass
class NoConflictingChanges:
    """Requirement: since ``base_snapshot_id``, no commit removed a file in ``removed`` and
    (with ``bound``) none added a file that might match ``bound``."""

    backend: StorageBackend
    reader: ManifestReader
    base_snapshot_id: int | None
    removed: frozenset[str]
    bound: Bound | None
    what: str

    def validate(self, base: TableMetadata) -> None:
        if base.current_snapshot_id == self.base_snapshot_id:
            return
        between: list[Snapshot] = []
        found = self.base_snapshot_id is None
        for snap in base.ancestors():
            if snap.snapshot_id == self.base_snapshot_id:
                found = True
                break
            between.append(snap)
        if not found:
            raise CommitConflictError(
                f"{self.what} read snapshot {self.base_snapshot_id} of {base.location}, which is "
                "no longer an ancestor of the current snapshot (rolled back or expired)"
            )
        pruner = PartitionPruner(base, self.bound) if self.bound is not None else None
        for snap in between:
            added: list[tuple[ManifestFile, ManifestEntry]] = []
            for m in self.reader.manifests(snap):
                if m.added_snapshot_id != snap.snapshot_id or m.content != MANIFEST_DATA:
                    continue
                for e in self.reader.entries(m):
                    if e.snapshot_id != snap.snapshot_id:
                        continue
                    path = e.data_file.file_path
                    if e.status == DELETED and path in self.removed:
                        raise CommitConflictError(
                            f"{self.what} conflicts with snapshot {snap.snapshot_id} "
                            f"({snap.operation}) of {base.location}: it already removed {path}"
                        )
                    if e.status == ADDED:
                        added.append((m, e))
            if self.bound is None or pruner is None:
                continue
            for m, e in added:
                if file_might_match(self.bound, pruner, m.partition_spec_id, e.data_file):
                    raise CommitConflictError(
                        f"{self.what} conflicts with snapshot {snap.snapshot_id} "
                        f"({snap.operation}) of {base.location}: it added "
                        f"{e.data_file.file_path}, which may hold rows in the filter's range; "
                        "reload and retry"
                    )


# --------------------------------------------------------------------------------------------
# the commit


@dataclass
class FileRewrite:
    """Remove ``removed`` (paths of live files) and add ``tables`` as one snapshot."""

    backend: StorageBackend
    paths: TablePaths
    base: Loaded
    operation: str
    removed: dict[str, DataFile] = field(default_factory=dict)
    reader: ManifestReader | None = None
    conflict_bound: Bound | None = None
    extra_summary: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.snapshot_id = new_snapshot_id()
        self.commit_id = new_commit_id()
        md = self.base.metadata
        self.schema: Schema = md.current_schema()
        self.spec = md.spec()
        self.added: list[DataFile] = []
        self._staged: list[str] = []
        if self.reader is None:
            self.reader = ManifestReader(self.backend)

    def write_data(self, tables: Iterable[pa.Table]) -> None:
        """Write ``tables`` as data files of the current schema and spec (one per partition)."""
        for whole in tables:
            for partition, table in split_by_partition(whole, self.spec, self.schema):
                if table.num_rows == 0:
                    continue
                key = f"{self.paths.data_dir}/{uuid.uuid4()}.parquet"
                data, stats = write_parquet(table, self.schema)
                self._staged.append(key)
                self.backend.write(key, data)
                self.added.append(
                    stats.to_data_file(self.backend.uri_for(key), len(data), partition)
                )

    def build(self, loaded: Loaded, attempt: int) -> tuple[TableMetadata, list[str]]:
        md = loaded.metadata
        assert self.reader is not None
        seq = md.next_sequence_number
        parent = md.current_snapshot()
        written: list[str] = []
        manifests: list[ManifestFile] = []
        if self.added:
            entries = [ManifestEntry(ADDED, None, None, None, df) for df in self.added]
            body = write_manifest(entries, self.schema, self.spec, None)
            key = f"{self.paths.metadata_dir}/{uuid.uuid4()}-m0.avro"
            self._write(key, body, written)
            manifests.append(
                build_manifest_file(
                    entries,
                    manifest_path=self.backend.uri_for(key),
                    manifest_length=len(body),
                    spec=self.spec,
                    schema=self.schema,
                    added_snapshot_id=self.snapshot_id,
                    sequence_number=seq,
                )
            )
        found: set[str] = set()
        deleted_records = 0
        # entries of the manifests that hold a removed file, by spec: written as one manifest
        # of the files that stay (EXISTING) and one of the removed ones (DELETED) per spec
        kept: dict[int, list[ManifestEntry]] = {}
        gone: dict[int, list[ManifestEntry]] = {}
        for m in self.reader.manifests(parent):
            if m.content != MANIFEST_DATA:
                manifests.append(m)
                continue
            entries = self.reader.entries(m)
            if not any(e.is_live and e.data_file.file_path in self.removed for e in entries):
                manifests.append(m)
                continue
            for e in entries:
                if not e.is_live:
                    continue  # deletes of earlier snapshots are not carried over
                if e.data_file.file_path in self.removed:
                    found.add(e.data_file.file_path)
                    deleted_records += e.data_file.record_count
                    gone.setdefault(m.partition_spec_id, []).append(
                        replace(e, status=DELETED, snapshot_id=self.snapshot_id)
                    )
                else:
                    kept.setdefault(m.partition_spec_id, []).append(replace(e, status=EXISTING))
        for group in (kept, gone):
            for spec_id, out in sorted(group.items()):
                spec = md.spec(spec_id)
                body = write_manifest(out, self.schema, spec, self.snapshot_id)
                key = f"{self.paths.metadata_dir}/{uuid.uuid4()}-m1.avro"
                self._write(key, body, written)
                manifests.append(
                    build_manifest_file(
                        out,
                        manifest_path=self.backend.uri_for(key),
                        manifest_length=len(body),
                        spec=spec,
                        schema=self.schema,
                        added_snapshot_id=self.snapshot_id,
                        sequence_number=seq,
                    )
                )
        missing = set(self.removed) - found
        if missing:
            raise CommitConflictError(
                f"{self.operation}: {len(missing)} file(s) it removes are no longer in the "
                f"table {md.location}, e.g. {sorted(missing)[0]}"
            )
        list_key = (
            f"{self.paths.metadata_dir}/snap-{self.snapshot_id}-{attempt}-{uuid.uuid4()}.avro"
        )
        body = write_manifest_list(
            manifests, self.snapshot_id, parent.snapshot_id if parent else None, seq
        )
        self._write(list_key, body, written)
        snapshot = Snapshot(
            snapshot_id=self.snapshot_id,
            parent_snapshot_id=parent.snapshot_id if parent else None,
            sequence_number=seq,
            timestamp_ms=max(now_ms(), md.last_updated_ms),
            manifest_list=self.backend.uri_for(list_key),
            summary=snapshot_summary(
                self.operation,
                self.added,
                list(self.removed.values()),
                deleted_records,
                parent,
                self.commit_id,
                self.extra_summary,
            ),
            schema_id=md.current_schema_id,
        )
        new_md = apply(
            md,
            [AddSnapshot(snapshot), SetSnapshotRef(MAIN, self.snapshot_id)],
            base_location=loaded.location,
            now_ms=snapshot.timestamp_ms,
        )
        return new_md, written

    def _write(self, key: str, body: bytes, written: list[str]) -> None:
        written.append(key)
        self.backend.write(key, body)

    def commit(self, check_added: bool) -> Loaded:
        """Run the commit loop; on any failure the new data files are deleted."""
        assert self.reader is not None
        base_snap = self.base.metadata.current_snapshot()
        requirement = NoConflictingChanges(
            self.backend,
            self.reader,
            base_snap.snapshot_id if base_snap else None,
            frozenset(self.removed),
            self.conflict_bound if check_added else None,
            self.operation,
        )
        settings = CommitSettings.from_properties(self.base.metadata.properties)
        result = commit(
            self.backend,
            self.paths,
            self.base,
            self.build,
            [AssertTableUUID(self.base.metadata.table_uuid), requirement],
            self.commit_id,
            settings,
            staged_keys=self._staged,
        )
        return result.loaded

    def discard(self) -> None:
        """Delete the data files written so far (the commit will not run)."""
        try:
            if self._staged:
                self.backend.delete_many(list(self._staged))
        except StorageError:
            pass


# --------------------------------------------------------------------------------------------
# overwrite and delete


def _remaining_rows(table: pa.Table, bound: Bound) -> pa.Table:
    """The rows of ``table`` that do not match ``bound`` (null counts as not matching)."""
    index = pa.array(np.arange(table.num_rows, dtype=np.int64))
    matched = table.append_column("__row", index).filter(to_arrow_expression(bound))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[matched.column("__row").to_numpy()] = False
    return table.filter(pa.array(keep))


def overwrite_files(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    filter: FilterLike,
    tables: Sequence[pa.Table],
    operation: str,
) -> Loaded | None:
    """Replace the rows matching ``filter`` (all rows for ``None``) with ``tables``.

    Returns the new version, or ``None`` when nothing would change (no matching row and no
    data). Bad input raises before anything is written.
    """
    md = base.metadata
    bound = bind_filter(md, filter)
    schema = md.current_schema()
    reader = ManifestReader(backend)
    rewrite = FileRewrite(backend, paths, base, operation, reader=reader, conflict_bound=bound)
    pruner = PartitionPruner(md, bound)
    remainders: list[pa.Table] = []
    try:
        for m, e in reader.live_files(md.current_snapshot()):
            df = e.data_file
            if not file_might_match(bound, pruner, m.partition_spec_id, df):
                continue
            if must_match(bound, df):  # every row matches (statistics): drop unread
                rewrite.removed[df.file_path] = df
                continue
            data = backend.read(key_for_uri(backend, df.file_path))
            rows = read_parquet_by_id(data, df.file_path, list(schema.fields))
            rest = _remaining_rows(rows, bound)
            if rest.num_rows == rows.num_rows:
                continue  # no row matches: the file stays
            rewrite.removed[df.file_path] = df
            if rest.num_rows:
                remainders.append(rest)
        if not rewrite.removed and not any(t.num_rows for t in tables):
            return None
        rewrite.write_data([*remainders, *tables])
    except BaseException:
        rewrite.discard()
        raise
    return rewrite.commit(check_added=True)


__all__ = [
    "FileRewrite",
    "ManifestReader",
    "NoConflictingChanges",
    "bind_filter",
    "file_might_match",
    "overwrite_files",
]
