"""Rollback and named refs: which snapshot ``main`` points at, and tags and branches.

``rollback_to(id)`` makes an ancestor of the current snapshot current again; ``set_current(id)``
makes any snapshot the table keeps current (for example one a rollback left behind). Both are
commits without a snapshot that require ``main`` not to have moved since the table was loaded
(``CommitConflictError`` otherwise) and append a snapshot-log entry with the time of the change,
so time travel ``as_of`` a time after the rollback reads the snapshot rolled back to. No file is
written or deleted.

Tags and branches are entries of the metadata's ``refs``; a snapshot a ref names is never
expired.
"""

from __future__ import annotations

from collections.abc import Sequence

from datashard.errors import ValidationError
from datashard.iceberg.metadata import RefType, TableMetadata
from datashard.storage.base import StorageBackend
from datashard.table.commit import commit_updates
from datashard.table.updates import (
    MAIN,
    AssertRefSnapshotId,
    RemoveSnapshotRef,
    SetSnapshotRef,
    Update,
)
from datashard.table.versions import Loaded, TablePaths


def set_current_updates(
    md: TableMetadata, snapshot_id: int, *, ancestor_only: bool
) -> Sequence[Update]:
    """The updates that make ``snapshot_id`` the current snapshot of ``main``;
    ``ValidationError`` for a snapshot the table does not keep (or, with ``ancestor_only``, one
    that is not an ancestor of the current snapshot)."""
    if md.snapshot_by_id(snapshot_id) is None:
        raise ValidationError(
            f"no snapshot {snapshot_id} in table {md.location}; known: "
            f"{[s.snapshot_id for s in md.snapshots][-10:]}"
        )
    if ancestor_only and snapshot_id not in {s.snapshot_id for s in md.ancestors()}:
        raise ValidationError(
            f"snapshot {snapshot_id} is not an ancestor of the current snapshot "
            f"{md.current_snapshot_id} of {md.location}; use set_current to jump to it"
        )
    return [SetSnapshotRef(MAIN, snapshot_id)]


def set_current(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    snapshot_id: int,
    *,
    ancestor_only: bool,
) -> Loaded:
    """Make ``snapshot_id`` current (see :func:`set_current_updates`); the new version."""
    return commit_updates(
        backend,
        paths,
        base,
        lambda md: set_current_updates(md, snapshot_id, ancestor_only=ancestor_only),
        [AssertRefSnapshotId(MAIN, base.metadata.current_snapshot_id)],
    )


def check_ref_name(name: object) -> str:
    """``name`` if it may name a tag or branch, else ``ValidationError``."""
    if not isinstance(name, str) or not name or name == MAIN:
        raise ValidationError(
            f"a tag or branch name is a non-empty string other than 'main', got {name!r}"
        )
    return name


def add_ref_updates(
    md: TableMetadata, name: str, snapshot_id: int, kind: RefType
) -> Sequence[Update]:
    """The updates that add ref ``name`` (a tag or branch) at ``snapshot_id``;
    ``ValidationError`` when the snapshot is not kept or the name is taken."""
    if md.snapshot_by_id(snapshot_id) is None:
        raise ValidationError(f"no snapshot {snapshot_id} in {md.location} for {name!r}")
    if name in md.refs:
        raise ValidationError(f"table {md.location} already has a ref named {name!r}")
    return [SetSnapshotRef(name, snapshot_id, kind)]


def add_ref(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    name: str,
    snapshot_id: int | None,
    kind: RefType,
) -> Loaded:
    """Add tag or branch ``name`` at ``snapshot_id`` (default: the current snapshot)."""
    check_ref_name(name)
    if kind not in ("tag", "branch"):
        raise ValidationError(f"a ref is a 'tag' or a 'branch', got {kind!r}")
    md = base.metadata
    sid = md.current_snapshot_id if snapshot_id is None else snapshot_id
    if sid is None:
        raise ValidationError(f"table {md.location} has no snapshot to name {name!r}")
    return commit_updates(backend, paths, base, lambda m: add_ref_updates(m, name, sid, kind))


def remove_ref(backend: StorageBackend, paths: TablePaths, base: Loaded, name: str) -> Loaded:
    """Remove tag or branch ``name`` (not ``main``); ``ValidationError`` if there is none."""
    check_ref_name(name)
    return commit_updates(backend, paths, base, lambda m: [RemoveSnapshotRef(name)])


__all__ = [
    "add_ref",
    "add_ref_updates",
    "check_ref_name",
    "remove_ref",
    "set_current",
    "set_current_updates",
]
