"""Rollback and named refs: which snapshot ``main`` points at, and tags and branches.

``rollback_to(id)`` makes an ancestor of the current snapshot current again; ``set_current(id)``
makes any snapshot the table keeps current (for example one a rollback left behind). Both are
metadata-only commits (:mod:`datashard.table_updates`) that require ``main`` not to have moved
since the table was loaded (``CommitConflictError`` otherwise) and append a snapshot-log entry
with the time of the change, so time travel ``as_of`` a time after the rollback reads the
snapshot rolled back to. No file is written or deleted.

Tags and branches are entries of the metadata's ``refs``; a snapshot a ref names is never
expired.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from datashard.errors import ValidationError
from datashard.metadata import SnapshotLogEntry, SnapshotRef, TableMetadata, now_ms
from datashard.table_updates import Change


def set_current_change(snapshot_id: int, *, ancestor_only: bool) -> Change:
    """The change that makes ``snapshot_id`` the current snapshot of ``main``."""

    def change(md: TableMetadata) -> TableMetadata:
        target = md.snapshot_by_id(snapshot_id)
        if target is None:
            raise ValidationError(
                f"no snapshot {snapshot_id} in table {md.location}; known: "
                f"{[s.snapshot_id for s in md.snapshots][-10:]}"
            )
        if ancestor_only and snapshot_id not in {s.snapshot_id for s in md.ancestors()}:
            raise ValidationError(
                f"snapshot {snapshot_id} is not an ancestor of the current snapshot "
                f"{md.current_snapshot_id} of {md.location}; use set_current to jump to it"
            )
        refs = dict(md.refs)
        old = refs.get("main")
        refs["main"] = (
            replace(old, snapshot_id=snapshot_id)
            if old is not None
            else SnapshotRef(snapshot_id, "branch")
        )
        return replace(
            md,
            refs=refs,
            current_snapshot_id=snapshot_id,
            snapshot_log=(
                *md.snapshot_log,
                SnapshotLogEntry(max(now_ms(), md.last_updated_ms), snapshot_id),
            ),
        )

    return change


def check_ref_name(name: object) -> str:
    """``name`` if it may name a tag or branch, else ``ValidationError``."""
    if not isinstance(name, str) or not name or name == "main":
        raise ValidationError(
            f"a tag or branch name is a non-empty string other than 'main', got {name!r}"
        )
    return name


def set_ref_change(name: str, snapshot_id: int, kind: Any) -> Change:
    """The change that adds ref ``name`` (a ``"tag"`` or ``"branch"``) at ``snapshot_id``."""

    def change(md: TableMetadata) -> TableMetadata:
        if md.snapshot_by_id(snapshot_id) is None:
            raise ValidationError(f"no snapshot {snapshot_id} in {md.location} for {name!r}")
        if name in md.refs:
            raise ValidationError(f"table {md.location} already has a ref named {name!r}")
        return replace(md, refs={**md.refs, name: SnapshotRef(snapshot_id, kind)})

    return change


def remove_ref_change(name: str) -> Change:
    """The change that removes ref ``name``."""

    def change(md: TableMetadata) -> TableMetadata:
        if name not in md.refs:
            raise ValidationError(f"table {md.location} has no ref {name!r}")
        return replace(md, refs={k: v for k, v in md.refs.items() if k != name})

    return change


__all__ = ["check_ref_name", "remove_ref_change", "set_current_change", "set_ref_change"]
