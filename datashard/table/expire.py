"""Snapshot expiry: old snapshots dropped from the metadata (a commit), then the manifest lists,
manifests and data files only they used deleted.

Files are deleted only after the commit that drops their snapshots landed, and only those that
no kept snapshot references, so a reader of a kept snapshot never meets a missing file. A
writer whose base named an expired snapshot finds a file gone, and its commit loop rebuilds on
the newest version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from datashard.errors import StorageError, ValidationError
from datashard.iceberg.metadata import Snapshot, TableMetadata, epoch_ms, now_ms
from datashard.storage.base import StorageBackend
from datashard.table.commit import commit_updates
from datashard.table.manifests import ManifestReader
from datashard.table.updates import RemoveSnapshots, Update, whole_number
from datashard.table.versions import Loaded, TablePaths, key_for_uri

#: Default age before a snapshot may be expired (Iceberg: history.expire.max-snapshot-age-ms).
DEFAULT_SNAPSHOT_AGE = timedelta(days=5)
#: The table properties of the expiry policy (Iceberg's names) and their defaults.
MAX_SNAPSHOT_AGE = ("history.expire.max-snapshot-age-ms", 432_000_000)
MIN_SNAPSHOTS_TO_KEEP = ("history.expire.min-snapshots-to-keep", 1)


def policy(props: Mapping[str, str]) -> tuple[timedelta, int]:
    """The table's expiry policy: the age after which a snapshot may be expired and how many
    ancestors of the current snapshot are kept whatever their age (``ConfigError`` naming a
    malformed property)."""
    age = whole_number(props, *MAX_SNAPSHOT_AGE, 0)
    return timedelta(milliseconds=age), whole_number(props, *MIN_SNAPSHOTS_TO_KEEP, 1)


#: A cutoff: an age (timedelta) or a point in time (datetime).
Cutoff = datetime | timedelta


def cutoff_ms(older_than: Cutoff | None, default: timedelta) -> int:
    """Epoch ms of a cutoff given as an age (timedelta) or a datetime (naive means UTC);
    ``ValidationError`` naming the value otherwise. A number is refused: ``older_than=0`` read
    as epoch milliseconds would mean 1970 and silently do nothing."""
    if older_than is None:
        older_than = default
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValidationError(f"older_than must not be negative, got {older_than}")
        return now_ms() - int(older_than.total_seconds() * 1000)
    if isinstance(older_than, datetime):
        return epoch_ms(older_than, "older_than")
    raise ValidationError(
        "older_than must be a timedelta (an age, e.g. timedelta(days=3); timedelta(0) means "
        "everything up to now) or a datetime, got "
        f"{type(older_than).__name__}: {older_than!r}"
    )


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


@dataclass(frozen=True)
class ExpireResult:
    """Snapshots expired and the files deleted (or that would be, for a dry run)."""

    expired_snapshot_ids: tuple[int, ...]
    deleted_files: tuple[str, ...]


def snapshots_to_expire(md: TableMetadata, cutoff: int, retain_last: int) -> list[Snapshot]:
    """Snapshots older than ``cutoff`` (epoch ms), except the newest ``retain_last`` ancestors
    of the current snapshot and every snapshot a branch or tag names."""
    keep = {ref.snapshot_id for ref in md.refs.values()}
    if md.current_snapshot_id is not None:
        keep.add(md.current_snapshot_id)
    for i, snap in enumerate(md.ancestors()):
        if i >= retain_last:
            break
        keep.add(snap.snapshot_id)
    return [s for s in md.snapshots if s.snapshot_id not in keep and s.timestamp_ms < cutoff]


def expire_snapshots(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    older_than: Cutoff | None = None,
    retain_last: int | None = None,
    *,
    dry_run: bool = False,
) -> tuple[Loaded | None, ExpireResult]:
    """Expire snapshots older than ``older_than``, keeping at least ``retain_last`` (>= 1)
    ancestors of the current snapshot; delete files only they used. Either left out comes
    from the table's policy (:func:`policy`: 5 days and 1 unless the properties say else)."""
    age, keep = policy(base.metadata.properties)
    if retain_last is None:
        retain_last = keep
    if isinstance(retain_last, bool) or not isinstance(retain_last, int) or retain_last < 1:
        raise ValidationError(f"retain_last must be an int >= 1, got {retain_last!r}")
    cutoff = cutoff_ms(older_than, age)
    md = base.metadata
    doomed = snapshots_to_expire(md, cutoff, retain_last)
    if not doomed:
        return None, ExpireResult((), ())
    reader = ManifestReader(backend)
    loaded: Loaded | None = None
    if not dry_run:
        landed: list[Snapshot] = []

        def make(m: TableMetadata) -> Sequence[Update]:
            found = snapshots_to_expire(m, cutoff, retain_last)
            landed[:] = found  # the last attempt's set is the one that commits
            return [RemoveSnapshots(frozenset(s.snapshot_id for s in found))]

        loaded = commit_updates(backend, paths, base, make)
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


__all__ = [
    "DEFAULT_SNAPSHOT_AGE",
    "MAX_SNAPSHOT_AGE",
    "MIN_SNAPSHOTS_TO_KEEP",
    "Cutoff",
    "ExpireResult",
    "cutoff_ms",
    "expire_snapshots",
    "policy",
    "referenced_files",
    "snapshots_to_expire",
]
