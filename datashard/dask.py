"""Dask DataFrames over datashard tables: reads through datashard's one read path, and writes
that land as ONE snapshot.

``read_table(table, columns=..., filter=...)`` plans the scan on the client (manifests read,
files pruned by their statistics, delete files matched) and makes one partition per data file
(a file larger than ``piece_bytes`` is cut into groups of row groups). Each partition is read on
a worker by :meth:`datashard.table.remote.ReadPart.read`: columns by field id (renames, dropped
and re-added columns and widened types read right), row groups pruned by the filter, position
and equality deletes applied. Columns are pandas ``ArrowDtype`` (pyarrow-backed): nulls stay
nulls in every type and every partition has the same dtypes.

``write_table(ddf, table)`` checks the frame's columns against the table schema, has every
partition written as data files by the workers (:class:`~datashard.table.add_files.DataFileWriter`),
and commits them all with ``add_files`` as one snapshot. If the write or the commit fails, the
files the workers wrote are deleted.

Credentials: the task graph carries the table's backend, whose configuration is pickled with
it (workers need it to read). Secrets are fields that never appear in a ``repr`` or ``str``,
so the graph as Dask shows or logs it holds no credential; the pickled bytes the scheduler
sends to workers do, as for any Dask task that opens storage.

Needs the optional package dask: ``pip install "datashard-iceberg[dask]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

try:
    import dask
    import dask.dataframe as dd
    import pandas as pd
except ImportError as exc:  # pragma: no cover - the dask extra is not installed
    raise ImportError(
        'datashard.dask needs the optional package dask: pip install "datashard-iceberg[dask]"'
    ) from exc

import pyarrow as pa

from datashard.errors import ValidationError
from datashard.iceberg.conversions import from_bytes
from datashard.iceberg.expressions import FilterLike
from datashard.iceberg.metadata import Snapshot
from datashard.iceberg.types import DoubleType, FloatType, IntType, LongType
from datashard.table.add_files import DataFileWriter, WrittenFile
from datashard.table.remote import (
    DEFAULT_PIECE_BYTES,
    ReadPart,
    already_landed,
    check_columns,
    commit_written,
    new_operation_prefix,
    plan_parts,
    remove_written,
    scan_of,
)
from datashard.table.remote import source_of as _check_shareable
from datashard.table.scan import Scan

if TYPE_CHECKING:
    from datashard.table.table import Table

# dask's functions are untyped: called through these
_dask: Any = dask
_dd: Any = dd


def read_table(
    table_or_scan: Table | Scan,
    columns: Sequence[str] | None = None,
    filter: FilterLike = None,
    snapshot_id: int | None = None,
    *,
    index: str | None = None,
    piece_bytes: int | None = DEFAULT_PIECE_BYTES,
) -> dd.DataFrame:
    """The rows of a table (its current snapshot, or ``snapshot_id``) or of a scan, as a
    lazy Dask DataFrame: one partition per data file the scan plans, a file larger than
    ``piece_bytes`` cut into groups of row groups (``None``: never cut). ``columns`` and
    ``filter`` narrow the read (for a scan they are added to its own).

    ``index``: a column to make the index, each partition sorted by it. When it is a numeric
    column whose per-file bounds in the manifests do not overlap (a table written in key
    order), the frame has known divisions, taken from those bounds without reading a file;
    otherwise (and without ``index``) divisions are unknown. With ``index`` a file is not cut.

    Raises ``ValidationError`` for an unknown column or snapshot, ``ConfigError`` for a
    ``memory://`` table (workers cannot see it).
    """
    scan = scan_of(table_or_scan, columns, filter, snapshot_id)
    if index is not None and index not in scan.columns:
        raise ValidationError(f"index {index!r} is not one of the columns read: {scan.columns}")
    parts = plan_parts(scan, None if index is not None else piece_bytes)
    meta = to_pandas(scan.output_schema().empty_table())
    if index is not None:
        meta = meta.set_index(index)
    if not parts:
        result: dd.DataFrame = _dd.from_pandas(meta, npartitions=1)
        return result
    divisions = None
    if index is not None:
        ordered = _ordered(scan, parts, index)
        if ordered is not None:
            parts, divisions = ordered
    frame: dd.DataFrame = _dd.from_map(
        IndexedRead(index) if index is not None else read_part,
        parts,
        meta=meta,
        divisions=divisions,
        label="datashard-read",
        enforce_metadata=False,
    )
    return frame


class IndexedRead:
    """A partition with ``index`` as its sorted index."""

    def __init__(self, index: str) -> None:
        self.index = index

    def __call__(self, part: ReadPart) -> pd.DataFrame:
        frame: pd.DataFrame = read_part(part).set_index(self.index).sort_index()
        return frame

    def __repr__(self) -> str:
        return f"IndexedRead({self.index!r})"


def _ordered(
    scan: Scan, parts: list[ReadPart], index: str
) -> tuple[list[ReadPart], tuple[Any, ...]] | None:
    """The parts in index order and their divisions, when the manifests' bounds of ``index``
    say the files hold disjoint ranges (no nulls); else ``None``."""
    field = scan.schema.find_field(index)
    if not isinstance(field.field_type, (IntType, LongType, FloatType, DoubleType)):
        return None
    fid = field.field_id
    ranges = []
    for part in parts:
        df = part.task.data_file
        low, high = df.lower_bounds.get(fid), df.upper_bounds.get(fid)
        if low is None or high is None or df.null_value_counts.get(fid, 1) != 0:
            return None
        try:
            ranges.append((from_bytes(field.field_type, low), from_bytes(field.field_type, high)))
        except ValidationError:  # written before a widening: bounds of the narrower type
            return None
    order = sorted(range(len(parts)), key=lambda i: ranges[i])
    for a, b in zip(order, order[1:], strict=False):
        if ranges[a][1] >= ranges[b][0]:
            return None
    divisions = (*(ranges[i][0] for i in order), ranges[order[-1]][1])
    return [parts[i] for i in order], divisions


def read_part(part: ReadPart) -> pd.DataFrame:
    """One partition: the rows of ``part`` read on this worker."""
    return to_pandas(part.read())


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as pandas with pyarrow-backed dtypes (the same dtypes whatever the rows)."""
    frame: pd.DataFrame = table.to_pandas(types_mapper=pd.ArrowDtype)
    return frame


