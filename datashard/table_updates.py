"""Commits that change table metadata without adding a snapshot.

Schema evolution, partition spec evolution, ``rollback_to`` / ``set_current``, tags and branches,
and ``expire_snapshots`` change only ``v<N+1>.metadata.json``. They go through the same retry
loop as appends (:func:`datashard.commit.commit`): the conditional create of the next version is
the commit point, a lost race reloads, re-checks the requirements and re-applies the change on
the newer base.

A change is a pure function of the base metadata. The commit id is recorded in the property
``datashard.commit-id`` so that an unknown outcome can be resolved by reading what landed (the
snapshot summary carries it for snapshot commits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from datashard.commit import (
    COMMIT_ID,
    AssertTableUUID,
    CommitSettings,
    Loaded,
    Requirement,
    apply,
    commit,
    new_commit_id,
)
from datashard.errors import CommitConflictError
from datashard.layout import TablePaths
from datashard.metadata import TableMetadata, now_ms
from datashard.storage.base import StorageBackend

#: A pure change: the new metadata made from a base (raise CommitConflictError to refuse).
Change = Callable[[TableMetadata], TableMetadata]


@dataclass(frozen=True)
class AssertDefaultSpecId:
    """The default partition spec is still the one the change was built against."""

    spec_id: int

    def validate(self, base: TableMetadata) -> None:
        if base.default_spec_id != self.spec_id:
            raise CommitConflictError(
                f"the partition spec of {base.location} changed to {base.default_spec_id} since "
                f"this commit read spec {self.spec_id}"
            )


@dataclass(frozen=True)
class AssertLastColumnId:
    """No column was added by someone else since the change was built (ids would clash)."""

    last_column_id: int

    def validate(self, base: TableMetadata) -> None:
        if base.last_column_id != self.last_column_id:
            raise CommitConflictError(
                f"columns were added to {base.location} (last column id {base.last_column_id}, "
                f"this change was built on {self.last_column_id})"
            )


def commit_change(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    change: Change,
    requirements: Sequence[Requirement] = (),
) -> Loaded:
    """Commit ``change`` on ``base`` (retrying lost races on newer bases); the new version.

    Raises ``CommitConflictError`` when a requirement fails on the newest base, and the errors
    of :func:`datashard.commit.commit`. ``change`` itself may raise (for example
    ``SchemaError``) before anything is written.
    """
    commit_id = new_commit_id()
    # check the change once on the given base: bad input fails before any request
    change(base.metadata)

    def build(loaded: Loaded, attempt: int) -> tuple[TableMetadata, list[str]]:
        md = change(loaded.metadata)
        md = replace(md, properties={**md.properties, COMMIT_ID: commit_id})
        new_md = apply(md, [], base_location=loaded.location, now_ms=now_ms())
        return new_md, []

    settings = CommitSettings.from_properties(base.metadata.properties)
    result = commit(
        backend,
        paths,
        base,
        build,
        [AssertTableUUID(base.metadata.table_uuid), *requirements],
        commit_id,
        settings,
    )
    return result.loaded


__all__ = ["AssertDefaultSpecId", "AssertLastColumnId", "Change", "commit_change"]
