"""Row-level deletes as commits: delete files (and optionally new data files) in one snapshot.

A :class:`RowDelta` stages position delete files (Parquet with ``file_path`` and ``pos``, the
reserved field ids, sorted by path then position, one file per partition) and equality delete
files (Parquet with the table's field ids and ``equality_ids``), writes them into delete
manifests (content 1), and commits one snapshot that keeps every manifest of its parent.

On a format version 3 table position deletes are written as deletion vectors instead (the spec
forbids new position delete files there): one ``deletion-vector-v1`` blob per data file, all of
one commit in one Puffin file. A data file has at most one vector: the new one holds the
positions of the vector or position delete files that applied to it before, and those are
removed in the same commit (a position delete file that still applies to another data file is
kept). A concurrent commit that added deletes of the same data file is a conflict.

It is a :class:`~datashard.table.rewrite.RewriteCommit`, so one commit may also remove whole
data files and retire delete files. Conflicts are checked on every base: each data file a
position delete names must still be live (a concurrent compaction or overwrite that removed it
would drop the delete with it), and, with a conflict bound, no file in its range was added.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from datashard.errors import ConfigError, ValidationError
from datashard.iceberg.datafile import ParquetOptions, write_parquet
from datashard.iceberg.deletes import partition_key
from datashard.iceberg.expressions import (
    Bound,
    FilterLike,
    bind_schema,
    referenced_columns,
    to_arrow_expression,
    to_expr,
)
from datashard.iceberg.manifest import (
    DELETE_FILE_PATH_ID,
    DELETE_POS_ID,
    EQUALITY_DELETES,
    POSITION_DELETES,
    DataFile,
)
from datashard.iceberg.metadata import LINEAGE_VERSION
from datashard.iceberg.puffin import deletion_vector, puffin_file
from datashard.iceberg.schema import Schema
from datashard.storage.base import StorageBackend
from datashard.table.deletes import DeleteReader
from datashard.table.rewrite import RewriteCommit
from datashard.table.versions import Loaded, TablePaths

#: The schema of a position delete file (without deleted row values).
POSITION_DELETE_SCHEMA = Schema(
    0,
    [
        {"id": DELETE_FILE_PATH_ID, "name": "file_path", "type": "string", "required": True},
        {"id": DELETE_POS_ID, "name": "pos", "type": "long", "required": True},
    ],
)
#: Paths are kept whole in the bounds of a position delete file, so readers can tell which data
#: files it may name.
_PATH_BOUNDS = ParquetOptions(truncate_length=1 << 16)


class RowDelta(RewriteCommit):
    """One commit of delete files, and new data files if any (``overwrite`` then)."""

    def __init__(
        self,
        backend: StorageBackend,
        paths: TablePaths,
        base: Loaded,
        operation: str = "delete",
        *,
        conflict_bound: Bound | None = None,
    ) -> None:
        super().__init__(backend, paths, base, operation, conflict_bound=conflict_bound)
        self._reader: DeleteReader | None = None

    def stage_tables(self, tables: Iterable[pa.Table], target_file_size: int | None = None) -> None:
        """Stage new data files (see the base class); a delete that adds rows is recorded as
        an ``overwrite`` (incremental readers skip ``delete`` snapshots)."""
        super().stage_tables(tables, target_file_size)
        if self.added and self.operation == "delete":
            self.operation = "overwrite"

    # -- staging -----------------------------------------------------------------------------

    def stage_position_deletes(
        self,
        positions: Mapping[str, Sequence[int] | np.ndarray],
        partitions: Mapping[str, tuple[int, Mapping[str, Any]]],
    ) -> None:
        """Stage position deletes: ``positions`` by data file path; ``partitions`` gives each
        data file's (spec id, partition values). One delete file per partition; on a format
        version 3 table deletion vectors (:meth:`stage_deletion_vectors`)."""
        if self.format_version >= LINEAGE_VERSION:
            self.stage_deletion_vectors(positions)
            return
        groups: dict[tuple[Any, ...], list[str]] = {}
        for path in positions:
            if path not in partitions:
                raise ValidationError(f"no partition given for data file {path}")
            spec_id, values = partitions[path]
            groups.setdefault(partition_key(spec_id, values), []).append(path)
            self.delete_targets.add(path)
        for paths in groups.values():
            spec_id, values = partitions[paths[0]]
            files, pos = [], []
            for path in sorted(paths):
                p = np.unique(np.asarray(positions[path], dtype=np.int64))
                if len(p) == 0:
                    continue
                files.append(np.full(len(p), path, dtype=object))
                pos.append(p)
            if not pos:
                continue
            table = pa.table(
                {
                    "file_path": pa.array(np.concatenate(files), pa.string()),
                    "pos": pa.array(np.concatenate(pos), pa.int64()),
                }
            )
            data, stats = write_parquet(table, POSITION_DELETE_SCHEMA, _PATH_BOUNDS)
            key = f"{self.paths.data_dir}/{uuid.uuid4()}-deletes.parquet"
            self.stage(key, data)
            df = replace(
                stats.to_data_file(self.backend.uri_for(key), len(data), values),
                content=POSITION_DELETES,
                referenced_data_file=paths[0] if len(paths) == 1 else None,
            )
            self.delete_files.append((df, spec_id))

    def stage_deletion_vectors(self, positions: Mapping[str, Sequence[int] | np.ndarray]) -> None:
        """Stage one deletion vector per data file of ``positions`` (by path; each must be a
        live data file of the base, else ``ValidationError``), merged with the deletes that
        applied to it, in one Puffin file; the vectors and position delete files it replaces
        are retired in the same commit (see the module docstring)."""
        blobs = []
        specs: list[tuple[DataFile, int]] = []
        for path in sorted(positions):
            new = np.asarray(positions[path], dtype=np.int64)
            if len(new) == 0:
                continue
            found = self.deletes_of(path)
            if found is None:
                raise ValidationError(
                    f"{path} is not a live data file of {self.base.metadata.location}"
                )
            df, seq, spec_id, deletes = found
            old = [self._rows_of().positions(d, path) for d in deletes if not d.is_equality]
            blobs.append(deletion_vector(path, np.concatenate([new, *old])))
            specs.append((df, spec_id))
            self.vector_targets[path] = (df, seq, spec_id)
            self.delete_targets.add(path)
        if not blobs:
            return
        data, metas = puffin_file(blobs, {"created-by": "datashard"})
        key = f"{self.paths.data_dir}/{uuid.uuid4()}-dv.puffin"
        self.stage(key, data)
        uri = self.backend.uri_for(key)
        for (df, spec_id), meta in zip(specs, metas, strict=True):
            vector = DataFile(
                file_path=uri,
                file_format="PUFFIN",
                content=POSITION_DELETES,
                record_count=int(meta.properties["cardinality"]),
                file_size_in_bytes=len(data),
                partition=df.partition,
                referenced_data_file=df.file_path,
                content_offset=meta.offset,
                content_size_in_bytes=meta.length,
            )
            self.delete_files.append((vector, spec_id))
        self.retire_deletes()  # the vectors and position files the new vectors replace

    def _rows_of(self) -> DeleteReader:
        if self._reader is None:
            self._reader = DeleteReader(self.backend, self.base.metadata)
        return self._reader

    def stage_equality_deletes(
        self,
        rows: pa.Table,
        equality_ids: Sequence[int],
        spec_id: int | None = None,
        partition: Mapping[str, Any] | None = None,
    ) -> None:
        """Stage an equality delete file: ``rows`` holds the delete columns (named as the
        table's columns); ``equality_ids`` are their field ids. With ``spec_id`` and
        ``partition`` it applies to that partition only; without, it is written with an
        unpartitioned spec of the table and applies to every partition (a global delete)."""
        md = self.base.metadata
        schema = md.current_schema()
        fields = [schema.find_field(i) for i in equality_ids]
        if spec_id is None:
            spec_id = next((s.spec_id for s in md.partition_specs if not s.fields), None)
            if spec_id is None:
                raise ValidationError(
                    f"table {md.location} has no unpartitioned spec for a global equality "
                    "delete; pass spec_id and partition"
                )
            partition = {}
        elif md.spec(spec_id).fields and partition is None:
            raise ValidationError(f"spec {spec_id} is partitioned: pass the partition values")
        delete_schema = Schema(schema.schema_id, fields)
        table = delete_schema.coerce_arrow(rows.select([f.name for f in fields]))
        data, stats = write_parquet(table, delete_schema)
        key = f"{self.paths.data_dir}/{uuid.uuid4()}-eq-deletes.parquet"
        self.stage(key, data)
        df = replace(
            stats.to_data_file(self.backend.uri_for(key), len(data), partition or {}),
            content=EQUALITY_DELETES,
            equality_ids=tuple(equality_ids),
        )
        self.delete_files.append((df, spec_id))


# --------------------------------------------------------------------------------------------
# merge-on-read delete and overwrite

#: The table property choosing how ``delete`` and ``overwrite`` remove rows (Iceberg's name).
DELETE_MODE = "write.delete.mode"
DeleteMode = Literal["copy-on-write", "merge-on-read"]


def delete_mode(properties: Mapping[str, str]) -> DeleteMode:
    """``write.delete.mode`` of a table: ``copy-on-write`` (the default: files holding deleted
    rows are rewritten) or ``merge-on-read`` (position delete files are written, deletion
    vectors on a format version 3 table); any other
    value is a ``ConfigError`` naming the property."""
    mode = properties.get(DELETE_MODE, "copy-on-write")
    if mode == "copy-on-write":
        return "copy-on-write"
    if mode == "merge-on-read":
        return "merge-on-read"
    raise ConfigError(
        f"table property {DELETE_MODE} must be 'copy-on-write' or 'merge-on-read', got {mode!r}"
    )


def delete_rows(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    filter: FilterLike,
    tables: Sequence[pa.Table] = (),
    operation: str = "delete",
) -> Loaded | None:
    """Delete the rows matching ``filter`` by writing position delete files (merge-on-read;
    deletion vectors on a format version 3 table), and add ``tables`` (already coerced) in
    the same snapshot; the new version, or ``None``
    when no live row matched and there is no data.

    Data files are never rewritten: only the filter's columns (and those equality deletes
    compare) of a file the filter may match are read, to find the positions of its matching
    live rows. A file whose statistics prove every row matches is removed whole, unread, as is
    a file whose every live row matches. Delete files that applied only to removed files are
    removed with them.
    """
    md = base.metadata
    schema = md.current_schema()
    bound = bind_schema(filter, schema)
    delta = RowDelta(backend, paths, base, operation, conflict_bound=bound)
    rows_of = DeleteReader(backend, md)
    wanted = referenced_columns(to_expr(filter)) or {schema.fields[0].name}
    fields = [f for f in schema.fields if f.name in wanted]
    positions: dict[str, np.ndarray] = {}
    partitions: dict[str, tuple[int, Mapping[str, Any]]] = {}
    try:
        for df, seq, spec_id, deletes in delta.files_in_range(bound):
            hit, alive = rows_of.matching_positions(df, deletes, fields, _matcher(bound))
            if len(hit) == 0:
                continue
            if len(hit) == alive:
                delta.remove(df, seq, spec_id)  # nothing of it stays
                continue
            positions[df.file_path] = hit
            partitions[df.file_path] = (spec_id, df.partition)
        if not delta.removed and not positions and not any(t.num_rows for t in tables):
            return None
        delta.retire_deletes()
        delta.stage_position_deletes(positions, partitions)
        delta.stage_tables(tables)
        delta.flush()
    except BaseException:
        delta.discard()
        raise
    loaded, _ = delta.commit()
    return loaded


def _matcher(bound: Bound) -> Callable[[pa.Table], np.ndarray]:
    """A function giving, for a table, True where a row matches ``bound`` (null: no match)."""
    expression = to_arrow_expression(bound)

    def matches(table: pa.Table) -> np.ndarray:
        rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
        hit = table.append_column("__row", rows).filter(expression).column("__row")
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[hit.to_numpy()] = True
        return mask

    return matches


__all__ = ["DELETE_MODE", "POSITION_DELETE_SCHEMA", "RowDelta", "delete_mode", "delete_rows"]
