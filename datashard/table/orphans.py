"""Orphan cleanup: objects under the table that no kept snapshot references, older than a grace
period, deleted.

A writer's staged files are fresh, so the grace period keeps them: it must be longer than any
commit takes, and commits are bounded by the table property ``commit.max-duration-ms`` (a
shorter grace is refused). The temporary files a writer
killed mid-write left behind (``list`` never shows them) go too, with the same grace period.
Metadata versions
(``*.metadata.json``) and the version hint are never deleted: the commit of version N is the
create of ``v<N>``, and a deleted old version could be re-created by a stale writer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone

from datashard.errors import (
    ConfigError,
    CorruptMetadataError,
    ObjectNotFoundError,
    StorageError,
    ValidationError,
)
from datashard.iceberg.manifest_codec import read_manifest_list_paths
from datashard.iceberg.metadata import TableMetadata, now_ms
from datashard.storage.base import StorageBackend
from datashard.table.commit import MAX_DURATION, duration_limit_ms
from datashard.table.expire import Cutoff, cutoff_ms, referenced_files
from datashard.table.manifests import ManifestReader
from datashard.table.process import MANIFEST_CACHE, exiting
from datashard.table.updates import whole_number
from datashard.table.versions import HINT, Loaded, TablePaths, key_for_uri, load_newest

#: Default grace period of orphan cleanup: files younger than this are never deleted.
DEFAULT_ORPHAN_AGE = timedelta(days=3)


def remove_orphan_files(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    older_than: Cutoff | None = None,
    *,
    dry_run: bool = False,
    metadata_only: bool = False,
    dropped: bool = False,
    stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Delete objects under the table that no kept snapshot references and that were last
    modified before ``older_than`` (default: 3 days ago). Returns their URIs.

    The listing is taken first and the newest metadata read after it, so a file committed
    while this runs is either referenced or younger than the cutoff. That holds for a commit
    in flight only while the grace period is longer than any commit takes, so a grace period
    shorter than the table's ``commit.max-duration-ms`` (commits give up rather than land
    later than that) is refused with ``ValidationError`` before anything is deleted.

    ``metadata_only`` looks only under ``metadata/`` (manifest lists and manifests, which the
    automatic upkeep removes); with it, ``dropped`` also removes, whatever their age, the
    manifest lists of committed snapshots the metadata no longer keeps and the manifests only
    they name (see :func:`dropped_metadata`). ``stop`` is asked before each step and ends the
    work early when it says so (the upkeep stops when the process exits).
    """
    cutoff = cutoff_ms(older_than, DEFAULT_ORPHAN_AGE)
    age = older_than if older_than is not None else DEFAULT_ORPHAN_AGE
    grace = int(age.total_seconds() * 1000) if isinstance(age, timedelta) else now_ms() - cutoff
    _check_grace(backend, paths, base, grace)
    halted = stop or (lambda: False)
    if metadata_only:
        # Listings are in key order, and every manifest (uuid-named) and manifest list
        # (snap-...) sorts before the version files (v<N>...): stop there, so the listing does
        # not grow with the versions a table has had (their stubs are never deleted).
        start = paths.metadata_dir + "/"
        listed = list(
            itertools.takewhile(
                lambda m: not m.key[len(start) :].startswith("v"), backend.list(start)
            )
        )
    else:
        listed = list(backend.list(paths.prefix + "/"))
    loaded: Loaded = load_newest(backend, paths, base) or base
    _check_grace(backend, paths, loaded, grace)
    md = loaded.metadata
    reader = ManifestReader(backend)
    if metadata_only:  # the manifest lists alone name every manifest (each read once a process)
        lists = {s.manifest_list for s in md.snapshots}
        manifests = {
            path
            for s in md.snapshots
            if _ours(backend, s.manifest_list)
            for path in _list_facts(backend, key_for_uri(backend, s.manifest_list))[1]
        }
        data: set[str] = set()
    else:
        lists, manifests, data = referenced_files(reader, md.snapshots)
    if halted():
        return []
    referenced = {key_for_uri(backend, u) for u in (lists | manifests | data) if _ours(backend, u)}
    orphans: list[str] = []
    if metadata_only and dropped:
        orphans = dropped_metadata(backend, (m.key for m in listed), md, referenced)
    chosen = set(orphans)
    for meta in listed:
        key = meta.key
        name = key.rsplit("/", 1)[-1]
        if key in referenced or key in chosen or name == HINT or name.endswith(".metadata.json"):
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
            if halted():
                return [backend.uri_for(k) for k in orphans[:i]]
            backend.delete_many(orphans[i : i + 1000])
    if metadata_only:
        return [backend.uri_for(k) for k in orphans]
    # what writers killed mid-write left behind (a local writer's temp files), never listed
    abandoned = backend.remove_abandoned(
        paths.prefix + "/", datetime.fromtimestamp(cutoff / 1000, timezone.utc), dry_run=dry_run
    )
    return [backend.uri_for(k) for k in orphans] + abandoned


