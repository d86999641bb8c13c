"""Schema and partition-spec evolution as commits without a snapshot.

A schema change (:class:`~datashard.iceberg.schema_update.SchemaUpdate`) becomes
``AddSchema`` + ``SetCurrentSchema``; a partition spec change ``AddPartitionSpec`` +
``SetDefaultSpec``. Both are rebuilt on the base of each attempt and require that nobody changed
the same thing since this one was built: the schema (and the last column id, so ids never clash)
or the default spec. No data file is written or rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from datashard.iceberg.metadata import TableMetadata
from datashard.iceberg.partitioning import SpecLike, evolve_spec
from datashard.iceberg.schema_update import SchemaUpdate
from datashard.storage.base import StorageBackend
from datashard.table.commit import commit_updates
from datashard.table.updates import (
    AddPartitionSpec,
    AddSchema,
    AssertCurrentSchemaId,
    AssertDefaultSpecId,
    AssertLastAssignedFieldId,
    SetCurrentSchema,
    SetDefaultSpec,
    Update,
)
from datashard.table.versions import Loaded, TablePaths


def schema_updates(update: SchemaUpdate, md: TableMetadata) -> list[Update]:
    """The updates that make ``update``'s schema current on ``md`` (``SchemaError`` if it does
    not apply)."""
    schema, last_column_id = update.new_schema(md)
    return [AddSchema(schema, last_column_id), SetCurrentSchema(schema.schema_id)]


def commit_schema(
    backend: StorageBackend, paths: TablePaths, base: Loaded, update: SchemaUpdate
) -> Loaded:
    """Commit ``update`` on ``base``; the new version. Raises ``SchemaError`` before any
    request for a change that does not apply, ``CommitConflictError`` when the schema changed
    meanwhile."""
    md = base.metadata
    return commit_updates(
        backend,
        paths,
        base,
        lambda m: schema_updates(update, m),
        [AssertCurrentSchemaId(md.current_schema_id), AssertLastAssignedFieldId(md.last_column_id)],
    )


def spec_updates(spec: SpecLike, md: TableMetadata) -> Sequence[Update]:
    """The updates that make ``spec`` the default partition spec of ``md`` (an existing equal
    spec is reused); ``SchemaError`` for a bad spec."""
    new, last = evolve_spec(md, spec)
    return [AddPartitionSpec(new, last), SetDefaultSpec(new.spec_id)]


def commit_partition_spec(
    backend: StorageBackend, paths: TablePaths, base: Loaded, spec: SpecLike
) -> Loaded:
    """Make ``spec`` the default partition spec; old files keep theirs. Raises
    ``SchemaError`` before any request for a bad spec, ``CommitConflictError`` when the default
    spec changed meanwhile."""
    return commit_updates(
        backend,
        paths,
        base,
        lambda m: spec_updates(spec, m),
        [AssertDefaultSpecId(base.metadata.default_spec_id)],
    )


__all__ = ["commit_partition_spec", "commit_schema", "schema_updates", "spec_updates"]
