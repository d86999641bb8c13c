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

from datetime import datetime, timedelta, timezone

from datashard.errors import StorageError, ValidationError
from datashard.iceberg.metadata import now_ms
from datashard.storage.base import StorageBackend
from datashard.table.commit import MAX_DURATION, duration_limit_ms
from datashard.table.expire import Cutoff, cutoff_ms, referenced_files
from datashard.table.manifests import ManifestReader
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
) -> list[str]:
    """Delete objects under the table that no kept snapshot references and that were last
    modified before ``older_than`` (default: 3 days ago). Returns their URIs.

    The listing is taken first and the newest metadata read after it, so a file committed
    while this runs is either referenced or younger than the cutoff. That holds for a commit
    in flight only while the grace period is longer than any commit takes, so a grace period
    shorter than the table's ``commit.max-duration-ms`` (commits give up rather than land
    later than that) is refused with ``ValidationError`` before anything is deleted.
    """
    cutoff = cutoff_ms(older_than, DEFAULT_ORPHAN_AGE)
    age = older_than if older_than is not None else DEFAULT_ORPHAN_AGE
    grace = int(age.total_seconds() * 1000) if isinstance(age, timedelta) else now_ms() - cutoff
    _check_grace(backend, paths, base, grace)
    listed = list(backend.list(paths.prefix + "/"))
    loaded: Loaded = load_newest(backend, paths, base) or base
    _check_grace(backend, paths, loaded, grace)
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
    # what writers killed mid-write left behind (a local writer's temp files), never listed
    abandoned = backend.remove_abandoned(
        paths.prefix + "/", datetime.fromtimestamp(cutoff / 1000, timezone.utc), dry_run=dry_run
    )
    return [backend.uri_for(k) for k in orphans] + abandoned


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


__all__ = ["DEFAULT_ORPHAN_AGE", "remove_orphan_files"]
