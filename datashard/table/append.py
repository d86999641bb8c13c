"""Appends: new data files as one snapshot, with the small manifests of the table merged.

Staged once per commit (:class:`datashard.table.producer.SnapshotProducer`): one Parquet data
file per appended table and partition value, and one manifest listing them as ADDED
(``metadata/<uuid>-m0.avro``). Built per attempt on the newest base ``v<N>``: the manifests of
the new snapshot, the new manifest first, then the parent snapshot's manifests, small ones merged
by size class (entries carried over as EXISTING, see :meth:`AppendCommit.merge_tiers`).

The parent's manifests come from the writer's cache when the base is the writer's own last
commit (no read), else from the parent's manifest list (one read).

An append with an idempotency key records it in the snapshot summary
(``datashard.idempotency-key``) and requires, on every base it builds on, that no retained
snapshot carries it (:class:`~datashard.table.updates.AssertNewKey`). Of two writers racing with
one key, the loser finds the winner's snapshot when it rebuilds on the newer version, deletes
what it staged and reports that snapshot instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import pyarrow as pa

from datashard.errors import CorruptMetadataError, StorageError
from datashard.iceberg.manifest import ADDED, EXISTING, MANIFEST_DATA, ManifestEntry, ManifestFile
from datashard.iceberg.manifest_codec import (
    inherit_row_ids,
    read_manifest,
    read_manifest_list,
    write_manifest,
)
from datashard.iceberg.metadata import Snapshot, TableMetadata
from datashard.storage.base import StorageBackend
from datashard.table.commit import CommitSettings
from datashard.table.group import Group, GroupSettings, PendingRecord, contended
from datashard.table.process import submit
from datashard.table.producer import SnapshotProducer, Writes, snapshot_summary
from datashard.table.updates import IDEMPOTENCY_KEY, AssertNewKey, Requirement
from datashard.table.versions import Loaded, TablePaths, key_for_uri


@dataclass
class WriterState:
    """What one writer (a :class:`~datashard.table.table.Table`) keeps between its appends."""

    #: manifests of the writer's last commit, by snapshot id (its next base, if uncontended)
    manifests: dict[int, list[ManifestFile]] = field(default_factory=dict)
    #: entries of manifests this writer wrote, merged or read, by manifest path (for merging)
    entries: dict[str, list[ManifestEntry]] = field(default_factory=dict)
    #: manifest reads running in the background for a coming merge
    prefetch: Prefetch = field(default_factory=lambda: Prefetch())
    #: the writer's last append lost a race or was folded in (group commit: the next one
    #: publishes its record at once)
    contended: bool = False
    #: pending records read so far, by key (group commit; a record never changes)
    records: dict[str, PendingRecord | None] = field(default_factory=dict)
    #: pending records whose writers led a round that made no version (group commit)
    suspects: set[str] = field(default_factory=set)
    #: seconds between two versions as this writer saw them (group commit: the followers'
    #: pace, carried from one append to the next)
    round_s: float = 0.1


class AppendCommit(SnapshotProducer):
    """One append commit of a writer: stage files, then run the commit loop."""

    operation = "append"
    version_bound = False  # a table upgraded to v3 meanwhile: the new files inherit row ids

    def __init__(
        self,
        backend: StorageBackend,
        paths: TablePaths,
        base: Loaded,
        state: WriterState | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(backend, paths, base)
        #: recorded in the summary; an append that finds it on a base lands nothing
        self.idempotency_key = idempotency_key
        state = WriterState() if state is None else state
        self.state = state
        self.cache = state.manifests
        #: entries of manifests this writer wrote, by manifest path (saves reads when merging)
        self.entry_cache: MutableMapping[str, list[ManifestEntry]] = state.entries
        #: manifest reads running in the background for a coming merge (kept by the table)
        self.prefetch = state.prefetch
        self._merged: dict[str, list[ManifestEntry]] = {}
        #: merged manifests this attempt writes (with the manifest list, concurrently)
        self._merge_writes: Writes = []
        #: the entries of the manifest of the appends this attempt folds in (group commit)
        self._folded: dict[str, list[ManifestEntry]] = {}
        self.manifest: ManifestFile | None = None

    # -- staging -----------------------------------------------------------------------------

    def stage_append(self, tables: Sequence[pa.Table], progress: Progress | None = None) -> None:
        """Encode the data files and the manifest; nothing is written yet (the first attempt
        writes them together with its manifest list, concurrently). Raises ``ValidationError``
        for data that does not fit the schema, before any request.

        With ``progress``, the rows are written in slices of about :data:`PROGRESS_SLICE_BYTES`
        of Arrow data and ``progress(rows_written, rows, "rows")`` is called before the first
        and after each (a slice boundary may close a data file below the target size); an
        exception it raises cancels the append (the caller deletes what was written)."""
        if progress is None:
            self.stage_tables(tables)
        else:
            total = sum(t.num_rows for t in tables)
            done = 0
            progress(done, total, "rows")
            for piece in _progress_slices(tables):
                self.stage_tables([piece])
                done += piece.num_rows
                progress(done, total, "rows")
        entries = [ManifestEntry(ADDED, self.snapshot_id, None, None, df) for df in self.added]
        # sequence numbers are set per attempt (the entries inherit them)
        self.manifest, key, body = self.encode_manifest(
            entries, self.spec, 0, "m0", snapshot_id=self.snapshot_id
        )
        self.stage(key, body)

    # -- per attempt ---------------------------------------------------------------------------

    def parent_manifests(self, md: TableMetadata) -> list[ManifestFile]:
        parent = md.current_snapshot()
        if parent is None:
            return []
        cached = self.cache.get(parent.snapshot_id)
        if cached is not None:
            return list(cached)
        data = self.backend.read(key_for_uri(self.backend, parent.manifest_list))
        return list(read_manifest_list(data, parent.manifest_list))

    def manifests(
        self, md: TableMetadata, parent: Snapshot | None, seq: int
    ) -> tuple[list[ManifestFile], Writes]:
        assert self.manifest is not None
        settings = CommitSettings.from_properties(md.properties)
        ours = replace(self.manifest, sequence_number=seq, min_sequence_number=seq)
        # the parent is this writer's own last commit iff its manifests are cached
        own_base = parent is None or parent.snapshot_id in self.cache
        manifests = [ours, *self.parent_manifests(md)]
        self._merged, self._merge_writes, self._folded = {}, [], {}
        if settings.merge_enabled:
            manifests = self.merge_tiers(manifests, ours, seq, settings, own_base)
        if self.group is not None and self.group.chosen:
            # the appends this attempt folds in: their files in one manifest of this snapshot
            # (ADDED here, as for its own), written with the manifest list
            files = self.group.folded_files()
            entries = [ManifestEntry(ADDED, self.snapshot_id, None, None, df) for df in files]
            folded, key, body = self.encode_manifest(
                entries, self.spec, seq, "g1", snapshot_id=self.snapshot_id
            )
            self._merge_writes.append((key, body))
            self._folded = {
                folded.manifest_path: [
                    ManifestEntry(ADDED, self.snapshot_id, seq, seq, df) for df in files
                ]
            }
            manifests = [manifests[0], folded, *manifests[1:]]
        return manifests, self._merge_writes

    def merge_tiers(
        self,
        manifests: list[ManifestFile],
        ours: ManifestFile,
        seq: int,
        settings: CommitSettings,
        own_base: bool = True,
    ) -> list[ManifestFile]:
        """Merge small manifests by size class so the list and the merge work stay bounded.

        With ``M = commit.manifest.min-count-to-merge``, a data manifest of the default spec
        with ``f`` files is in class ``floor(log_M f)``. When a class holds ``M`` manifests
        they are rewritten into one (of a higher class); the entries keep their snapshot ids and
        sequence numbers, as EXISTING. Each file is rewritten about ``log_M(files)`` times in
        the table's life. This commit's own manifest is never merged into another.

        One merge per full class, and no reads while the race is on: a merge of the ``M``
        manifests whose entries this writer holds (it wrote them, merged them, or read them
        earlier) costs no request. When a class is full but its entries are not at hand, the
        writer that made the base snapshot (the writer alone, when there is one; under
        contention the one most likely to commit next) starts reading them in the background
        (:class:`Prefetch`) and merges on a later commit; other writers do not read them. Only
        a class of ``M + M // 2`` manifests is merged at once by anyone, reading what is
        missing. Reads inside the commit window would make the merging writer lose the race
        (and every writer that builds while a class is full read the same manifests). So the
        list holds fewer than ``M`` manifests per class, plus what arrives while a prefetch
        runs, and fewer than ``M + M // 2`` in any case.
        """
        base = settings.min_count_to_merge
        self.prefetch.harvest(self.entry_cache)
        for _ in range(8):  # a merge can fill the next class: cascade, bounded
            classes: dict[int, list[ManifestFile]] = {}
            for m in manifests:
                if (
                    m is not ours
                    and m.content == MANIFEST_DATA
                    and m.partition_spec_id == self.spec.spec_id
                    and m.manifest_length < settings.target_manifest_bytes
                ):
                    classes.setdefault(_size_class(m, base), []).append(m)
            group: list[ManifestFile] = []
            for k in sorted(classes):
                group = self._to_merge(classes[k], base, own_base)
                if group:
                    break
            if not group:
                break
            # a manifest merged earlier in this attempt (a cascade) is not written yet: merged
            # again, it is dropped before it is ever written
            again = {m.manifest_path for m in group if m.manifest_path in self._merged}
            merged = self.merge(group, seq)
            if again:
                gone = {key_for_uri(self.backend, path) for path in again}
                self._merge_writes = [(k, b) for k, b in self._merge_writes if k not in gone]
                for path in again:
                    del self._merged[path]
            manifests = [ours, merged, *(m for m in manifests if m is not ours and m not in group)]
        return manifests

    def _held(self, path: str) -> bool:
        """Whether the entries of the manifest at ``path`` are at hand (no read needed)."""
        return path in self._merged or path in self.entry_cache

    def _to_merge(
        self, members: list[ManifestFile], base: int, own_base: bool
    ) -> list[ManifestFile]:
        """The manifests of one size class this attempt merges now (see :meth:`merge_tiers`);
        may start background reads for a later merge."""
        if len(members) < base:
            return []
        if len(members) >= base + base // 2:
            return members
        held = [m for m in members if self._held(m.manifest_path)]
        if len(held) >= base:
            return held
        if own_base:
            self.prefetch.start(
                [m for m in members if not self._held(m.manifest_path)], self._read_entries
            )
        return []

    def _read_entries(self, m: ManifestFile) -> list[ManifestEntry]:
        data = self.backend.read(key_for_uri(self.backend, m.manifest_path))
        return read_manifest(data, m.manifest_path, m)

    def _entries(self, group: list[ManifestFile]) -> list[list[ManifestEntry]]:
        """The entries of each manifest of ``group``: from the writer's cache, the rest read
        concurrently and kept there (a manifest never changes), so an attempt that lost a race
        and merges the same manifests again reads none of them twice."""
        missing = [m for m in group if not self._held(m.manifest_path)]
        if len(missing) == 1:
            self.entry_cache[missing[0].manifest_path] = self._read_entries(missing[0])
        elif missing:
            futures = [submit(self._read_entries, m) for m in missing]
            for m, future in zip(missing, futures, strict=True):
                self.entry_cache[m.manifest_path] = future.result()
        return [
            self._merged[m.manifest_path]
            if m.manifest_path in self._merged
            else _with_row_ids(self.entry_cache[m.manifest_path], m)
            for m in group
        ]

    def merge(self, group: list[ManifestFile], seq: int) -> ManifestFile:
        """Rewrite ``group`` into one manifest (live entries, as EXISTING, with the row ids
        they inherited on a format version 3 table, so none changes). The manifest is written
        by :meth:`build`, with the manifest list."""
        entries = [
            replace(e, status=EXISTING)
            for manifest_entries in self._entries(group)
            for e in manifest_entries
            if e.is_live
        ]
        merged, key, body = self.encode_manifest(
            entries, self.spec, seq, "m1", snapshot_id=self.snapshot_id
        )
        self._merge_writes.append((key, body))  # written with the manifest list
        self._merged[merged.manifest_path] = entries
        return merged

    def _remember_entries(self, seq: int) -> None:
        """Keep the entries of the manifests this commit wrote (and the list now names), so the
        next merge need not read them back."""
        live = {m.manifest_path for m in self.last_manifests}
        for path in [p for p in self.entry_cache if p not in live]:
            del self.entry_cache[path]
        if self.manifest is not None:
            self.entry_cache[self.manifest.manifest_path] = [
                ManifestEntry(ADDED, self.snapshot_id, seq, seq, df) for df in self.added
            ]
        self.entry_cache.update(self._merged)
        self.entry_cache.update(self._folded)
        if sum(len(v) for v in self.entry_cache.values()) > _MAX_CACHED_ENTRIES:
            self.entry_cache.clear()

    def summary(self, parent: Snapshot | None) -> dict[str, str]:
        extra = {IDEMPOTENCY_KEY: self.idempotency_key} if self.idempotency_key else None
        out = snapshot_summary("append", self.added, (), 0, parent, self.commit_id, extra)
        if self.group is not None:
            self.group.add_to_summary(out)
        return out

    def build(self, loaded: Loaded, attempt: int) -> tuple[TableMetadata, list[str]]:
        out = super().build(loaded, attempt)
        if self.group is not None and self.manifest is not None:
            # written with this attempt's list: to delete if another writer folds this in
            self.group.own_manifest = self.manifest.manifest_path
        return out

    def _make_group(self) -> Group | None:
        """Group commit for this append, if the table turns it on. Not for a commit with
        requirements other than its idempotency key (``add_files``' checks): a writer that
        folds a record checks only its key."""
        settings = GroupSettings.from_properties(self.base.metadata.properties)
        if not settings.enabled or self.manifest is None:
            return None
        if any(not isinstance(r, AssertNewKey) for r in self.requirements()):
            return None

        def record_manifest() -> bytes:
            # the same entries with inherited snapshot ids: whichever snapshot folds it in
            entries = [ManifestEntry(ADDED, None, None, None, df) for df in self.added]
            return write_manifest(
                entries, self.schema, self.spec, None, MANIFEST_DATA, self.format_version
            )

        return Group(
            # the writer's last append met contention, or the table shows it now
            eager=self.state.contended or contended(self.base.metadata),
            _cache=self.state.records,
            _suspects=self.state.suspects,
            round_s=self.state.round_s,
            backend=self.backend,
            paths=self.paths,
            commit_id=self.commit_id,
            settings=settings,
            make_manifest=record_manifest,
            counters={
                "added-data-files": len(self.added),
                "added-records": sum(df.record_count for df in self.added),
                "added-files-size": sum(df.file_size_in_bytes for df in self.added),
            },
            partitions=tuple(sorted({repr(sorted(df.partition.items())) for df in self.added})),
            schema_id=self.schema.schema_id,
            spec_id=self.spec.spec_id,
            idempotency_key=self.idempotency_key,
        )

    def requirements(self) -> list[Requirement]:
        """With an idempotency key: no snapshot of the base carries it yet (checked on every
        attempt's base, so a writer that finds it there lands nothing and deletes its files)."""
        return [AssertNewKey(self.idempotency_key)] if self.idempotency_key else []

    # -- the whole commit ------------------------------------------------------------------------

    def append(
        self,
        tables: Sequence[pa.Table],
        after: Future[bool] | None = None,
        progress: Progress | None = None,
    ) -> tuple[Loaded, Future[bool] | bool]:
        """Stage ``tables`` and commit them as one snapshot: the new version, and the
        version-hint write (running in the background, after ``after``). ``progress``: see
        :meth:`stage_append`; what it raises cancels the append, nothing left behind."""
        try:
            self.stage_append(tables, progress)
            self.group = self._make_group()
        except BaseException:
            self.discard()  # data files already written: the commit will not run
            raise
        try:
            loaded, hint = self.commit(background=True, after=after)
        finally:
            if self.group is not None:
                self.state.round_s = self.group.round_s
        # contention: a lost race, or this append was folded in or folded others in
        self.state.contended = (
            self.attempts > 1
            or self.folded_into is not None
            or (self.group is not None and bool(self.group.chosen))
        )
        snap = loaded.metadata.current_snapshot()
        if snap is not None and snap.snapshot_id == self.snapshot_id:
            self.cache.clear()  # keep only the newest: older bases mean a lost race anyway
            self.cache[self.snapshot_id] = list(self.last_manifests)
            self._remember_entries(snap.sequence_number)
        return loaded, hint


class Prefetch:
    """Manifest reads a writer runs in the background for a merge on a later commit.

    One prefetch at a time per table, in at most :data:`_PREFETCH_TASKS` background tasks, each
    reading its share one manifest after another (the pool is shared with commits' writes).
    Only the committing thread starts and harvests them, so the entry cache is touched by that
    thread alone. A read that fails is dropped (a merge reads what it lacks itself); after a
    fork the parent's tasks are forgotten (their threads are not in the child).
    """

    def __init__(self) -> None:
        self._batches: list[Future[dict[str, list[ManifestEntry]]]] = []
        self._pid = os.getpid()

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._batches, self._pid = [], os.getpid()

    def start(
        self,
        manifests: Sequence[ManifestFile],
        read: Callable[[ManifestFile], list[ManifestEntry]],
    ) -> None:
        """Read ``manifests`` in the background, unless reads started earlier are running."""
        self._forget_after_fork()
        if self._batches:  # one prefetch at a time per table: the pool is shared
            return
        for i in range(_PREFETCH_TASKS):
            part = manifests[i::_PREFETCH_TASKS]
            if part:
                self._batches.append(submit(_read_each, part, read))

    def wait(self) -> None:
        """Wait until every read started in this process has finished."""
        self._forget_after_fork()
        for work in self._batches:
            work.exception()

    def harvest(self, into: MutableMapping[str, list[ManifestEntry]]) -> None:
        """Move the entries of finished batches into ``into``."""
        self._forget_after_fork()
        for batch in [b for b in self._batches if b.done()]:
            self._batches.remove(batch)
            if batch.exception() is None:
                into.update(batch.result())


#: Background tasks (threads of the shared pool) one prefetch uses.
_PREFETCH_TASKS = 4


def _read_each(
    manifests: Sequence[ManifestFile], read: Callable[[ManifestFile], list[ManifestEntry]]
) -> dict[str, list[ManifestEntry]]:
    """The entries of each manifest ``read`` can read, by path (failures are left out)."""
    out: dict[str, list[ManifestEntry]] = {}
    for m in manifests:
        try:
            out[m.manifest_path] = read(m)
        except (StorageError, CorruptMetadataError):
            continue
    return out


#: A progress callback of a long operation: ``progress(done, total, unit)`` with ``unit``
#: ``"rows"`` or ``"files"``; an exception it raises cancels the operation.
Progress = Callable[[int, int, str], None]

#: Arrow bytes of the input an append with a progress callback writes between two calls.
PROGRESS_SLICE_BYTES = 256 << 20


def _progress_slices(tables: Sequence[pa.Table]) -> Iterator[pa.Table]:
    """``tables`` cut into zero-copy slices of about :data:`PROGRESS_SLICE_BYTES` each."""
    for table in tables:
        if not table.num_rows:
            continue
        per_row = max(1, table.nbytes // table.num_rows)
        step = max(1, PROGRESS_SLICE_BYTES // per_row)
        for start in range(0, table.num_rows, step):
            yield table.slice(start, step)


def _with_row_ids(entries: list[ManifestEntry], m: ManifestFile) -> list[ManifestEntry]:
    """``entries`` of manifest ``m`` as a reader sees them: with the row ids they inherit
    from ``m``'s ``first_row_id`` (format version 3; cached entries of a manifest written
    before the table was upgraded have none yet)."""
    return entries if m.first_row_id is None else inherit_row_ids(entries, m.first_row_id)


#: Entries a writer keeps in memory for merging, at most.
_MAX_CACHED_ENTRIES = 200_000


def _size_class(m: ManifestFile, base: int) -> int:
    files = max(1, m.added_files_count + m.existing_files_count)
    k = 0
    while files >= base:
        files //= base
        k += 1
    return k


__all__ = ["PROGRESS_SLICE_BYTES", "AppendCommit", "Prefetch", "Progress", "WriterState"]
