"""Iceberg binary single-value serialization (the spec's Appendix D), used for column bounds.

:func:`to_bytes` / :func:`from_bytes` convert one value of a primitive type:

=============== ==========================================================================
type            bytes
=============== ==========================================================================
boolean         one byte, ``0x00`` false, ``0x01`` true
int, date       4-byte little-endian two's complement (date: days since 1970-01-01)
long, time,     8-byte little-endian two's complement (microseconds since midnight / the
timestamp(tz)   epoch; timestamptz in UTC)
timestamp(tz)   8-byte little-endian two's complement, nanoseconds since the epoch (format
_ns             version 3)
float, double   IEEE 754 little-endian, 4 / 8 bytes
decimal         the unscaled value, big-endian two's complement, fewest bytes
string          UTF-8, no length prefix
uuid            16 bytes, big-endian (``UUID.bytes``)
fixed, binary   the bytes as they are
=============== ==========================================================================

:func:`from_bytes` returns the *physical* value: ``int`` days for date, ``int`` microseconds for
time and timestamps (``int`` nanoseconds for the ``_ns`` timestamps), ``Decimal`` for decimal,
``uuid.UUID`` for uuid. :func:`to_physical`
turns a Python value (``date``, ``datetime``, ``time``, ...) into that form and
:func:`to_python` back, so callers compare filter literals with decoded bounds directly.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal
from typing import Any

from datashard.errors import ValidationError
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
    TimestampNsType,
    TimestampType,
    TimestamptzNsType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

_NS_TYPES = (TimestampNsType, TimestamptzNsType)

_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_TZ = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)

_INT = struct.Struct("<i")
_LONG = struct.Struct("<q")
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


def _bad(t: IcebergType, value: Any, why: str = "") -> ValidationError:
    extra = f": {why}" if why else ""
    return ValidationError(
        f"cannot serialize {type(value).__name__} {value!r:.60} as Iceberg {t}{extra}"
    )


def to_physical(t: IcebergType, value: Any) -> Any:
    """``value`` in the physical form of ``t`` (days, microseconds, unscaled Decimal ...).

    Accepts the Python forms (``date``, ``datetime``, ``time``, ``uuid.UUID``, ``str``) and the
    physical forms themselves. Raises :class:`ValidationError` for a value that does not fit.
    """
    if isinstance(t, DateType):
        if isinstance(value, dt.datetime):
            raise _bad(t, value, "a date column takes datetime.date, not datetime")
        if isinstance(value, dt.date):
            return (value - _EPOCH_DATE).days
    elif isinstance(t, TimeType):
        if isinstance(value, dt.time):
            return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + (
                value.microsecond
            )
    elif isinstance(t, (TimestampType, TimestamptzType)):
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                return (value - _EPOCH) // _US
            return (value - _EPOCH_TZ) // _US
        if isinstance(value, dt.date):
            return (dt.datetime(value.year, value.month, value.day) - _EPOCH) // _US
    elif isinstance(t, _NS_TYPES):
        if isinstance(value, dt.datetime):
            micros = to_physical(TimestampType(), value)
            return micros * 1000 + int(getattr(value, "nanosecond", 0))  # pandas.Timestamp
        if isinstance(value, dt.date):
            return to_physical(TimestampType(), value) * 1000
    elif isinstance(t, UUIDType):
        if isinstance(value, str):
            return uuid.UUID(value)
        if isinstance(value, (bytes, bytearray)) and len(value) == 16:
            return uuid.UUID(bytes=bytes(value))
    elif isinstance(t, DecimalType):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    elif isinstance(t, (FloatType, DoubleType)):
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


def to_python(t: IcebergType, value: Any) -> Any:
    """The Python form of a physical value: ``date``, ``time``, ``datetime`` (UTC-aware for
    timestamptz); other types unchanged."""
    if value is None:
        return None
    if isinstance(t, DateType):
        return _EPOCH_DATE + dt.timedelta(days=value)
    if isinstance(t, TimeType):
        seconds, micros = divmod(value, 1_000_000)
        minutes, sec = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        return dt.time(hours, minute, sec, micros)
    if isinstance(t, TimestampType):
        return _EPOCH + dt.timedelta(microseconds=value)
    if isinstance(t, TimestamptzType):
        return _EPOCH_TZ + dt.timedelta(microseconds=value)
    if isinstance(t, _NS_TYPES):  # datetime holds microseconds: the nanoseconds are dropped
        return to_python(
            TimestampType() if isinstance(t, TimestampNsType) else TimestamptzType(), value // 1000
        )
    return value


def to_bytes(t: IcebergType, value: Any) -> bytes:
    """The spec's single-value binary form of ``value`` (Python or physical form) as type ``t``.

    Raises :class:`ValidationError` when the value does not fit the type.
    """
    v = to_physical(t, value)
    try:
        if isinstance(t, BooleanType):
            if isinstance(v, bool):
                return b"\x01" if v else b"\x00"
        elif isinstance(t, (IntType, DateType)):
            if isinstance(v, int) and not isinstance(v, bool):
                return _INT.pack(v)
        elif isinstance(t, (LongType, TimeType, TimestampType, TimestamptzType, *_NS_TYPES)):
            if isinstance(v, int) and not isinstance(v, bool):
                return _LONG.pack(v)
        elif isinstance(t, FloatType):
            if isinstance(v, float):
                return _FLOAT.pack(v)
        elif isinstance(t, DoubleType):
            if isinstance(v, float):
                return _DOUBLE.pack(v)
        elif isinstance(t, StringType):
            if isinstance(v, str):
                return v.encode("utf-8")
        elif isinstance(t, UUIDType):
            if isinstance(v, uuid.UUID):
                return v.bytes
        elif isinstance(t, FixedType):
            if isinstance(v, (bytes, bytearray, memoryview)):
                if len(v) != t.length:
                    raise _bad(t, value, f"length {len(v)}, expected {t.length}")
                return bytes(v)
        elif isinstance(t, BinaryType):
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
        elif isinstance(t, DecimalType):
            if isinstance(v, Decimal):
                return _decimal_to_bytes(t, v, value)
    except struct.error as exc:
        raise _bad(t, value, str(exc)) from None
    raise _bad(t, value)


def decimal_unscaled(value: Decimal, scale: int) -> int | None:
    """The unscaled integer of ``value`` at ``scale``, exactly; ``None`` when it has more
    decimals than ``scale`` or is not finite. Never rounds (no decimal context involved)."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return None
    magnitude = int("".join(map(str, digits)) or "0")
    shift = exponent + scale
    factor: int = 10 ** abs(shift)
    if shift >= 0:
        magnitude *= factor
    else:
        magnitude, rest = divmod(magnitude, factor)
        if rest:
            return None
    return -magnitude if sign else magnitude


