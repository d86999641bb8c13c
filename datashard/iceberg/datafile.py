"""Writing Parquet data files with Iceberg field ids, and their :class:`DataFile` statistics.

Every Parquet column carries its Iceberg field id (pyarrow writes the ``PARQUET:field_id`` Arrow
metadata as the Parquet field id). Statistics come from the Parquet footer the writer just
produced, never from re-reading the file: per leaf column (nested ones by their own field id)
``column_sizes`` (compressed bytes), ``value_counts`` (values including nulls), and
``null_value_counts``; ``nan_value_counts`` for float/double columns; ``lower_bounds`` and
``upper_bounds`` in the spec's single-value serialization for every leaf that is not inside a
list or map, with strings and binary truncated to 16 characters/bytes (Iceberg's default
``truncate(16)`` metrics mode); ``split_offsets`` at the start of every row group.

Defaults: zstd compression, row groups of at most 1,048,576 rows and about 128 MiB of Arrow
data, 1 MiB data pages.

:func:`write_parquet` encodes a whole (small) file in memory; :class:`ParquetFileWriter` streams
one into any writable binary file-like object, row group by row group, so a caller can stop at
a target file size and the encoded file is never held whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datashard.errors import DataShardError, ValidationError
from datashard.iceberg.conversions import (
    to_bytes,
    to_physical,
    truncate_lower_bound,
    truncate_upper_bound,
)
from datashard.iceberg.manifest import (
    DataFile,
)
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import (
    BinaryType,
    DoubleType,
    FloatType,
    IcebergType,
    ListType,
    MapType,
    StringType,
    StructType,
)


@dataclass(frozen=True, kw_only=True)
class ParquetOptions:
    """How data files are written.

    ``compression`` is a pyarrow codec name (``zstd``, ``snappy``, ``gzip``, ``lz4``, ``none``);
    ``row_group_size`` is in rows and ``row_group_bytes`` in bytes of Arrow data (a row group
    stops at whichever comes first); ``truncate_length`` bounds string/binary column bounds.
    """

    compression: str = "zstd"
    compression_level: int | None = None
    row_group_size: int = 1_048_576
    row_group_bytes: int = 128 << 20
    data_page_size: int = 1 << 20
    truncate_length: int = 16

    def __post_init__(self) -> None:
        sizes = (self.row_group_size, self.row_group_bytes, self.data_page_size)
        if min(sizes) < 1 or self.truncate_length < 1:
            raise ValidationError(
                f"ParquetOptions: row_group_size ({self.row_group_size}), row_group_bytes "
                f"({self.row_group_bytes}), data_page_size ({self.data_page_size}) and "
                f"truncate_length ({self.truncate_length}) must be positive"
            )

    def rows_per_group(self, table: pa.Table, byte_limit: int | None = None) -> int:
        """Rows in each row group of ``table``: ``row_group_size`` at most, and as many as fit
        in ``row_group_bytes`` (and ``byte_limit``, if given) at the table's average Arrow
        bytes per row; at least 1."""
        limit = (
            self.row_group_bytes if byte_limit is None else min(self.row_group_bytes, byte_limit)
        )
        rows = self.row_group_size
        if table.num_rows:
            per_row = max(1, table.nbytes // table.num_rows)
            rows = min(rows, limit // per_row)
        return max(1, rows)


DEFAULT_OPTIONS = ParquetOptions()


@dataclass(frozen=True)
class ParquetStats:
    """What a Parquet file's footer says about its columns, keyed by Iceberg field id."""

    record_count: int
    column_sizes: Mapping[int, int] = field(default_factory=dict)
    value_counts: Mapping[int, int] = field(default_factory=dict)
    null_value_counts: Mapping[int, int] = field(default_factory=dict)
    nan_value_counts: Mapping[int, int] = field(default_factory=dict)
    lower_bounds: Mapping[int, bytes] = field(default_factory=dict)
    upper_bounds: Mapping[int, bytes] = field(default_factory=dict)
    split_offsets: tuple[int, ...] = ()

    def to_data_file(
        self,
        file_path: str,
        file_size_in_bytes: int,
        partition: Mapping[str, Any] | None = None,
        sort_order_id: int | None = None,
    ) -> DataFile:
        """The manifest's :class:`DataFile` for this file at ``file_path`` (an absolute URI)."""
        return DataFile(
            file_path=file_path,
            file_format="PARQUET",
            record_count=self.record_count,
            file_size_in_bytes=file_size_in_bytes,
            column_sizes=dict(self.column_sizes),
            value_counts=dict(self.value_counts),
            null_value_counts=dict(self.null_value_counts),
            nan_value_counts=dict(self.nan_value_counts),
            lower_bounds=dict(self.lower_bounds),
            upper_bounds=dict(self.upper_bounds),
            partition=dict(partition or {}),
            split_offsets=self.split_offsets,
            sort_order_id=sort_order_id,
        )


