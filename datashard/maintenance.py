"""Keeping a long-lived table small and fast: compaction, snapshot expiry, orphan cleanup.

- :func:`compact` rewrites many small data files into few, partition by partition, as one
  ``replace`` snapshot. It removes exactly the files it read: a concurrent append commits
  (before or after it) and keeps its rows; a concurrent commit that removed one of those files
  (a delete, another compaction) makes it fail with ``CommitConflictError``.
- :func:`expire_snapshots` drops old snapshots from the metadata (a commit), then deletes the
  manifest lists, manifests and data files only they referenced.
- :func:`remove_orphan_files` deletes objects under the table that no snapshot references and
  that are older than a grace period (a writer's staged files are fresh, so never touched).
  Metadata versions (``*.metadata.json``) and the version hint are never deleted: the commit of
  version N is the create of ``v<N>``, and a deleted old version could be re-created by a stale
  writer.

Each has ``dry_run=True`` to list what it would do without doing it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from datashard.commit import Loaded
from datashard.datafile import write_parquet
from datashard.errors import StorageError, ValidationError
from datashard.layout import HINT, TablePaths, key_for_uri
from datashard.manifest import ManifestEntry
from datashard.metadata import Snapshot, TableMetadata, now_ms
from datashard.partitioning import split_by_partition
from datashard.rewrite import FileRewrite, ManifestReader
from datashard.scan import read_parquet_by_id
from datashard.storage.base import StorageBackend
from datashard.table_updates import commit_change

#: Default target size of a compacted data file (Iceberg's write.target-file-size-bytes).
DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
#: Default age before a snapshot may be expired (Iceberg: history.expire.max-snapshot-age-ms).
DEFAULT_SNAPSHOT_AGE = timedelta(days=5)
#: Default grace period of orphan cleanup: files younger than this are never deleted.
DEFAULT_ORPHAN_AGE = timedelta(days=3)


def _cutoff_ms(older_than: datetime | timedelta | int | float | None, default: timedelta) -> int:
    """Epoch ms of a cutoff given as a datetime, an age (timedelta) or epoch ms."""
    if older_than is None:
        older_than = default
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValidationError(f"older_than must not be negative, got {older_than}")
        return now_ms() - int(older_than.total_seconds() * 1000)
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=timezone.utc)
        return int(older_than.timestamp() * 1000)
    if isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        return int(older_than)
    raise ValidationError(
        "older_than must be a datetime, a timedelta (an age) or epoch milliseconds, got "
        f"{type(older_than).__name__}: {older_than!r}"
    )


# --------------------------------------------------------------------------------------------
# compaction


@dataclass(frozen=True)
class CompactResult:
    """What :func:`compact` did (or would do, for a dry run)."""

    rewritten_files: int
    added_files: int
    rewritten_rows: int
    snapshot_id: int | None


def compact(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE,
    *,
    min_input_files: int = 2,
    dry_run: bool = False,
) -> tuple[Loaded | None, CompactResult]:
    """Rewrite the small files (under 3/4 of ``target_file_size``) of each partition into
    files of about ``target_file_size`` bytes; one ``replace`` snapshot."""
    if (
        isinstance(target_file_size, bool)
        or not isinstance(target_file_size, int)
        or (target_file_size <= 0)
    ):
        raise ValidationError(
            f"target_file_size must be a positive number of bytes, got {target_file_size!r}"
        )
    md = base.metadata
    reader = ManifestReader(backend)
    groups: dict[tuple[int, tuple[Any, ...]], list[ManifestEntry]] = {}
    small = target_file_size * 3 // 4
    for m, e in reader.live_files(md.current_snapshot()):
        df = e.data_file
        if df.file_size_in_bytes >= small and m.partition_spec_id == md.default_spec_id:
            continue
        key = (m.partition_spec_id, tuple(sorted((k, repr(v)) for k, v in df.partition.items())))
        groups.setdefault(key, []).append(e)
    chosen = [g for g in groups.values() if len(g) >= min_input_files]
    n_files = sum(len(g) for g in chosen)
    n_rows = sum(e.data_file.record_count for g in chosen for e in g)
    if dry_run or not chosen:
        return None, CompactResult(n_files, 0, n_rows, None)
    rewrite = FileRewrite(
        backend,
        paths,
        base,
        "replace",
        reader=reader,
        extra_summary={"datashard.compaction": "true"},
    )
    schema = md.current_schema()
    fields = list(schema.fields)

    def read(e: ManifestEntry) -> pa.Table:
        uri = e.data_file.file_path
        return read_parquet_by_id(backend.read(key_for_uri(backend, uri)), uri, fields)

    try:
        for group in chosen:
            group.sort(key=lambda e: e.sequence_number or 0)
            for chunk in _bins(group, target_file_size):  # bounds memory to about a target
                with ThreadPoolExecutor(min(8, len(chunk))) as pool:
                    tables = list(pool.map(read, chunk))
                for e in chunk:
                    rewrite.removed[e.data_file.file_path] = e.data_file
                _write_sized(rewrite, pa.concat_tables(tables), target_file_size)
    except BaseException:
        rewrite.discard()
        raise
    loaded = rewrite.commit(check_added=False)
    return loaded, CompactResult(n_files, len(rewrite.added), n_rows, rewrite.snapshot_id)


def _bins(entries: list[ManifestEntry], target: int) -> list[list[ManifestEntry]]:
    """Consecutive runs of ``entries`` whose input bytes add up to about ``target``."""
    out: list[list[ManifestEntry]] = [[]]
    size = 0
    for e in entries:
        if out[-1] and size + e.data_file.file_size_in_bytes > target:
            out.append([])
            size = 0
        out[-1].append(e)
        size += e.data_file.file_size_in_bytes
    return out


def _write_sized(rewrite: FileRewrite, table: pa.Table, target: int) -> None:
    """Write ``table`` as files of about ``target`` bytes each (per partition)."""
    for partition, part in split_by_partition(table, rewrite.spec, rewrite.schema):
        data, stats = write_parquet(part, rewrite.schema)
        pieces = max(1, -(-len(data) // target))
        if pieces == 1:
            chunks = [(data, stats)]
        else:
            step = -(-part.num_rows // pieces)
            chunks = [
                write_parquet(part.slice(i, step), rewrite.schema)
                for i in range(0, part.num_rows, step)
            ]
        for body, st in chunks:
            key = f"{rewrite.paths.data_dir}/{uuid.uuid4()}.parquet"
            rewrite._staged.append(key)
            rewrite.backend.write(key, body)
            rewrite.added.append(
                st.to_data_file(rewrite.backend.uri_for(key), len(body), partition)
            )


# --------------------------------------------------------------------------------------------
# reachability


def referenced_files(
    reader: ManifestReader, snapshots: Iterable[Snapshot]
) -> tuple[set[str], set[str], set[str]]:
    """(manifest lists, manifests, data files) the snapshots reference, as URIs.

    Data files are every file an entry names (live or deleted), to stay conservative.
    """
    lists: set[str] = set()
    manifests: set[str] = set()
    data: set[str] = set()
    seen: set[str] = set()
    for snap in snapshots:
        lists.add(snap.manifest_list)
        for m in reader.manifests(snap):
            manifests.add(m.manifest_path)
            if m.manifest_path in seen:
                continue
            seen.add(m.manifest_path)
            data.update(e.data_file.file_path for e in reader.entries(m))
    return lists, manifests, data


def _live_data(reader: ManifestReader, snapshots: Iterable[Snapshot]) -> set[str]:
    out: set[str] = set()
    for snap in snapshots:
        for m in reader.manifests(snap):
            out.update(e.data_file.file_path for e in reader.entries(m) if e.is_live)
    return out


# --------------------------------------------------------------------------------------------
# snapshot expiry


@dataclass(frozen=True)
class ExpireResult:
    """Snapshots expired and the files deleted (or that would be, for a dry run)."""

    expired_snapshot_ids: tuple[int, ...]
    deleted_files: tuple[str, ...]


def snapshots_to_expire(md: TableMetadata, cutoff_ms: int, retain_last: int) -> list[Snapshot]:
    """Snapshots older than ``cutoff_ms``, except the newest ``retain_last`` ancestors of the
    current snapshot and every snapshot a branch or tag names."""
    keep = {ref.snapshot_id for ref in md.refs.values()}
    if md.current_snapshot_id is not None:
        keep.add(md.current_snapshot_id)
    for i, snap in enumerate(md.ancestors()):
        if i >= retain_last:
            break
        keep.add(snap.snapshot_id)
    return [s for s in md.snapshots if s.snapshot_id not in keep and s.timestamp_ms < cutoff_ms]


def expire_snapshots(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    older_than: datetime | timedelta | int | float | None = None,
    retain_last: int = 1,
    *,
    dry_run: bool = False,
) -> tuple[Loaded | None, ExpireResult]:
    """Expire snapshots older than ``older_than`` (default: 5 days old), keeping at least
    ``retain_last`` (>= 1) ancestors of the current snapshot; delete files only they used."""
    if isinstance(retain_last, bool) or not isinstance(retain_last, int) or retain_last < 1:
        raise ValidationError(f"retain_last must be an int >= 1, got {retain_last!r}")
    cutoff = _cutoff_ms(older_than, DEFAULT_SNAPSHOT_AGE)
    md = base.metadata
    doomed = snapshots_to_expire(md, cutoff, retain_last)
    if not doomed:
        return None, ExpireResult((), ())
    reader = ManifestReader(backend)
    loaded: Loaded | None = None
    if not dry_run:
        landed: list[Snapshot] = []

        def change(m: TableMetadata) -> TableMetadata:
            found = snapshots_to_expire(m, cutoff, retain_last)
            landed[:] = found  # the last attempt's set is the one that commits
            expire = {s.snapshot_id for s in found}
            return replace(
                m,
                snapshots=tuple(s for s in m.snapshots if s.snapshot_id not in expire),
                snapshot_log=tuple(e for e in m.snapshot_log if e.snapshot_id not in expire),
            )

        loaded = commit_change(backend, paths, base, change)
        md = loaded.metadata
        kept_ids = {s.snapshot_id for s in md.snapshots}
        doomed = [s for s in landed if s.snapshot_id not in kept_ids]
    kept = [s for s in md.snapshots if s.snapshot_id not in {d.snapshot_id for d in doomed}]
    lists, manifests, _ = referenced_files(reader, kept)
    data = _live_data(reader, kept)  # a DELETED entry does not keep a file
    old_lists, old_manifests, _ = referenced_files(reader, doomed)
    old_data = _live_data(reader, doomed)
    victims = sorted((old_lists - lists) | (old_manifests - manifests) | (old_data - data))
    if not dry_run and victims:
        _delete(backend, victims)
    return loaded, ExpireResult(tuple(s.snapshot_id for s in doomed), tuple(victims))


def _delete(backend: StorageBackend, uris: Sequence[str]) -> None:
    keys = []
    for uri in uris:
        try:
            keys.append(key_for_uri(backend, uri))
        except StorageError:
            continue  # outside this backend's root: not ours to delete
    for i in range(0, len(keys), 1000):
        backend.delete_many(keys[i : i + 1000])


# --------------------------------------------------------------------------------------------
# orphan files


def remove_orphan_files(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    load_newest: Any,
    older_than: datetime | timedelta | int | float | None = None,
    *,
    dry_run: bool = False,
) -> list[str]:
    """Delete objects under the table that no kept snapshot references and that were last
    modified before ``older_than`` (default: 3 days ago). Returns their URIs.

    The listing is taken first and the newest metadata read after it, so a file committed
    while this runs is either referenced or younger than the cutoff.
    """
    cutoff = _cutoff_ms(older_than, DEFAULT_ORPHAN_AGE)
    listed = list(backend.list(paths.prefix + "/"))
    loaded: Loaded = load_newest() or base
    md = loaded.metadata
    reader = ManifestReader(backend)
    lists, manifests, data = referenced_files(reader, md.snapshots)
    referenced = {key_for_uri(backend, u) for u in (lists | manifests | data) if _ours(backend, u)}
    orphans: list[str] = []
    for meta in listed:
        key = meta.key
        name = key.rsplit("/", 1)[-1]
        if key in referenced or name == HINT or name.endswith(".metadata.json"):
            continue
        if key.startswith(paths.metadata_dir + "/") and name.startswith("."):
            continue  # a backend's temporary file of a put in flight
        modified = meta.last_modified
        if modified is None:
            continue  # unknown age: never delete
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=timezone.utc)
        if modified.timestamp() * 1000 >= cutoff:
            continue
        orphans.append(key)
    if not dry_run and orphans:
        for i in range(0, len(orphans), 1000):
            backend.delete_many(orphans[i : i + 1000])
    return [backend.uri_for(k) for k in orphans]


def _ours(backend: StorageBackend, uri: str) -> bool:
    try:
        key_for_uri(backend, uri)
    except StorageError:
        return False
    return True


__all__ = [
    "DEFAULT_ORPHAN_AGE",
    "DEFAULT_SNAPSHOT_AGE",
    "DEFAULT_TARGET_FILE_SIZE",
    "CompactResult",
    "ExpireResult",
    "compact",
    "expire_snapshots",
    "referenced_files",
    "remove_orphan_files",
    "snapshots_to_expire",
]