def _decimal_to_bytes(t: DecimalType, v: Decimal, original: Any) -> bytes:
    unscaled = decimal_unscaled(v, t.scale)
    if unscaled is None:
        raise _bad(t, original, f"more than {t.scale} digits after the point, or not finite")
    if len(str(abs(unscaled))) > t.precision:
        raise _bad(t, original, f"more than {t.precision} digits")
    return unscaled_to_bytes(unscaled)


def unscaled_to_bytes(unscaled: int) -> bytes:
    """Big-endian two's complement of ``unscaled`` in the fewest bytes (at least one)."""
    length = max(1, (unscaled + (unscaled < 0)).bit_length() // 8 + 1)
    return unscaled.to_bytes(length, "big", signed=True)


def from_bytes(t: IcebergType, data: bytes) -> Any:
    """The physical value encoded by :func:`to_bytes`.

    Raises :class:`ValidationError` when ``data`` has the wrong length for ``t``.
    """
    try:
        if isinstance(t, BooleanType):
            if len(data) != 1:
                raise struct.error(f"expected 1 byte, got {len(data)}")
            return data != b"\x00"
        if isinstance(t, (IntType, DateType)):
            return _INT.unpack(data)[0]
        if isinstance(t, (LongType, TimeType, TimestampType, TimestamptzType, *_NS_TYPES)):
            return _LONG.unpack(data)[0]
        if isinstance(t, FloatType):
            return _FLOAT.unpack(data)[0]
        if isinstance(t, DoubleType):
            return _DOUBLE.unpack(data)[0]
        if isinstance(t, StringType):
            return bytes(data).decode("utf-8")
        if isinstance(t, UUIDType):
            return uuid.UUID(bytes=bytes(data))
        if isinstance(t, (FixedType, BinaryType)):
            return bytes(data)
        if isinstance(t, DecimalType):
            unscaled = int.from_bytes(data, "big", signed=True)
            digits = tuple(int(c) for c in str(abs(unscaled)))
            return Decimal((1 if unscaled < 0 else 0, digits, -t.scale))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"bad {t} bound {bytes(data)!r:.60}: {exc}") from None
    raise ValidationError(f"type {t} has no single-value serialization")


def truncate_lower_bound(t: IcebergType, value: Any, length: int) -> Any:
    """A lower bound no longer than ``length`` characters (string) or bytes (binary).

    A prefix is always <= the value, so truncation keeps it a valid lower bound. Other types
    pass through.
    """
    if isinstance(t, (StringType, BinaryType)) and len(value) > length:
        return value[:length]
    return value


def truncate_upper_bound(t: IcebergType, value: Any, length: int) -> Any | None:
    """An upper bound no longer than ``length`` characters/bytes, or ``None`` if none exists.

    The prefix is incremented at its last position that can be incremented (a code point below
    U+10FFFF outside the surrogates, or a byte below 0xFF), so the result is >= every value
    with that prefix. ``None`` means no short bound exists: write no upper bound then.
    """
    if isinstance(t, StringType) and len(value) > length:
        chars = list(value[:length])
        for i in range(len(chars) - 1, -1, -1):
            code = ord(chars[i]) + 1
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000
            if code <= 0x10FFFF:
                return "".join(chars[:i]) + chr(code)
        return None
    if isinstance(t, BinaryType) and len(value) > length:
        raw = bytearray(value[:length])
        for i in range(len(raw) - 1, -1, -1):
            if raw[i] < 0xFF:
                raw[i] += 1
                return bytes(raw[: i + 1])
        return None
    return value


__all__ = [
    "from_bytes",
    "to_bytes",
    "to_physical",
    "to_python",
    "truncate_lower_bound",
    "truncate_upper_bound",
    "decimal_unscaled",
    "unscaled_to_bytes",
]