@dataclass(frozen=True)
class _Leaf:
    field_id: int
    field_type: IcebergType
    path: tuple[str, ...]  # names through structs only (for NaN counting); () when repeated
    repeated: bool


def _leaves(schema: Schema) -> list[_Leaf]:
    """Parquet leaf columns in file order (depth first), each with its Iceberg field."""
    out: list[_Leaf] = []

    def visit(fid: int, t: IcebergType, path: tuple[str, ...], repeated: bool) -> None:
        if isinstance(t, StructType):
            for f in t.fields:
                visit(f.field_id, f.field_type, path + (f.name,), repeated)
        elif isinstance(t, ListType):
            visit(t.element_id, t.element_type, (), True)
        elif isinstance(t, MapType):
            visit(t.key_id, t.key_type, (), True)
            visit(t.value_id, t.value_type, (), True)
        else:
            out.append(_Leaf(fid, t, path if not repeated else (), repeated))

    for f in schema.fields:
        visit(f.field_id, f.field_type, (f.name,), False)
    return out


def _nan_count(table: pa.Table, path: tuple[str, ...]) -> int:
    col: Any = table.column(path[0])
    for name in path[1:]:
        col = pc.struct_field(col, name)
    return int(pc.sum(pc.is_nan(col)).as_py() or 0)


def _exact(stats: Any, which: str) -> bool:
    flag = getattr(stats, f"is_{which}_value_exact", None)
    return flag is None or bool(flag)


def nan_counts(table: pa.Table, schema: Schema) -> dict[int, int]:
    """NaNs per float/double column (outside lists and maps) of ``table``, by field id."""
    return {
        leaf.field_id: _nan_count(table, leaf.path)
        for leaf in _leaves(schema)
        if isinstance(leaf.field_type, (FloatType, DoubleType)) and leaf.path
    }


