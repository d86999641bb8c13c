"""Iceberg partition transforms: identity, year, month, day, hour, bucket[N], truncate[W], void.

Each transform knows which source types it takes (:meth:`Transform.check_source` raises
``SchemaError`` naming the transform and the type otherwise), the type it produces, how to apply
itself to one value and to a whole Arrow array, and how to turn a filter on its source column
into an *inclusive* filter on the partition value (any row matching the source filter lies in a
partition matching the projected one), which is what scan pruning needs.

Values are physical: dates as days since 1970-01-01, timestamps as microseconds, times as
microseconds since midnight, decimals as ``Decimal``, uuids as ``uuid.UUID``. ``bucket`` hashes
the spec's byte representation with Murmur3 x86 32-bit (seed 0): int, long, date, time,
timestamp as the 8-byte little-endian long; decimal as its unscaled big-endian two's complement
in the fewest bytes; string as UTF-8; uuid as its 16 big-endian bytes; binary and fixed as is.
The nanosecond timestamps of format version 3 (``timestamp_ns``, ``timestamptz_ns``) are taken
to microseconds (floor) first, as the spec says, so year, month, day, hour and bucket give the
same partition values as for the microsecond types; ``identity`` keeps the nanoseconds.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datashard.errors import SchemaError
from datashard.iceberg.conversions import to_physical
from datashard.iceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    FixedType,
    GeographyType,
    GeometryType,
    IcebergType,
    IntType,
    LongType,
    StringType,
    TimestampNsType,
    TimestampType,
    TimestamptzNsType,
    TimestamptzType,
    TimeType,
    UUIDType,
    VariantType,
    to_arrow_type,
)

_PARAM = re.compile(r"^(bucket|truncate)\[\s*(\d+)\s*\]$")
_NAMES = ("identity", "year", "month", "day", "hour", "bucket[N]", "truncate[W]", "void")
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000


# --------------------------------------------------------------------------------------------
# Murmur3 x86 32-bit


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """Murmur3 x86 32-bit hash of ``data`` as a signed 32-bit int (as Java and mmh3 give it)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & 0xFFFFFFFF
    n = len(data)
    nblocks = n // 4
    for i in range(nblocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * c1) & 0xFFFFFFFF
        k = _rotl32(k, 15)
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = _rotl32(h, 13)
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = data[4 * nblocks :]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if len(tail) >= 1:
        k ^= tail[0]
        k = (k * c1) & 0xFFFFFFFF
        k = _rotl32(k, 15)
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= n
    h = _fmix(h)
    return h - (1 << 32) if h & 0x80000000 else h


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def _murmur3_longs(values: np.ndarray) -> np.ndarray:
    """Murmur3 of the 8-byte little-endian form of each int64, vectorised; unsigned 32-bit."""
    u = values.astype(np.int64).view(np.uint64)
    c1, c2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
    h = np.zeros(len(u), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for k in (
            (u & np.uint64(0xFFFFFFFF)).astype(np.uint32),
            (u >> np.uint64(32)).astype(np.uint32),
        ):
            k = k * c1
            k = (k << np.uint32(15)) | (k >> np.uint32(17))
            k = k * c2
            h ^= k
            h = (h << np.uint32(13)) | (h >> np.uint32(19))
            h = h * np.uint32(5) + np.uint32(0xE6546B64)
        h ^= np.uint32(8)
        h ^= h >> np.uint32(16)
        h = h * np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h = h * np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def _decimal_bytes(value: Decimal, scale: int) -> bytes:
    unscaled = int(value.scaleb(scale).to_integral_value())
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return unscaled.to_bytes(length, "big", signed=True)


_NS_TYPES = (TimestampNsType, TimestamptzNsType)


def _micro_source(source: IcebergType) -> IcebergType:
    """The microsecond type a transform of a nanosecond timestamp works on (else ``source``)."""
    if isinstance(source, TimestampNsType):
        return TimestampType()
    if isinstance(source, TimestamptzNsType):
        return TimestamptzType()
    return source


def _micro_array(array: pa.Array) -> pa.Array:
    """Nanosecond timestamps as microsecond ones, floored (as the spec hashes them)."""
    micros = np.floor_divide(_ints(array), 1000)
    return _masked(micros, array, pa.int64()).cast(pa.timestamp("us", tz=array.type.tz))


def hash_bytes(source: IcebergType, value: Any) -> bytes:
    """The bytes ``bucket`` hashes for a physical ``value`` of type ``source``."""
    if isinstance(source, _NS_TYPES):
        return (int(value) // 1000).to_bytes(8, "little", signed=True)
    if isinstance(source, (IntType, LongType, DateType, TimeType, TimestampType, TimestamptzType)):
        return int(value).to_bytes(8, "little", signed=True)
    if isinstance(source, DecimalType):
        return _decimal_bytes(Decimal(value), source.scale)
    if isinstance(source, StringType):
        return str(value).encode("utf-8")
    if isinstance(source, UUIDType):
        return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).bytes
    return bytes(value)


# --------------------------------------------------------------------------------------------
# transforms


_TIME_SOURCES = (DateType, TimestampType, TimestamptzType, *_NS_TYPES)
_BUCKET_SOURCES = (
    *_NS_TYPES,
    IntType,
    LongType,
    DecimalType,
    DateType,
    TimeType,
    TimestampType,
    TimestamptzType,
    StringType,
    UUIDType,
    BinaryType,
    FixedType,
)
_TRUNCATE_SOURCES = (IntType, LongType, DecimalType, StringType, BinaryType)

#: A projected predicate on a partition value: (op, values), or None (no pruning possible).
Projected = tuple[str, tuple[Any, ...]] | None


@dataclass(frozen=True)
class Transform:
    """One partition transform; build with :func:`parse_transform`."""

    name: str
    param: int | None = None

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}[{self.param}]"

    # -- types -----------------------------------------------------------------------------

    def check_source(self, source: IcebergType, column: str = "?") -> None:
        """``SchemaError`` unless this transform applies to a ``source`` column."""
        ok: bool
        if self.name == "void":
            ok = source.is_primitive or isinstance(source, VariantType)
        elif self.name == "identity":
            ok = source.is_primitive and not isinstance(source, (GeometryType, GeographyType))
        elif self.name == "hour":
            ok = isinstance(source, (TimestampType, TimestamptzType, *_NS_TYPES))
        elif self.name in ("year", "month", "day"):
            ok = isinstance(source, _TIME_SOURCES)
        elif self.name == "bucket":
            ok = isinstance(source, _BUCKET_SOURCES)
        else:
            ok = isinstance(source, _TRUNCATE_SOURCES)
        if not ok:
            raise SchemaError(
                f"partition transform {self} cannot apply to column {column!r} of type "
                f"{source}; {self._accepts()}"
            )

    def _accepts(self) -> str:
        accepts = {
            "identity": "it takes any primitive type but geometry and geography",
            "void": "it takes any type",
            "hour": "it takes timestamp(tz) or timestamp(tz)_ns",
            "bucket": "it takes int, long, decimal, date, time, timestamp(tz), timestamp(tz)_ns, "
            "string, uuid, binary or fixed",
            "truncate": "it takes int, long, decimal, string or binary",
        }
        return accepts.get(self.name, "it takes date, timestamp(tz) or timestamp(tz)_ns")

    def result_type(self, source: IcebergType) -> IcebergType:
        """The type of the partition value for a ``source`` column."""
        if self.name in ("identity", "void", "truncate"):
            return source
        if self.name == "day":
            return DateType()
        return IntType()

    @property
    def preserves_order(self) -> bool:
        return self.name in ("identity", "year", "month", "day", "hour", "truncate")

    # -- values ----------------------------------------------------------------------------

    def apply(self, source: IcebergType, value: Any) -> Any:
        """The partition value of one source value (Python or physical form; ``None`` stays)."""
        if value is None or self.name == "void":
            return None
        v = to_physical(source, value)
        if self.name == "identity":
            return v
        if self.name == "bucket":
            assert self.param is not None
            return (murmur3_32(hash_bytes(source, v)) & 0x7FFFFFFF) % self.param
        if self.name == "truncate":
            assert self.param is not None
            return _truncate_value(source, v, self.param)
        if isinstance(source, _NS_TYPES):
            return _time_value(self.name, _micro_source(source), int(v) // 1000)
        return _time_value(self.name, source, int(v))

    def apply_arrow(self, source: IcebergType, array: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The partition values of a whole column, as an Arrow array of the result type."""
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks() if array.num_chunks else pa.array([], type=array.type)
        out_type = to_arrow_type(self.result_type(source))
        if self.name == "identity":
            return array
        if self.name == "void":
            return pa.nulls(len(array), type=out_type)
        if isinstance(source, _NS_TYPES) and self.name != "truncate":
            source, array = _micro_source(source), _micro_array(array)
        if self.name in ("year", "month", "day", "hour"):
            return _time_arrow(self.name, source, array)
        if self.name == "truncate" and isinstance(source, (IntType, LongType)):
            assert self.param is not None
            ints = _ints(array)
            return _masked(ints - np.mod(ints, self.param), array, out_type)
        if self.name == "truncate" and isinstance(source, StringType):
            return pc.utf8_slice_codeunits(array, 0, self.param)
        if self.name == "truncate" and isinstance(source, BinaryType):
            return pc.binary_slice(array, 0, self.param)
        if self.name == "bucket" and isinstance(
            source, (IntType, LongType, DateType, TimeType, TimestampType, TimestamptzType)
        ):
            assert self.param is not None
            hashed = (_murmur3_longs(_ints(array)) & np.uint32(0x7FFFFFFF)).astype(np.int64)
            return _masked(hashed % self.param, array, pa.int32())
        values = [self.apply(source, v) for v in _physical_list(source, array)]
        if isinstance(source, UUIDType) and self.name != "bucket":  # pragma: no cover
            values = [None if v is None else v.bytes for v in values]
        return pa.array(values, type=out_type)

    # -- projection of filters ---------------------------------------------------------------

    def project(self, source: IcebergType, op: str, values: tuple[Any, ...]) -> Projected:
        """An inclusive predicate on the partition value for ``source <op> values``.

        ``None`` when the transform cannot narrow the filter (``!=`` on most transforms, order
        comparisons on a bucket, anything on void).
        """
        if op in ("is null", "not null"):
            return None if self.name == "void" else (op, ())
        if self.name == "void":
            return None
        if self.name == "identity":
            return op, values
        try:
            mapped = tuple(self.apply(source, v) for v in values)
        except (ValueError, TypeError, ArithmeticError):
            return None
        if op == "==":
            return "==", mapped
        if op == "in":
            return "in", tuple(dict.fromkeys(mapped))
        if not self.preserves_order:
            return None
        if op in ("<", "<="):
            return "<=", mapped
        if op in (">", ">="):
            return ">=", mapped
        return None


def parse_transform(text: str | Transform) -> Transform:
    """A transform from its spec name (``"day"``, ``"bucket[16]"``, ``"truncate[4]"`` ...)."""
    if isinstance(text, Transform):
        return text
    if not isinstance(text, str):
        raise SchemaError(f"a partition transform is a string such as 'day', got {text!r}")
    name = text.strip().lower()
    if name in ("identity", "year", "month", "day", "hour", "void"):
        return Transform(name)
    if name in ("years", "months", "days", "hours"):
        return Transform(name[:-1])
    match = _PARAM.match(name)
    if match:
        param = int(match.group(2))
        if param <= 0:
            raise SchemaError(f"partition transform {text!r}: the parameter must be positive")
        return Transform(match.group(1), param)
    raise SchemaError(f"unknown partition transform {text!r}; expected one of: {', '.join(_NAMES)}")


# --------------------------------------------------------------------------------------------
# helpers


def _truncate_value(source: IcebergType, v: Any, width: int) -> Any:
    if isinstance(source, (IntType, LongType)):
        return v - (v % width)
    if isinstance(source, DecimalType):
        unscaled = int(Decimal(v).scaleb(source.scale).to_integral_value())
        return Decimal(unscaled - (unscaled % width)).scaleb(-source.scale)
    return v[:width]


def _time_value(name: str, source: IcebergType, v: int) -> int:
    if isinstance(source, DateType):
        if name == "day":
            return v
        d = dt.date(1970, 1, 1) + dt.timedelta(days=v)
    else:
        if name == "hour":
            return v // _US_PER_HOUR
        if name == "day":
            return v // _US_PER_DAY
        d = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=v)).date()
    if name == "year":
        return d.year - 1970
    return (d.year - 1970) * 12 + d.month - 1


def _ints(array: pa.Array) -> np.ndarray:
    """An int64 numpy view of an integer/temporal array, nulls as 0."""
    if pa.types.is_timestamp(array.type) or pa.types.is_time(array.type):
        array = array.cast(pa.int64())
    elif pa.types.is_date32(array.type):
        array = array.cast(pa.int32())
    filled = pc.fill_null(array, 0) if array.null_count else array
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)


def _masked(values: np.ndarray, like: pa.Array, out_type: pa.DataType) -> pa.Array:
    mask = like.is_null().to_numpy(zero_copy_only=False) if like.null_count else None
    if pa.types.is_date32(out_type):
        return pa.array(values.astype(np.int32), type=pa.int32(), mask=mask).cast(out_type)
    return pa.array(values, type=out_type, mask=mask)


def _time_arrow(name: str, source: IcebergType, array: pa.Array) -> pa.Array:
    ints = _ints(array)
    if isinstance(source, DateType):
        days = ints
        if name == "day":
            return array
    else:
        if name == "hour":
            return _masked(np.floor_divide(ints, _US_PER_HOUR), array, pa.int32())
        days = np.floor_divide(ints, _US_PER_DAY)
        if name == "day":
            return _masked(days, array, pa.date32())
    dates = days.astype("datetime64[D]")
    years = dates.astype("datetime64[Y]").astype(np.int64)
    if name == "year":
        return _masked(years, array, pa.int32())
    months = dates.astype("datetime64[M]").astype(np.int64)
    return _masked(months, array, pa.int32())


def _physical_list(source: IcebergType, array: pa.Array) -> list[Any]:
    values: list[Any] = array.to_pylist()
    if isinstance(source, UUIDType):
        return [
            v if v is None or isinstance(v, uuid.UUID) else uuid.UUID(bytes=bytes(v))
            for v in values
        ]
    return values


__all__ = [
    "Transform",
    "hash_bytes",
    "murmur3_32",
    "parse_transform",
]
