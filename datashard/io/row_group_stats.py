"""Whether a Parquet row group may hold rows a filter keeps, from its column statistics.

The same test a scan runs on a data file's manifest statistics
(:func:`datashard.iceberg.expressions.might_match`), run on each row group's column chunk
statistics: min, max, null count and value count of each top-level primitive column, matched to
the filter's columns by Parquet field id. Statistics are turned into Iceberg's physical values
(days for a date, microseconds for a timestamp, ``Decimal`` for a decimal ...) from their
Parquet physical and logical types. Anything unknown (a missing statistic, an INT96 timestamp,
a string bound that is not UTF-8, a NaN) proves nothing: the row group is read.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq

from datashard.iceberg.expressions import (
    Bound,
    BoundAnd,
    BoundOr,
    BoundPredicate,
    BoundTrue,
    might_match,
)
from datashard.iceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IcebergType,
    IntType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

#: Microseconds per unit of a Parquet TIME / TIMESTAMP logical type.
_TO_MICROS = {"milliseconds": 1000, "microseconds": 1}


def bound_field_ids(bound: Bound) -> set[int]:
    """The field ids a bound filter reads."""
    if isinstance(bound, BoundPredicate):
        return {bound.field_id}
    if isinstance(bound, (BoundAnd, BoundOr)):
        return bound_field_ids(bound.left) | bound_field_ids(bound.right)
    return set()


@dataclass
class RowGroupStats:
    """One row group's statistics in the shape :func:`might_match` reads (a ``FileStats``)."""

    record_count: int
    value_counts: dict[int, int] = field(default_factory=dict)
    null_value_counts: dict[int, int] = field(default_factory=dict)
    lower_bounds: dict[int, Any] = field(default_factory=dict)
    upper_bounds: dict[int, Any] = field(default_factory=dict)


def row_group_stats(
    metadata: pq.FileMetaData,
    row_group: int,
    leaves: Mapping[int, int],
    types: Mapping[int, IcebergType],
) -> RowGroupStats:
    """The statistics of row group ``row_group`` for the fields ``leaves`` (field id -> leaf
    column index of a top-level primitive column), as physical values of ``types``."""
    rg = metadata.row_group(row_group)
    out = RowGroupStats(rg.num_rows)
    for fid, leaf in leaves.items():
        chunk = rg.column(leaf)
        stats = chunk.statistics
        out.value_counts[fid] = chunk.num_values
        if stats is None:
            continue
        if stats.has_null_count:
            out.null_value_counts[fid] = stats.null_count
        if not stats.has_min_max or fid not in types:
            continue
        logical = metadata.schema.column(leaf).logical_type
        lo = _physical(types[fid], stats.physical_type, logical, stats.min_raw, up=False)
        hi = _physical(types[fid], stats.physical_type, logical, stats.max_raw, up=True)
        if lo is not None and hi is not None:
            out.lower_bounds[fid] = lo
            out.upper_bounds[fid] = hi
    return out


def row_group_might_match(
    bound: Bound,
    metadata: pq.FileMetaData,
    row_group: int,
    leaves: Mapping[int, int],
    types: Mapping[int, IcebergType],
) -> bool:
    """Whether row group ``row_group`` may hold a row ``bound`` keeps (``False`` only when its
    statistics prove none can)."""
    if isinstance(bound, BoundTrue):
        return True
    wanted = bound_field_ids(bound)
    stats = row_group_stats(
        metadata, row_group, {f: c for f, c in leaves.items() if f in wanted}, types
    )
    return might_match(bound, stats, _as_is)


def _as_is(_type: Any, value: Any) -> Any:
    return value


def _physical(t: IcebergType, physical: str, logical: Any, raw: Any, up: bool) -> Any:
    """A raw Parquet statistic as the physical value of Iceberg type ``t``, or ``None``."""
    kind = logical.type
    if isinstance(t, BooleanType):
        return bool(raw) if physical == "BOOLEAN" else None
    if isinstance(t, (IntType, LongType, DateType)):
        return int(raw) if physical in ("INT32", "INT64") else None
    if isinstance(t, (FloatType, DoubleType)):
        if physical not in ("FLOAT", "DOUBLE", "INT32", "INT64"):
            return None
        value = float(raw)
        return None if math.isnan(value) else value
    if isinstance(t, (TimeType, TimestampType, TimestamptzType)):
        if physical not in ("INT32", "INT64") or kind not in ("TIME", "TIMESTAMP"):
            return None
        unit = json.loads(logical.to_json()).get("timeUnit")
        if unit == "nanoseconds":  # round outward: still a bound of every value
            return -(-int(raw) // 1000) if up else int(raw) // 1000
        factor = _TO_MICROS.get(unit)
        return None if factor is None else int(raw) * factor
    if isinstance(t, StringType):
        if not isinstance(raw, bytes):
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(t, (BinaryType, FixedType)):
        return bytes(raw) if isinstance(raw, bytes) else None
    if isinstance(t, UUIDType):
        return uuid.UUID(bytes=raw) if isinstance(raw, bytes) and len(raw) == 16 else None
    if isinstance(t, DecimalType):
        if isinstance(raw, bytes):
            unscaled = int.from_bytes(raw, "big", signed=True)
        elif physical in ("INT32", "INT64"):
            unscaled = int(raw)
        else:
            return None
        digits = tuple(int(c) for c in str(abs(unscaled)))
        return Decimal((1 if unscaled < 0 else 0, digits, -t.scale))
    return None


__all__ = ["RowGroupStats", "bound_field_ids", "row_group_might_match", "row_group_stats"]