def parquet_stats(
    metadata: pq.FileMetaData,
    schema: Schema,
    table: pa.Table | None = None,
    truncate_length: int = 16,
    nans: Mapping[int, int] | None = None,
) -> ParquetStats:
    """Iceberg column statistics from a Parquet footer written for ``schema``.

    NaN counts are ``nans`` when given, else counted in ``table`` (the data just written).
    """
    leaves = _leaves(schema)
    if len(leaves) != metadata.num_columns:
        raise DataShardError(
            f"Parquet file has {metadata.num_columns} leaf columns but schema "
            f"{schema.schema_id} has {len(leaves)}; was it written with another schema?"
        )
    sizes: dict[int, int] = {}
    values: dict[int, int] = {}
    nulls: dict[int, int] = {}
    lows: dict[int, Any] = {}
    highs: dict[int, Any] = {}
    no_bounds: set[int] = set()
    offsets: list[int] = []
    for rg_index in range(metadata.num_row_groups):
        rg = metadata.row_group(rg_index)
        if rg.num_columns:
            first = rg.column(0)
            starts = [first.data_page_offset]
            if first.has_dictionary_page and first.dictionary_page_offset is not None:
                starts.append(first.dictionary_page_offset)
            offsets.append(min(s for s in starts if s is not None))
        for i, leaf in enumerate(leaves):
            col = rg.column(i)
            fid = leaf.field_id
            sizes[fid] = sizes.get(fid, 0) + col.total_compressed_size
            values[fid] = values.get(fid, 0) + col.num_values
            st = col.statistics
            if st is not None and st.has_null_count:
                nulls[fid] = nulls.get(fid, 0) + st.null_count
            if leaf.repeated or fid in no_bounds:
                continue
            if rg.num_rows == 0:
                continue
            if st is None or not st.has_min_max:
                if st is None or st.null_count != rg.num_rows:
                    no_bounds.add(fid)  # values exist but are not described: no bound at all
                continue
            if not (_exact(st, "min") and _exact(st, "max")):
                no_bounds.add(fid)
                continue
            lo = to_physical(leaf.field_type, st.min)
            hi = to_physical(leaf.field_type, st.max)
            lows[fid] = lo if fid not in lows else min(lows[fid], lo)
            highs[fid] = hi if fid not in highs else max(highs[fid], hi)
    if nans is None:
        nans = nan_counts(table, schema) if table is not None else {}
    lower: dict[int, bytes] = {}
    upper: dict[int, bytes] = {}
    types = {leaf.field_id: leaf.field_type for leaf in leaves}
    for fid, lo in lows.items():
        if fid in no_bounds:
            continue
        t = types[fid]
        hi = highs[fid]
        if isinstance(t, (StringType, BinaryType)):
            lo = truncate_lower_bound(t, lo, truncate_length)
            hi = truncate_upper_bound(t, hi, truncate_length)
        lower[fid] = to_bytes(t, lo)
        if hi is not None:
            upper[fid] = to_bytes(t, hi)
    return ParquetStats(
        record_count=metadata.num_rows,
        column_sizes=sizes,
        value_counts=values,
        null_value_counts=nulls,
        nan_value_counts=dict(nans),
        lower_bounds=lower,
        upper_bounds=upper,
        split_offsets=tuple(offsets),
    )