#: Manifest lists one upkeep reads while following dropped snapshots back; the older ones it
#: does not reach are left to the grace period (a table that ran long without the upkeep).
DROPPED_WALK_LIMIT = 1_000

_LIST_NAME = re.compile(r"snap-(-?\d+)-.*\.avro$")


def dropped_metadata(
    backend: StorageBackend, listed: Iterable[str], md: TableMetadata, referenced: set[str]
) -> list[str]:
    """The keys, among ``listed``, of the manifest lists of committed snapshots that ``md`` no
    longer keeps, and of the manifests only such lists name: manifests first, then the lists
    oldest first (deleted in that order, what a crash leaves is still reached next time).

    Committed snapshots are found without trusting file ages: the parent of a kept snapshot
    that is not kept was committed, and so was the parent each of its manifest lists records
    (the current snapshot of the version an attempt built on). A snapshot's lists are named
    ``snap-<id>-...``; every list of a committed id can go, a lost attempt's too, since its
    writer finished with that commit. A manifest they name that no kept snapshot names is no
    longer referenced by any version from ``md`` on: a commit only names its base's manifests
    and its own new ones. A writer's files in flight are never named by such a list, so only
    the grace period removes them. ``referenced`` holds the keys the kept snapshots name."""
    kept = {s.snapshot_id for s in md.snapshots}
    lists_of: dict[int, list[str]] = {}
    for key in listed:
        found = _LIST_NAME.fullmatch(key.rsplit("/", 1)[-1])
        if found is not None and key not in referenced:
            lists_of.setdefault(int(found.group(1)), []).append(key)
    todo = [
        s.parent_snapshot_id
        for s in md.snapshots
        if s.parent_snapshot_id is not None and s.parent_snapshot_id not in kept
    ]
    seen: set[int] = set()
    lists: list[str] = []  # newest first, as walked
    named: dict[str, None] = {}  # manifest URIs the dropped lists name, in order
    while todo and len(lists) < DROPPED_WALK_LIMIT:
        snapshot_id = todo.pop()
        if snapshot_id in seen or snapshot_id in kept:
            continue
        seen.add(snapshot_id)
        for key in lists_of.get(snapshot_id, ()):
            try:
                parent, paths = _list_facts(backend, key)
            except (ObjectNotFoundError, CorruptMetadataError):
                continue  # gone meanwhile, or not ours to judge: the grace period decides
            lists.append(key)
            named.update(dict.fromkeys(paths))
            if parent is not None:
                todo.append(int(parent))
    manifests = [key_for_uri(backend, u) for u in named if _ours(backend, u)]
    return [*(k for k in manifests if k not in referenced), *reversed(lists)]


