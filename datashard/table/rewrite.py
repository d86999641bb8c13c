"""Commits that remove or replace data files: ``overwrite`` and ``delete`` (and, built on the same
:class:`RewriteCommit`, compaction).

A :class:`RewriteCommit` removes a set of live data files (by path) and adds new ones, as one
snapshot. Its data files are staged once; every attempt re-reads the base's manifest list,
rewrites only the manifests that hold a removed file (live files carried as EXISTING, removed
ones as DELETED, with their sequence numbers), and adds one manifest for the new files.

Conflicts are checked on every base the commit builds on, before anything of the attempt is
written: the snapshots committed since the one this rewrite read must not have removed a file it
removes (always), nor, for ``overwrite`` and ``delete``, added a file that might hold rows in the
filter's range (by partition values and column statistics). Either raises
``CommitConflictError`` and the rewrite's files are deleted. Appends elsewhere (files that cannot
match the filter) commit and are kept. Compaction checks only removals, so concurrent appends
never fail it and are never lost.

``overwrite(data, filter)`` and ``delete(filter)``: files the filter cannot match (statistics,
partitions) are kept untouched; the others are read; a file whose every row matches is dropped
whole, a file with some matching rows is rewritten with the rest. A row where the filter is
null (a comparison with a null value) does not match and is kept. On a format version 3 table
the rows a rewrite keeps are written with their ``_row_id`` and
``_last_updated_sequence_number``, so no kept row changes either.

Row-level deletes: every file is read with the delete files that apply to it (position and
equality deletes, deletion vectors, :mod:`datashard.table.deletes`), so a deleted row is never
copied into a new file. A delete file that applied only to files this commit removes is removed
with them (its entry marked DELETED; the summary counts it); a deletion vector is told apart by
its offset, as one Puffin file holds many. A commit since the base that added a delete file
applying to a file this rewrite removes is a conflict: the rewrite read those rows as live; so
is one that added deletes of a data file this commit writes a deletion vector for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa

from datashard.errors import CommitConflictError
from datashard.iceberg.conversions import from_bytes
from datashard.iceberg.deletes import DeleteFile, DeleteIndex, DeleteKey, delete_key
from datashard.iceberg.expressions import Bound, FilterLike, bind_schema, must_match
from datashard.iceberg.expressions import to_arrow_expression as arrow_filter
from datashard.iceberg.manifest import (
    ADDED,
    DELETED,
    EXISTING,
    MANIFEST_DATA,
    MANIFEST_DELETES,
    DataFile,
    ManifestEntry,
    ManifestFile,
)
from datashard.iceberg.metadata import Snapshot, TableMetadata
from datashard.iceberg.partitioning import PartitionPruner, file_might_match
from datashard.storage.base import StorageBackend
from datashard.table.deletes import DeleteReader, delete_index
from datashard.table.manifests import ManifestReader
from datashard.table.producer import SnapshotProducer, Writes, snapshot_summary
from datashard.table.versions import Loaded, TablePaths


class RewriteCommit(SnapshotProducer):
    """Remove :attr:`removed` (paths of live files) and add staged files as one snapshot.

    With ``conflict_bound``, a commit since the base that added a file which might hold rows
    in the bound's range is a conflict (``overwrite`` and ``delete``); without it only a
    concurrent removal of the same files is (compaction).
    """

    def __init__(
        self,
        backend: StorageBackend,
        paths: TablePaths,
        base: Loaded,
        operation: str,
        *,
        reader: ManifestReader | None = None,
        conflict_bound: Bound | None = None,
        extra_summary: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(backend, paths, base)
        self.operation = operation
        self.reader = ManifestReader(backend) if reader is None else reader
        self.conflict_bound = conflict_bound
        self.extra_summary = dict(extra_summary or {})
        #: the live data files this commit removes, by path
        self.removed: dict[str, DataFile] = {}
        #: the data sequence number and spec id of each removed file (for delete scopes)
        self._removed_scope: dict[str, tuple[int, int]] = {}
        #: delete files this commit removes (they applied only to removed data files, or only
        #: to data files this commit writes a new deletion vector for), by :data:`DeleteKey`
        self.retired: dict[DeleteKey, DataFile] = {}
        #: delete files this commit adds, with the spec each is written for
        self.delete_files: list[tuple[DataFile, int]] = []
        #: data files the added position deletes name (they must stay live)
        self.delete_targets: set[str] = set()
        #: data files this commit writes a deletion vector for (format version 3), with their
        #: data sequence number and spec: no other vector may land for them meanwhile
        self.vector_targets: dict[str, tuple[DataFile, int, int]] = {}
        #: each data file :meth:`files_in_range` returned: its sequence number, spec and deletes
        self.scope: dict[str, tuple[DataFile, int, int, tuple[DeleteFile, ...]]] = {}
        self._deleted_records = 0
        self._index = DeleteIndex(())
        self._live: list[tuple[DataFile, int, int]] = []
        self._base_read = False
        base_snap = base.metadata.current_snapshot()
        self._base_snapshot_id = base_snap.snapshot_id if base_snap else None
        #: the sequence number of the snapshot read: files above it came later
        self._base_sequence = base_snap.sequence_number if base_snap else 0

    def remove(self, df: DataFile, sequence_number: int, spec_id: int) -> None:
        """Remove the live data file ``df`` (of that data sequence number and spec)."""
        self.removed[df.file_path] = df
        self._removed_scope[df.file_path] = (sequence_number, spec_id)

    def files_in_range(
        self, bound: Bound, *, whole: bool = True
    ) -> list[tuple[DataFile, int, int, tuple[DeleteFile, ...]]]:
        """The live data files of the base whose rows ``bound`` may match (by partition values
        and statistics), each with its data sequence number, spec id and the delete files that
        apply to it. With ``whole``, a file whose statistics prove every row matches is removed
        at once, unread (``whole=False``: every such file is returned to be read, for a caller
        whose bound only narrows the rows it looks at). Keeps what it read for
        :meth:`retire_deletes`."""
        md = self.base.metadata
        self.read_base()
        pruner = PartitionPruner(md, bound)
        out = []
        for df, seq, spec_id in self._live:
            if not file_might_match(bound, pruner, spec_id, df):
                continue
            if whole and must_match(bound, df, from_bytes):  # every row matches (statistics)
                self.remove(df, seq, spec_id)
                continue
            deletes = self._index.for_data_file(df, seq, spec_id)
            self.scope[df.file_path] = (df, seq, spec_id, deletes)
            out.append((df, seq, spec_id, deletes))
        return out

    def read_base(self) -> None:
        """Read the live data files and the delete files of the snapshot this commit builds
        on (once)."""
        if self._base_read:
            return
        md = self.base.metadata
        snapshot = md.current_snapshot()
        self._index = delete_index(md, self.reader.manifests(snapshot), self.reader.entries)
        self._live = [
            (e.data_file, e.sequence_number or 0, m.partition_spec_id)
            for m, e in self.reader.live_files(snapshot)
        ]
        self._base_read = True

    def deletes_of(self, path: str) -> tuple[DataFile, int, int, tuple[DeleteFile, ...]] | None:
        """The live data file at ``path`` in the base, with its data sequence number, spec
        and the delete files that apply to it; ``None`` when the base has no such file."""
        found = self.scope.get(path)
        if found is not None:
            return found
        self.read_base()
        for df, seq, spec_id in self._live:
            if df.file_path == path:
                found = (df, seq, spec_id, self._index.for_data_file(df, seq, spec_id))
                self.scope[path] = found
                return found
        return None

    def retire_deletes(self) -> None:
        """:meth:`retire_unused_deletes` of what :meth:`files_in_range` read."""
        self.retire_unused_deletes(self._index, self._live)

    def retire_unused_deletes(
        self, index: DeleteIndex, live: Iterable[tuple[DataFile, int, int]]
    ) -> None:
        """Mark for removal every delete file of ``index`` that applies to no data file of
        ``live`` (data file, sequence number, spec id) that this commit keeps, counting only
        the equality deletes of a data file this commit writes a deletion vector for (the new
        vector holds all of its position deletes)."""
        if not index:
            return
        used: set[DeleteKey] = set()
        for df, seq, spec_id in live:
            if df.file_path not in self.removed:
                vector = df.file_path in self.vector_targets
                used.update(
                    d.key
                    for d in index.for_data_file(df, seq, spec_id)
                    if not vector or d.is_equality
                )
        self.retired = {d.key: d.file for d in index.files if d.key not in used}

    # -- conflicts -----------------------------------------------------------------------------

    def check_conflicts(self, md: TableMetadata) -> None:
        """``CommitConflictError`` if, since the snapshot this rewrite read, a commit removed a
        file it removes, added a delete file applying to one, or (with a conflict bound) added
        a data file that might hold rows in the bound's range.

        Judged on the files of ``md``'s current snapshot, not on the snapshot history: a file
        is new when its data sequence number is above that of the snapshot read (every commit
        takes the next sequence number), so the check holds after retention dropped the
        snapshot read from the metadata, however many commits landed meanwhile.
        """
        if md.current_snapshot_id == self._base_snapshot_id:
            return
        manifests = self.reader.manifests(md.current_snapshot())
        if self.removed:
            live: set[str] = set()
            for m in manifests:
                if m.content == MANIFEST_DATA:
                    live.update(e.data_file.file_path for e in self.reader.entries(m) if e.is_live)
            gone = sorted(set(self.removed) - live)
            if gone:
                raise CommitConflictError(
                    f"{self.operation}: {len(gone)} file(s) it removes were already removed "
                    f"from {md.location} by a commit since it read the table, e.g. {gone[0]}; "
                    "reload and retry"
                )
        bound = self.conflict_bound
        pruner = PartitionPruner(md, bound) if bound is not None else None
        new_deletes: list[DeleteFile] = []
        for m in manifests:
            if m.sequence_number <= self._base_sequence:
                continue  # written before the snapshot read: nothing in it is newer
            data = m.content == MANIFEST_DATA
            for e in self.reader.entries(m):
                seq = e.sequence_number if e.sequence_number is not None else m.sequence_number
                if not e.is_live or seq <= self._base_sequence:
                    continue
                if not data:
                    unpartitioned = not md.spec(m.partition_spec_id).fields
                    new_deletes.append(
                        DeleteFile(e.data_file, seq, m.partition_spec_id, unpartitioned)
                    )
                elif (
                    bound is not None
                    and pruner is not None
                    and file_might_match(bound, pruner, m.partition_spec_id, e.data_file)
                ):
                    raise CommitConflictError(
                        f"{self.operation} conflicts with snapshot {e.snapshot_id} of "
                        f"{md.location}: it added {e.data_file.file_path}, which may hold rows "
                        "in the filter's range; reload and retry"
                    )
        if new_deletes and self.vector_targets:
            index = DeleteIndex(new_deletes)
            for path, (df, seq, spec_id) in self.vector_targets.items():
                theirs = [d for d in index.for_data_file(df, seq, spec_id) if not d.is_equality]
                if theirs:
                    raise CommitConflictError(
                        f"{self.operation} conflicts with a commit since it read "
                        f"{md.location}: it added deletes of {path} ({theirs[0].path}), for which "
                        "this commit writes a deletion vector (at most one per data file); "
                        "reload and retry"
                    )
        if new_deletes and self.removed:
            index = DeleteIndex(new_deletes)
            for path, df in self.removed.items():
                seq, spec_id = self._removed_scope.get(path, (0, self.spec.spec_id))
                hit = index.for_data_file(df, seq, spec_id)
                if hit:
                    raise CommitConflictError(
                        f"{self.operation} conflicts with a commit since it read "
                        f"{md.location}: it added delete file {hit[0].path}, which deletes rows "
                        f"of {path} that this commit read as live; reload and retry"
                    )

    # -- per attempt ---------------------------------------------------------------------------

    def manifests(
        self, md: TableMetadata, parent: Snapshot | None, seq: int
    ) -> tuple[list[ManifestFile], Writes]:
        self.check_conflicts(md)
        writes: Writes = []
        manifests: list[ManifestFile] = []
        if self.added:
            entries = [ManifestEntry(ADDED, None, None, None, df) for df in self.added]
            row, key, body = self.encode_manifest(entries, self.spec, seq, "m0")
            writes.append((key, body))
            manifests.append(row)
        by_spec: dict[int, list[ManifestEntry]] = {}
        for df, spec_id in self.delete_files:
            by_spec.setdefault(spec_id, []).append(ManifestEntry(ADDED, None, None, None, df))
        for spec_id, entries in sorted(by_spec.items()):
            row, key, body = self.encode_manifest(
                entries, md.spec(spec_id), seq, "d0", content=MANIFEST_DELETES
            )
            writes.append((key, body))
            manifests.append(row)
        found: set[str] = set()
        self._deleted_records = 0
        # entries of the manifests that hold a removed file, by spec: written as one manifest
        # of the files that stay (EXISTING) and one of the removed ones (DELETED) per spec
        kept: dict[int, list[ManifestEntry]] = {}
        gone: dict[int, list[ManifestEntry]] = {}
        # the same for delete manifests that hold a retired delete file
        kept_deletes: dict[int, list[ManifestEntry]] = {}
        gone_deletes: dict[int, list[ManifestEntry]] = {}
        live_paths: set[str] = set()
        for m in self.reader.manifests(parent):
            data = m.content == MANIFEST_DATA
            if data and self.delete_targets:
                live_paths.update(
                    e.data_file.file_path for e in self.reader.entries(m) if e.is_live
                )
            dropping: Mapping[str, DataFile] | Mapping[DeleteKey, DataFile]
            dropping = self.removed if data else self.retired
            if not dropping:
                manifests.append(m)
                continue
            entries = self.reader.entries(m)
            key_of: Callable[[DataFile], object] = _data_key if data else delete_key
            if not any(e.is_live and key_of(e.data_file) in dropping for e in entries):
                manifests.append(m)
                continue
            for e in entries:
                if not e.is_live:
                    continue  # deletes of earlier snapshots are not carried over
                if key_of(e.data_file) in dropping:
                    if data:
                        found.add(e.data_file.file_path)
                        self._deleted_records += e.data_file.record_count
                    (gone if data else gone_deletes).setdefault(m.partition_spec_id, []).append(
                        replace(e, status=DELETED, snapshot_id=self.snapshot_id)
                    )
                else:
                    (kept if data else kept_deletes).setdefault(m.partition_spec_id, []).append(
                        replace(e, status=EXISTING)
                    )
        self._check_targets(live_paths)
        missing = set(self.removed) - found
        if missing:
            raise CommitConflictError(
                f"{self.operation}: {len(missing)} file(s) it removes are no longer in the "
                f"table {md.location}, e.g. {sorted(missing)[0]}"
            )
        for group, content in (
            (kept, MANIFEST_DATA),
            (gone, MANIFEST_DATA),
            (kept_deletes, MANIFEST_DELETES),
            (gone_deletes, MANIFEST_DELETES),
        ):
            for spec_id, out in sorted(group.items()):
                row, key, body = self.encode_manifest(
                    out, md.spec(spec_id), seq, "m1", snapshot_id=self.snapshot_id, content=content
                )
                writes.append((key, body))
                manifests.append(row)
        return manifests, writes

    def summary(self, parent: Snapshot | None) -> dict[str, str]:
        return snapshot_summary(
            self.operation,
            self.added,
            list(self.removed.values()),
            self._deleted_records,
            parent,
            self.commit_id,
            self.extra_summary,
            added_deletes=[df for df, _ in self.delete_files],
            removed_deletes=list(self.retired.values()),
        )

    def _check_targets(self, live: set[str]) -> None:
        """``CommitConflictError`` unless every data file an added position delete names is
        live in the base (``live``) and not removed by this commit: a concurrent compaction or
        overwrite that removed it would drop the delete with it."""
        if not self.delete_targets:
            return
        ours = {df.file_path for df in self.added}  # rows added and deleted in one commit
        gone = sorted(self.delete_targets - (live - set(self.removed)) - ours)
        if gone:
            raise CommitConflictError(
                f"{self.operation}: {len(gone)} data file(s) it deletes rows of are no longer "
                f"in the table, e.g. {gone[0]}; reload and retry"
            )


def _data_key(df: DataFile) -> str:
    return df.file_path


# --------------------------------------------------------------------------------------------
# overwrite and delete


def _remaining_rows(table: pa.Table, bound: Bound) -> pa.Table:
    """The rows of ``table`` that do not match ``bound`` (null counts as not matching)."""
    index = pa.array(np.arange(table.num_rows, dtype=np.int64))
    matched = table.append_column("__row", index).filter(arrow_filter(bound))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[matched.column("__row").to_numpy()] = False
    return table.filter(pa.array(keep))


def overwrite(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    filter: FilterLike,
    tables: Sequence[pa.Table],
    operation: str = "overwrite",
) -> Loaded | None:
    """Replace the rows matching ``filter`` (all rows for ``None``) with ``tables`` (already
    coerced to the current schema); the new version, or ``None`` when nothing would change (no
    matching row and no data). Bad input raises before anything is written."""
    md = base.metadata
    schema = md.current_schema()
    bound = bind_schema(filter, schema)
    rewrite = RewriteCommit(backend, paths, base, operation, conflict_bound=bound)
    remainders: list[pa.Table] = []
    rows_of = DeleteReader(backend, md)
    fields = [*schema.fields, *rewrite.lineage_fields()]  # v3: rows kept keep their ids
    try:
        for df, seq, spec_id, deletes in rewrite.files_in_range(bound):
            rows = rows_of.read(df, deletes, fields, sequence_number=seq)
            rest = _remaining_rows(rows, bound)
            if rest.num_rows == rows.num_rows:
                continue  # no row matches: the file stays
            rewrite.remove(df, seq, spec_id)
            if rest.num_rows:
                remainders.append(rest)
        if not rewrite.removed and not any(t.num_rows for t in tables):
            return None
        rewrite.retire_deletes()
        rewrite.stage_tables([*remainders, *tables])
        rewrite.flush()
    except BaseException:
        rewrite.discard()
        raise
    loaded, _ = rewrite.commit()
    return loaded


def delete(
    backend: StorageBackend, paths: TablePaths, base: Loaded, filter: FilterLike
) -> Loaded | None:
    """Delete the rows matching ``filter``; the new version, or ``None`` when no row matched."""
    return overwrite(backend, paths, base, filter, [], "delete")


__all__ = ["RewriteCommit", "delete", "overwrite"]
