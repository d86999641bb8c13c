"""Writing Parquet data files with Iceberg field ids, and their :class:`DataFile` statistics.

Every Parquet column carries its Iceberg field id (pyarrow writes the ``PARQUET:field_id`` Arrow
metadata as the Parquet field id). Statistics come from the Parquet footer the writer just
produced, never from re-reading the file: per leaf column (nested ones by their own field id)
``column_sizes`` (compressed bytes), ``value_counts`` (values including nulls), and
``null_value_counts``; ``nan_value_counts`` for float/double columns; ``lower_bounds`` and
``upper_bounds`` in the spec's single-value serialization for every leaf that is not inside a
list or map, with strings and binary truncated to 16 characters/bytes (Iceberg's default
``truncate(16)`` metrics mode); ``split_offsets`` at the start of every row group.

Defaults: zstd compression, row groups of at most 1,048,576 rows, 1 MiB data pages.
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
    ``row_group_size`` is in rows; ``truncate_length`` bounds string/binary column bounds.
    """

    compression: str = "zstd"
    compression_level: int | None = None
    row_group_size: int = 1_048_576
    data_page_size: int = 1 << 20
    truncate_length: int = 16

    def __post_init__(self) -> None:
        if self.row_group_size < 1 or self.data_page_size < 1 or self.truncate_length < 1:
            raise ValidationError(
                f"ParquetOptions: row_group_size ({self.row_group_size}), data_page_size "
                f"({self.data_page_size}) and truncate_length ({self.truncate_length}) must be "
                "positive"
            )


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


def parquet_stats(
    metadata: pq.FileMetaData,
    schema: Schema,
    table: pa.Table | None = None,
    truncate_length: int = 16,
) -> ParquetStats:
    """Iceberg column statistics from a Parquet footer written for ``schema``.

    ``table`` (the data just written) is used only to count NaNs in float/double columns.
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
    nans: dict[int, int] = {}
    if table is not None:
        for leaf in leaves:
            if isinstance(leaf.field_type, (FloatType, DoubleType)) and leaf.path:
                nans[leaf.field_id] = _nan_count(table, leaf.path)
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
        nan_value_counts=nans,
        lower_bounds=lower,
        upper_bounds=upper,
        split_offsets=tuple(offsets),
    )


def write_parquet(
    table: pa.Table, schema: Schema, options: ParquetOptions = DEFAULT_OPTIONS
) -> tuple[bytes, ParquetStats]:
    """The Parquet bytes of ``table`` (checked against ``schema``) and their statistics.

    Raises :class:`ValidationError` (from :meth:`Schema.coerce_arrow`) when the table does not
    fit the schema.
    """
    target = schema.to_arrow()
    if not table.schema.equals(target, check_metadata=True):
        table = schema.coerce_arrow(table)
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
    "ParquetOptions",
    "ParquetStats",
    "parquet_stats",
    "write_parquet",
]