def _list_facts(backend: StorageBackend, key: str) -> tuple[str | None, list[str]]:
    """The parent snapshot id and manifest paths of the manifest list at ``key``: from this
    process's cache (a list never changes, and each sweep meets the lists it drops as kept
    ones first), else read."""
    uri = backend.uri_for(key)
    cached = MANIFEST_CACHE.get(("list facts", uri))
    if cached is not None:
        return cached[0], cached[1:]
    parent, paths = read_manifest_list_paths(backend.read(key), uri)
    MANIFEST_CACHE.put(("list facts", uri), [parent, *paths])
    return parent, paths


#: The automatic upkeep: every :data:`~datashard.table.versions.SWEEP_EVERY` versions, the
#: writer that made the version removes, in the background, the manifest lists and manifests of
#: committed snapshots no longer kept (:func:`dropped_metadata`), and any other manifest list or
#: manifest no kept snapshot references that is older than the grace period (on unless disabled).
UPKEEP = "write.upkeep.remove-orphans.enabled"
UPKEEP_AGE = ("write.upkeep.remove-orphans.older-than-ms", 259_200_000)


def upkeep_grace_ms(props: Mapping[str, str]) -> int | None:
    """The grace period of the automatic upkeep in ms, ``None`` when it is off;
    ``ConfigError`` naming a malformed property, or a grace shorter than
    ``commit.max-duration-ms``."""
    raw = str(props.get(UPKEEP, "true")).strip().lower()
    if raw not in ("true", "false"):
        raise ConfigError(
            f"table property {UPKEEP}={props.get(UPKEEP)!r}: expected 'true' or 'false'"
        )
    grace = whole_number(props, *UPKEEP_AGE, 1)
    bound = duration_limit_ms(props)
    if grace < bound:
        raise ConfigError(
            f"table property {UPKEEP_AGE[0]}={grace} is shorter than {MAX_DURATION[0]}={bound}: "
            "the upkeep could delete the files of a commit in flight; raise it or lower "
            f"{MAX_DURATION[0]}"
        )
    return grace if raw == "true" else None


def upkeep(backend: StorageBackend, paths: TablePaths, loaded: Loaded, grace_ms: int) -> None:
    """The automatic upkeep after the commit of ``loaded``: advisory, so storage errors and
    the process exiting end it quietly."""
    try:
        remove_orphan_files(
            backend,
            paths,
            loaded,
            timedelta(milliseconds=grace_ms),
            metadata_only=True,
            dropped=True,
            stop=exiting,
        )
    except (StorageError, CorruptMetadataError, ValidationError):
        pass  # the next sweep tries again


def _check_grace(backend: StorageBackend, paths: TablePaths, at: Loaded, grace_ms: int) -> None:
    """``ValidationError`` when ``grace_ms`` is shorter than the longest commit of the table
    at version ``at`` (its ``commit.max-duration-ms``)."""
    bound = duration_limit_ms(at.metadata.properties)
    if grace_ms < bound:
        raise ValidationError(
            f"remove_orphan_files: older_than gives a grace period of {grace_ms / 1000:.3f} s, "
            f"shorter than {MAX_DURATION[0]}={bound} ({bound / 1000:.3f} s) of table "
            f"{backend.uri_for(paths.prefix)}: a commit in flight may have written its files "
            "that long ago, and deleting them would break it once it lands. Pass an older "
            f"cutoff, or lower {MAX_DURATION[0]} on the table first (commits taking longer "
            "then fail with CommitTimeoutError); nothing was deleted"
        )


def _ours(backend: StorageBackend, uri: str) -> bool:
    try:
        key_for_uri(backend, uri)
    except StorageError:
        return False
    return True


__all__ = [
    "DEFAULT_ORPHAN_AGE",
    "DROPPED_WALK_LIMIT",
    "UPKEEP",
    "UPKEEP_AGE",
    "dropped_metadata",
    "remove_orphan_files",
    "upkeep",
    "upkeep_grace_ms",
]
