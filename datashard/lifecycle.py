"""The table-level entry points of issue 7, behind the thin methods of :class:`Table`.

Each function validates its input against the table's loaded metadata before any request,
runs its commit (see :mod:`datashard.table_updates`, :mod:`datashard.rewrite`,
:mod:`datashard.maintenance`) and leaves the table object holding the new version.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from datashard.commit import AssertCurrentSchemaId, AssertRefSnapshotId, Loaded, load_newest
from datashard.errors import CorruptMetadataError, ValidationError
from datashard.evolution import SchemaUpdate, fill_write_defaults_arrow
from datashard.expressions import FilterLike
from datashard.maintenance import DEFAULT_TARGET_FILE_SIZE, CompactResult, ExpireResult
from datashard.maintenance import compact as _compact
from datashard.maintenance import expire_snapshots as _expire
from datashard.maintenance import remove_orphan_files as _orphans
from datashard.metadata import Snapshot, TableMetadata
from datashard.partitioning import evolve_spec
from datashard.refs import check_ref_name, remove_ref_change, set_current_change, set_ref_change
from datashard.rewrite import bind_filter, overwrite_files
from datashard.schema import Schema
from datashard.table_updates import AssertDefaultSpecId, AssertLastColumnId, commit_change

if TYPE_CHECKING:
    from datashard.table import DataLike, Table


def _set(table: Table, loaded: Loaded | None) -> None:
    if loaded is not None:
        table._loaded = loaded


# -- schema and partition spec ---------------------------------------------------------------


def schema_update(table: Table) -> SchemaUpdate:
    update = SchemaUpdate(table.schema())

    def committer(u: SchemaUpdate) -> Schema:
        paths = table._writable()
        base = table._loaded
        loaded = commit_change(
            table.backend,
            paths,
            base,
            u.apply,
            [
                AssertCurrentSchemaId(base.metadata.current_schema_id),
                AssertLastColumnId(base.metadata.last_column_id),
            ],
        )
        _set(table, loaded)
        return table.schema()

    update._committer = committer
    return update


def update_partition_spec(table: Table, spec: Any) -> None:
    paths = table._writable()
    base = table._loaded
    evolve_spec(base.metadata, spec)  # bad input raises before any request

    def change(md: TableMetadata) -> TableMetadata:
        new, last = evolve_spec(md, spec)
        specs = md.partition_specs
        if all(s.spec_id != new.spec_id for s in specs):
            specs = (*specs, new)
        return replace(
            md, partition_specs=specs, default_spec_id=new.spec_id, last_partition_id=last
        )

    loaded = commit_change(
        table.backend, paths, base, change, [AssertDefaultSpecId(base.metadata.default_spec_id)]
    )
    _set(table, loaded)


# -- overwrite and delete --------------------------------------------------------------------


def _snapshot_after(table: Table, loaded: Loaded | None) -> Snapshot | None:
    if loaded is None:
        return None
    _set(table, loaded)
    snap = loaded.metadata.current_snapshot()
    if snap is None:  # pragma: no cover - a rewrite always makes one
        raise CorruptMetadataError(f"{loaded.location} has no current snapshot after a rewrite")
    return snap


def overwrite(table: Table, data: DataLike, filter: FilterLike) -> Snapshot | None:
    from datashard.table import _to_arrow

    paths = table._writable()
    schema = table.schema()
    bind_filter(table.metadata, filter)
    arrow = schema.coerce_arrow(fill_write_defaults_arrow(_to_arrow(data), schema))
    loaded = overwrite_files(
        table.backend,
        paths,
        table._loaded,
        filter,
        [arrow] if arrow.num_rows else [],
        "overwrite",
    )
    return _snapshot_after(table, loaded)


def delete(table: Table, filter: FilterLike) -> Snapshot | None:
    paths = table._writable()
    if filter is None:
        raise ValidationError(
            "delete needs a filter; to delete every row pass an always-true filter explicitly, "
            "e.g. table.overwrite(empty_table)"
        )
    loaded = overwrite_files(table.backend, paths, table._loaded, filter, [], "delete")
    return _snapshot_after(table, loaded)


# -- maintenance -----------------------------------------------------------------------------


def compact(table: Table, target_file_size: int | None, **kwargs: Any) -> CompactResult:
    paths = table._writable()
    size = DEFAULT_TARGET_FILE_SIZE if target_file_size is None else target_file_size
    prop = table.properties.get("write.target-file-size-bytes")
    if target_file_size is None and prop is not None and prop.isdigit():
        size = int(prop)
    loaded, result = _compact(table.backend, paths, table._loaded, size, **kwargs)
    _set(table, loaded)
    return result


def expire_snapshots(
    table: Table, older_than: Any, retain_last: int, **kwargs: Any
) -> ExpireResult:
    paths = table._writable()
    loaded, result = _expire(table.backend, paths, table._loaded, older_than, retain_last, **kwargs)
    _set(table, loaded)
    return result


def remove_orphan_files(table: Table, older_than: Any, *, dry_run: bool) -> list[str]:
    paths = table._writable()

    def newest() -> Loaded | None:
        return load_newest(table.backend, paths, table._loaded)

    return _orphans(table.backend, paths, table._loaded, newest, older_than, dry_run=dry_run)


# -- rollback and refs -----------------------------------------------------------------------


def set_current(table: Table, snapshot_id: int, *, ancestor_only: bool) -> Snapshot:
    paths = table._writable()
    base = table._loaded
    change = set_current_change(snapshot_id, ancestor_only=ancestor_only)
    loaded = commit_change(
        table.backend,
        paths,
        base,
        change,
        [AssertRefSnapshotId("main", base.metadata.current_snapshot_id)],
    )
    _set(table, loaded)
    return table.snapshot(snapshot_id)


def set_ref(table: Table, name: str, snapshot_id: int | None, kind: Any) -> None:
    paths = table._writable()
    check_ref_name(name)
    md = table.metadata
    sid = md.current_snapshot_id if snapshot_id is None else snapshot_id
    if sid is None:
        raise ValidationError(f"table {md.location} has no snapshot to name {name!r}")
    change = set_ref_change(name, sid, kind)
    _set(table, commit_change(table.backend, paths, table._loaded, change))


def remove_ref(table: Table, name: str) -> None:
    paths = table._writable()
    check_ref_name(name)
    change = remove_ref_change(name)
    _set(table, commit_change(table.backend, paths, table._loaded, change))


__all__ = [
    "compact",
    "delete",
    "expire_snapshots",
    "overwrite",
    "remove_orphan_files",
    "remove_ref",
    "schema_update",
    "set_current",
    "set_ref",
    "update_partition_spec",
]