def fit_schema(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` in the exact Arrow form of ``schema`` (field ids attached, types cast).

    Raises :class:`ValidationError` (from :meth:`Schema.coerce_arrow`) when it does not fit.
    """
    if table.schema.equals(schema.to_arrow(), check_metadata=True):
        return table
    return schema.coerce_arrow(table)


class _Unclosable:
    """A file-like object pyarrow may write to but never close (its owner publishes it).

    Once the owner has closed or aborted the sink, writes are dropped: a writer abandoned
    mid-file writes its footer when it is garbage-collected, into a stream already discarded.
    """

    closed = False

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def write(self, data: Any) -> int:
        if self._sink.closed:
            return len(memoryview(data))
        return int(self._sink.write(data))

    def tell(self) -> int:
        return int(self._sink.tell())

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        pass


#: Rows sampled from the start of a table to judge its columns' cardinality.
DICTIONARY_SAMPLE_ROWS = 8192


def dictionary_columns(table: pa.Table) -> bool | list[str]:
    """Which columns of ``table`` to dictionary-encode: ``True`` (all) when any column is
    nested, else the names of the columns whose first :data:`DICTIONARY_SAMPLE_ROWS` rows hold
    at most half as many distinct values as rows. A dictionary of mostly unique values saves
    nothing, and the Parquet writer holds a column chunk's pages in memory until it gives up
    on one, so a unique column (ids, timestamps, measurements) costs time and memory.
    """
    if any(pa.types.is_nested(f.type) for f in table.schema):
        return True
    sample = table.slice(0, DICTIONARY_SAMPLE_ROWS)
    if sample.num_rows == 0:
        return True
    keep = []
    for name, column in zip(sample.column_names, sample.columns, strict=True):
        if pa.types.is_boolean(column.type) or pa.types.is_null(column.type):
            keep.append(name)
            continue
        distinct = pc.count_distinct(column, mode="all").as_py()
        if distinct * 2 <= sample.num_rows:
            keep.append(name)
    return keep


class ParquetFileWriter:
    """One Parquet data file streamed into ``sink`` (a writable binary file-like object with
    ``write`` and ``tell``): :meth:`write` adds row groups as they are encoded, :meth:`finish`
    writes the footer and returns the file's statistics. The sink is never closed here.

    Tables given to :meth:`write` must already fit ``schema`` (:func:`fit_schema`).
    ``dictionary`` is pyarrow's ``use_dictionary``: all columns, none, or these (by name; see
    :func:`dictionary_columns`).
    """

    def __init__(
        self,
        sink: Any,
        schema: Schema,
        options: ParquetOptions = DEFAULT_OPTIONS,
        dictionary: bool | list[str] = True,
    ) -> None:
        self.schema = schema
        self.options = options
        self._sink = sink
        self._nans: dict[int, int] = {}
        self._floats = [
            leaf
            for leaf in _leaves(schema)
            if isinstance(leaf.field_type, (FloatType, DoubleType)) and leaf.path
        ]
        self._writer = pq.ParquetWriter(
            pa.PythonFile(_Unclosable(sink), mode="w"),
            schema.to_arrow(),
            compression=options.compression,
            compression_level=options.compression_level,
            data_page_size=options.data_page_size,
            use_dictionary=dictionary,
        )

    @property
    def size(self) -> int:
        """Bytes written to the sink so far (the footer comes on :meth:`finish`)."""
        return int(self._sink.tell())

    def write(self, table: pa.Table, rows_per_group: int | None = None) -> None:
        """Append ``table`` as row groups of ``rows_per_group`` rows (default: from the
        options). Raises :class:`ValidationError` when Parquet cannot hold the data."""
        rows = rows_per_group or self.options.rows_per_group(table)
        try:
            self._writer.write_table(table, row_group_size=rows)
        except (pa.ArrowException, ValueError) as exc:
            raise ValidationError(
                f"cannot write the data as Parquet for schema {self.schema.schema_id}: {exc}"
            ) from exc
        for leaf in self._floats:
            fid = leaf.field_id
            self._nans[fid] = self._nans.get(fid, 0) + _nan_count(table, leaf.path)

    def finish(self) -> ParquetStats:
        """Write the footer; the statistics of everything written."""
        self._writer.close()
        metadata = self._writer.writer.metadata
        return parquet_stats(
            metadata, self.schema, truncate_length=self.options.truncate_length, nans=self._nans
        )


def write_parquet(
    table: pa.Table, schema: Schema, options: ParquetOptions = DEFAULT_OPTIONS
) -> tuple[bytes, ParquetStats]:
    """The Parquet bytes of ``table`` (checked against ``schema``) and their statistics, built
    in memory (for small files; :class:`ParquetFileWriter` streams large ones).

    Raises :class:`ValidationError` (from :meth:`Schema.coerce_arrow`) when the table does not
    fit the schema.
    """
    table = fit_schema(table, schema)
    sink = pa.BufferOutputStream()
    collected: list[pq.FileMetaData] = []
    try:
        pq.write_table(
            table,
            sink,
            compression=options.compression,
            compression_level=options.compression_level,
            row_group_size=options.row_group_size,
            data_page_size=options.data_page_size,
            metadata_collector=collected,
        )
    except (pa.ArrowException, ValueError) as exc:
        raise ValidationError(
            f"cannot write the data as Parquet for schema {schema.schema_id}: {exc}"
        ) from exc
    data = sink.getvalue().to_pybytes()
    stats = parquet_stats(collected[0], schema, table, options.truncate_length)
    return data, stats


__all__ = [
    "DEFAULT_OPTIONS",
    "ParquetFileWriter",
    "ParquetOptions",
    "ParquetStats",
    "dictionary_columns",
    "fit_schema",
    "nan_counts",
    "parquet_stats",
    "write_parquet",
]
