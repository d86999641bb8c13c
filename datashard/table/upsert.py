"""``Table.upsert``: rows whose key matches a row of the table replace it, the others are added,
in ONE snapshot (PyIceberg's ``upsert``, with its counts).

The input is checked first, before anything is read or written: the key columns must be
top-level, non-nested columns of the schema; no key may be null; no key may appear twice. Then
the data files whose partition values and column statistics may hold one of the input's keys
(the filter ``key_1 IN (...) AND key_2 IN (...)``) are read, and each of their live rows is
matched to the input row with its key (an Arrow hash join on the key columns). A matched row
whose other columns differ is replaced; an identical one is left alone (not counted); an input
row that matches nothing is inserted.

How the replaced rows go follows ``write.delete.mode``, as ``overwrite`` and ``delete`` do:
``copy-on-write`` rewrites the files that hold them (:class:`~datashard.table.rewrite.
RewriteCommit`), ``merge-on-read`` writes position delete files
(:class:`~datashard.table.row_delta.RowDelta`). Either way the commit carries the key filter as
its conflict bound: on every base it builds on, a commit since the one it read that added a file
which may hold one of the keys, removed a file it rewrites or deleted rows of one, is a
``CommitConflictError`` and nothing of the upsert lands (reload and retry).

On a format version 3 table a replaced row is removed and its new version added as a new row
(a new ``_row_id``, as the spec allows); rows a rewrite keeps keep their ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datashard.errors import ValidationError
from datashard.iceberg.expressions import Expr, bind_schema, col
from datashard.iceberg.metadata import Snapshot
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import ListType, MapType, StructType
from datashard.storage.base import StorageBackend
from datashard.table.deletes import DeleteReader
from datashard.table.rewrite import RewriteCommit
from datashard.table.row_delta import RowDelta, delete_mode
from datashard.table.versions import Loaded, TablePaths


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert changed: rows replaced (matched on the key, with another value) and rows
    added (no match); ``snapshot`` is the new snapshot, ``None`` when nothing changed."""

    rows_updated: int
    rows_inserted: int
    snapshot: Snapshot | None = None


def join_columns(schema: Schema, join_cols: Sequence[str] | None) -> list[str]:
    """The key columns: ``join_cols``, or the schema's identifier fields when ``None``.
    ``ValidationError`` naming a column that is not a top-level, non-nested column."""
    if join_cols is None:
        if not schema.identifier_field_ids:
            raise ValidationError(
                "upsert needs join_cols (the key columns), e.g. join_cols=['id']: the table "
                "schema has no identifier fields to default to"
            )
        return [schema.find_field(i).name for i in schema.identifier_field_ids]
    if isinstance(join_cols, str) or not isinstance(join_cols, Sequence) or not join_cols:
        raise ValidationError(
            f"join_cols must be a non-empty list of column names, got {join_cols!r}"
        )
    by_name = {f.name: f for f in schema.fields}
    out: list[str] = []
    for name in join_cols:
        found = by_name.get(name) if isinstance(name, str) else None
        if found is None:
            raise ValidationError(
                f"upsert key column {name!r} is not in the table schema; its columns are "
                f"{sorted(by_name)}"
            )
        if isinstance(found.field_type, (StructType, ListType, MapType)):
            raise ValidationError(
                f"upsert key column {name!r} is a {found.field_type}: a key must be a "
                "primitive column"
            )
        if name not in out:
            out.append(name)
    return out


