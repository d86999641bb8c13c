"""What an append commits, built once and re-based on every retry.

Staged once per commit (never rewritten on a retry):
  1. one Parquet data file per appended table: ``data/<uuid>.parquet``;
  2. one manifest listing them as ADDED: ``metadata/<uuid>-m0.avro``.
Built per attempt on the newest base ``v<N>``:
  3. the manifest list ``metadata/snap-<snapshot-id>-<attempt>-<uuid>.avro``: the new manifest
     first, then the parent snapshot's manifests, small ones merged once there are more than
     ``commit.manifest.min-count-to-merge`` of them (entries carried over as EXISTING);
  4. the snapshot and the new metadata, by :func:`datashard.commit.apply`.

The parent's manifests come from the writer's cache when the base is the writer's own last
commit (no read), else from the parent's manifest list (one read).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import pyarrow as pa

from datashard._threads import shared_pool, submit
from datashard.commit import (
    COMMIT_ID,
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
from datashard.datafile import write_parquet
from datashard.errors import CorruptMetadataError, StorageError
from datashard.layout import TablePaths, key_for_uri
from datashard.manifest import (
    ADDED,
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
from datashard.partitioning import split_by_partition
from datashard.storage.base import StorageBackend


class AppendCommit:
    """One append commit of a writer: stage files, then run the commit loop."""

    def __init__(
        self,
        backend: StorageBackend,
        paths: TablePaths,
        base: Loaded,
        manifest_cache: MutableMapping[int, list[ManifestFile]],
        entry_cache: MutableMapping[str, list[ManifestEntry]] | None = None,
        prefetch: Prefetch | None = None,
    ) -> None:
        self.backend = backend
        self.paths = paths
        self.base = base
        self.cache = manifest_cache
        #: entries of manifests this writer wrote, by manifest path (saves reads when merging)
        self.entry_cache: MutableMapping[str, list[ManifestEntry]] = (
            {} if entry_cache is None else entry_cache
        )
        #: manifest reads running in the background for a coming merge (kept by the table)
        self.prefetch = Prefetch() if prefetch is None else prefetch
        self._merged: dict[str, list[ManifestEntry]] = {}
        #: merged manifests this attempt writes (with the manifest list, concurrently)
        self._merge_writes: list[tuple[str, bytes]] = []
        self.snapshot_id = new_snapshot_id()
        self.commit_id = new_commit_id()
        self.schema = base.metadata.current_schema()
        self.spec = base.metadata.spec()
        self.data_files: list[DataFile] = []
        self.manifest: ManifestFile | None = None
        self._last_manifests: list[ManifestFile] = []
        #: staged objects not written yet: written with the first manifest list
        self._pending: list[tuple[str, bytes]] = []

    # -- staging -----------------------------------------------------------------------------

    def stage(self, tables: Sequence[pa.Table]) -> list[str]:
        """Encode the data files and the manifest; the keys they will have.

        Nothing is written yet: the first attempt writes them together with its manifest list,
        concurrently (see :meth:`_write_all`). Raises ``ValidationError`` for data that does not
        fit the schema, before any request.
        """
        for whole in tables:
            # one data file per partition value (datashard.partitioning; one file unpartitioned)
            for partition, table in split_by_partition(whole, self.spec, self.schema):
                key = f"{self.paths.data_dir}/{uuid.uuid4()}.parquet"
                data, stats = write_parquet(table, self.schema)
                self._pending.append((key, data))
                uri = self.backend.uri_for(key)
                self.data_files.append(stats.to_data_file(uri, len(data), partition))
        entries = [ManifestEntry(ADDED, self.snapshot_id, None, None, df) for df in self.data_files]
        body = write_manifest(entries, self.schema, self.spec, self.snapshot_id)
        key = f"{self.paths.metadata_dir}/{uuid.uuid4()}-m0.avro"
        self._pending.append((key, body))
        # sequence numbers are set per attempt (the entries inherit them)
        self.manifest = build_manifest_file(
            entries,
            manifest_path=self.backend.uri_for(key),
            manifest_length=len(body),
            spec=self.spec,
            schema=self.schema,
            added_snapshot_id=self.snapshot_id,
            sequence_number=0,
        )
        return [k for k, _ in self._pending]

    def _write_all(self, writes: list[tuple[str, bytes]]) -> None:
        """Write objects concurrently (they are independent and unreferenced until the commit
        point); on any failure delete every one of them and re-raise."""
        if len(writes) == 1:
            try:
                self.backend.write(*writes[0])
                return
            except BaseException:
                _delete_quietly(self.backend, [writes[0][0]])
                raise
        futures = [submit(self.backend.write, key, data) for key, data in writes]
        errors = [f.exception() for f in futures]
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            _delete_quietly(self.backend, [k for k, _ in writes])
            raise failed

    # -- per attempt ---------------------------------------------------------------------------

    def parent_manifests(self, md: TableMetadata) -> list[ManifestFile]:
        parent = md.current_snapshot()
        if parent is None:
            return []
        cached = self.cache.get(parent.snapshot_id)
        if cached is not None:
            return list(cached)
        data = self.backend.read(key_for_uri(self.backend, parent.manifest_list))
        manifests = list(read_manifest_list(data, parent.manifest_list))
        return manifests

    def build(self, base: Loaded, attempt: int) -> tuple[TableMetadata, list[str]]:
        """The new metadata on ``base`` and the keys this attempt wrote."""
        assert self.manifest is not None
        md = base.metadata
        settings = CommitSettings.from_properties(md.properties)
        seq = md.next_sequence_number
        parent = md.current_snapshot()
        written: list[str] = []
        ours = replace(self.manifest, sequence_number=seq, min_sequence_number=seq)
        # the parent is this writer's own last commit iff its manifests are cached
        own_base = parent is None or parent.snapshot_id in self.cache
        manifests = [ours, *self.parent_manifests(md)]
        self._merged, self._merge_writes = {}, []
        if settings.merge_enabled:
            manifests, merged_keys = self.merge_tiers(manifests, ours, seq, settings, own_base)
            written.extend(merged_keys)
        list_key = (
            f"{self.paths.metadata_dir}/snap-{self.snapshot_id}-{attempt}-{uuid.uuid4()}.avro"
        )
        body = write_manifest_list(
            manifests, self.snapshot_id, parent.snapshot_id if parent else None, seq
        )
        written.append(list_key)
        try:
            self._write_all([*self._pending, *self._merge_writes, (list_key, body)])
        except BaseException:
            _delete_quietly(self.backend, written)
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
        )
        new_md = apply(
            md,
            [AddSnapshot(snapshot), SetSnapshotRef(MAIN, self.snapshot_id)],
            base_location=base.location,
            now_ms=snapshot.timestamp_ms,
        )
        self._last_manifests = manifests
        return new_md, written

    def merge_tiers(
        self,
        manifests: list[ManifestFile],
        ours: ManifestFile,
        seq: int,
        settings: CommitSettings,
        own_base: bool = True,
    ) -> tuple[list[ManifestFile], list[str]]:
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
        written: list[str] = []
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
            merged, key = self.merge(group, seq)
            if again:
                gone = {key_for_uri(self.backend, path) for path in again}
                self._merge_writes = [(k, b) for k, b in self._merge_writes if k not in gone]
                written = [k for k in written if k not in gone]
                for path in again:
                    del self._merged[path]
            written.append(key)
            manifests = [ours, merged, *(m for m in manifests if m is not ours and m not in group)]
        return manifests, written

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
            else self.entry_cache[m.manifest_path]
            for m in group
        ]

    def merge(self, group: list[ManifestFile], seq: int) -> tuple[ManifestFile, str]:
        """Rewrite ``group`` into one manifest (live entries, as EXISTING); it and its key.
        The manifest is written by :meth:`build`, with the manifest list."""
        entries = [
            replace(e, status=EXISTING)
            for manifest_entries in self._entries(group)
            for e in manifest_entries
            if e.is_live
        ]
        body = write_manifest(entries, self.schema, self.spec, self.snapshot_id)
        key = f"{self.paths.metadata_dir}/{uuid.uuid4()}-m1.avro"
        self._merge_writes.append((key, body))  # written with the manifest list
        merged = build_manifest_file(
            entries,
            manifest_path=self.backend.uri_for(key),
            manifest_length=len(body),
            spec=self.spec,
            schema=self.schema,
            added_snapshot_id=self.snapshot_id,
            sequence_number=seq,
        )
        self._merged[merged.manifest_path] = entries
        return merged, key

    def _remember_entries(self, seq: int) -> None:
        """Keep the entries of the manifests this commit wrote (and the list now names), so the
        next merge need not read them back."""
        live = {m.manifest_path for m in self._last_manifests}
        for path in [p for p in self.entry_cache if p not in live]:
            del self.entry_cache[path]
        if self.manifest is not None:
            self.entry_cache[self.manifest.manifest_path] = [
                ManifestEntry(ADDED, self.snapshot_id, seq, seq, df) for df in self.data_files
            ]
        self.entry_cache.update(self._merged)
        if sum(len(v) for v in self.entry_cache.values()) > _MAX_CACHED_ENTRIES:
            self.entry_cache.clear()

    def summary(self, parent: Snapshot | None) -> dict[str, str]:
        return snapshot_summary("append", self.data_files, (), 0, parent, self.commit_id)

    # -- the whole commit ------------------------------------------------------------------------

    def commit(
        self, tables: Sequence[pa.Table], after: Future[bool] | None = None
    ) -> tuple[Loaded, Future[bool] | bool]:
        """Stage ``tables`` and commit them as one snapshot: the new version, and the
        version-hint write (running in the background, after ``after``)."""
        staged = self.stage(tables)
        settings = CommitSettings.from_properties(self.base.metadata.properties)
        result = commit(
            self.backend,
            self.paths,
            self.base,
            self.build,
            [AssertTableUUID(self.base.metadata.table_uuid)],
            self.commit_id,
            settings,
            staged_keys=staged,
            background=shared_pool(),
            after=after,
        )
        snap = result.loaded.metadata.current_snapshot()
        if snap is not None and snap.snapshot_id == self.snapshot_id:
            self.cache.clear()  # keep only the newest: older bases mean a lost race anyway
            self.cache[self.snapshot_id] = list(self._last_manifests)
            self._remember_entries(snap.sequence_number)
        return result.loaded, result.hint


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


#: Entries a writer keeps in memory for merging, at most.
_MAX_CACHED_ENTRIES = 200_000


def _size_class(m: ManifestFile, base: int) -> int:
    files = max(1, m.added_files_count + m.existing_files_count)
    k = 0
    while files >= base:
        files //= base
        k += 1
    return k


def snapshot_summary(
    operation: str,
    added: Sequence[DataFile],
    removed: Sequence[DataFile],
    deleted_records: int,
    parent: Snapshot | None,
    commit_id: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The Iceberg snapshot summary of a commit that adds and removes whole data files.

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
    for key in ("total-delete-files", "total-position-deletes", "total-equality-deletes"):
        if parent is None or key in prev:
            out[key] = str(prev.get(key, "0"))
    return out


def _delete_quietly(backend: StorageBackend, keys: Sequence[str]) -> None:
    try:
        backend.delete_many(list(keys))
    except StorageError:
        pass


__all__ = ["AppendCommit", "snapshot_summary"]