def write_table(
    df: dd.DataFrame,
    table: Table,
    *,
    mode: Literal["append"] = "append",
    idempotency_key: str | None = None,
) -> Snapshot | None:
    """Append every row of ``df`` to ``table`` as ONE snapshot; the snapshot (``None`` when
    ``df`` has no rows).

    Each partition is written as data files by the worker that computes it; the client
    gathers their descriptions (a few hundred bytes per file) and commits them with
    :meth:`~datashard.table.table.Table.add_files`. Before any worker writes, the frame's
    columns are checked against the table schema (``SchemaError`` naming the column). When the
    computation or the commit fails, the files the workers wrote are deleted and the error is
    re-raised (``CommitStateUnknownError`` keeps them: the commit may have landed).
    ``idempotency_key``: see ``Table.append``.
    """
    if mode != "append":
        raise ValidationError(f"write_table mode must be 'append', got {mode!r}")
    if not isinstance(df, dd.DataFrame):
        raise ValidationError(f"write_table takes a dask DataFrame, got {type(df).__name__}")
    check_columns(table.schema(), pa.Schema.from_pandas(df._meta, preserve_index=False))
    landed = already_landed(table.metadata, idempotency_key)
    if landed is not None:
        return landed  # a retried job: nothing is written
    writer = table.data_file_writer().with_prefix(new_operation_prefix())
    _check_shareable(table.scan())
    parts: Any = df
    tasks = [_dask.delayed(write_part)(part, writer) for part in parts.to_delayed()]
    client = _distributed_client()
    try:
        if client is None:
            results = _dask.compute(*tasks)
        else:
            futures = client.compute(tasks)
            try:
                results = client.gather(futures)
            except BaseException:
                _wait(futures)  # tasks still running finish first: their files go too
                raise
    except BaseException:
        remove_written(writer.backend, writer)
        raise
    files = [f for written in results for f in written]
    return commit_written(table.add_files, writer, files, idempotency_key)


def _distributed_client() -> Any:
    """The ``distributed`` client in use, if any."""
    try:
        import distributed
    except ImportError:
        return None
    module: Any = distributed
    try:
        return module.default_client()
    except ValueError:  # no client: the local schedulers
        return None


def _wait(futures: Any) -> None:
    import distributed

    module: Any = distributed
    module.wait(futures)


def write_part(frame: pd.DataFrame, writer: DataFileWriter) -> list[WrittenFile]:
    """One partition written as data files on this worker (nothing committed)."""
    if not len(frame):
        return []
    return writer.write(pa.Table.from_pandas(frame, preserve_index=False))


__all__ = ["IndexedRead", "read_part", "read_table", "to_pandas", "write_part", "write_table"]