def check_keys(source: pa.Table, keys: list[str]) -> None:
    """``ValidationError`` naming the column of a null key, or the first key that appears more
    than once in ``source``."""
    for k in keys:
        nulls = source.column(k).null_count
        if nulls:
            row = int(np.flatnonzero(source.column(k).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValidationError(
                f"upsert key column {k!r} is null in {nulls} input row(s) (first: row {row}); "
                "a key must not be null"
            )
    counts = source.select(keys).group_by(keys).aggregate([([], "count_all")])
    dup = counts.filter(pc.greater(counts.column("count_all"), 1))
    if dup.num_rows:
        first = {k: dup.column(k)[0].as_py() for k in keys}
        raise ValidationError(
            f"upsert input has {dup.num_rows} duplicate key(s), e.g. {first} appears "
            f"{dup.column('count_all')[0].as_py()} times; each key may appear once"
        )


def key_filter(source: pa.Table, keys: list[str]) -> Expr:
    """``key_1 IN (...) AND ...``: every table row with one of ``source``'s keys matches."""
    expr: Expr | None = None
    for k in keys:
        values = pc.unique(source.column(k)).to_pylist()
        term = col(k).isin(values)
        expr = term if expr is None else expr & term
    assert expr is not None  # keys is never empty
    return expr


class _Matcher:
    """Matches table rows to input rows by key and tells which differ in another column."""

    def __init__(self, source: pa.Table, keys: list[str]) -> None:
        self.source = source
        self.keys = keys
        self.others = [n for n in source.column_names if n not in keys]
        index = pa.array(np.arange(source.num_rows, dtype=np.int64))
        self._source_keys = source.select(keys).append_column("__s", index)

    def match(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``rows``: the index of the input row with its key (-1: none), and
        whether that input row differs from it in another column."""
        matched = np.full(rows.num_rows, -1, dtype=np.int64)
        changed = np.zeros(rows.num_rows, dtype=bool)
        if not rows.num_rows:
            return matched, changed
        left = rows.select(self.keys).append_column(
            "__t", pa.array(np.arange(rows.num_rows, dtype=np.int64))
        )
        joined = left.join(self._source_keys, keys=self.keys, join_type="inner")
        t = joined.column("__t").to_numpy()
        s = joined.column("__s").to_numpy()
        matched[t] = s
        if len(t):
            diff = np.zeros(len(t), dtype=bool)
            for name in self.others:
                diff |= _differs(
                    rows.column(name).take(pa.array(t)), self.source.column(name).take(pa.array(s))
                )
            changed[t] = diff
        return matched, changed


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """True where ``a`` and ``b`` hold different values (two nulls are the same)."""
    try:
        same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(a.is_null(), b.is_null()))
        return ~np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return np.array([x != y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)])


def upsert(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    source: pa.Table,
    keys: list[str],
) -> tuple[Loaded | None, UpsertResult]:
    """Upsert ``source`` (already coerced to the current schema; keys checked by
    :func:`check_keys`) on the key columns ``keys``; the new version (``None`` when nothing
    changed) and the counts. Raises ``CommitConflictError`` (see the module docstring)."""
    md = base.metadata
    schema = md.current_schema()
    bound = bind_schema(key_filter(source, keys), schema)
    merge = delete_mode(md.properties) == "merge-on-read"
    commit: RewriteCommit = (
        RowDelta(backend, paths, base, "overwrite", conflict_bound=bound)
        if merge
        else RewriteCommit(backend, paths, base, "overwrite", conflict_bound=bound)
    )
    matcher = _Matcher(source, keys)
    rows_of = DeleteReader(backend, md)
    fields = list(schema.fields)
    lineage = commit.lineage_fields()
    # per file that holds a key: (file, seq, spec, rows or positions, input index per row,
    # whether it changed); the replaced rows are known only once every file was matched
    found: list[tuple[Any, int, int, Any, np.ndarray, np.ndarray, int]] = []
    try:
        for df, seq, spec_id, deletes in commit.files_in_range(bound, whole=False):
            if merge:
                seen: dict[str, np.ndarray] = {}

                def mark(rows: pa.Table, seen: dict[str, np.ndarray] = seen) -> np.ndarray:
                    seen["matched"], seen["changed"] = matcher.match(rows)
                    return np.asarray(seen["matched"] >= 0)

                hit, alive = rows_of.matching_positions(df, deletes, fields, mark)
                if len(hit):
                    matched, changed = seen["matched"][hit], seen["changed"][hit]
                    found.append((df, seq, spec_id, hit, matched, changed, alive))
            else:  # v3: the rows kept keep their row ids (lineage read with them)
                rows = rows_of.read(df, deletes, [*fields, *lineage], sequence_number=seq)
                matched, changed = matcher.match(rows.select(list(range(len(fields)))))
                if (matched >= 0).any():
                    found.append((df, seq, spec_id, rows, matched, changed, rows.num_rows))
        updated = np.zeros(source.num_rows, dtype=bool)
        seen_key = np.zeros(source.num_rows, dtype=bool)
        for *_, matched, changed, _alive in found:
            seen_key[matched[matched >= 0]] = True
            updated[matched[changed & (matched >= 0)]] = True
        inserted = ~seen_key
        if not updated.any() and not inserted.any():
            return None, UpsertResult(0, 0)
        remainders: list[pa.Table] = []
        positions: dict[str, np.ndarray] = {}
        partitions: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for df, seq, spec_id, rows, matched, _changed, alive in found:
            replaced = (matched >= 0) & updated[np.maximum(matched, 0)]
            if not replaced.any():
                continue
            if merge:
                if int(replaced.sum()) == alive:
                    commit.remove(df, seq, spec_id)  # nothing of it stays
                else:
                    positions[df.file_path] = rows[replaced]
                    partitions[df.file_path] = (spec_id, df.partition)
            else:
                commit.remove(df, seq, spec_id)
                rest = rows.filter(pa.array(~replaced))
                if rest.num_rows:
                    remainders.append(rest)
        if not commit.removed and not positions:
            commit.operation = "append"  # nothing replaced: only rows added
        written = source.filter(pa.array(updated | inserted))
        commit.retire_deletes()
        if isinstance(commit, RowDelta):
            commit.stage_position_deletes(positions, partitions)
        commit.stage_tables([*remainders, written])
        commit.flush()
    except BaseException:
        commit.discard()
        raise
    loaded, _ = commit.commit()
    snap = loaded.metadata.current_snapshot()
    return loaded, UpsertResult(int(updated.sum()), int(inserted.sum()), snap)


__all__ = ["UpsertResult", "check_keys", "join_columns", "upsert"]
