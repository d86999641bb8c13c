"""Single-value serialization: the spec's byte layouts, byte for byte as PyIceberg writes them."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pyiceberg import conversions as theirs
from pyiceberg.types import (
    BinaryType as TBinary,
)
from pyiceberg.types import (
    BooleanType as TBoolean,
)
from pyiceberg.types import (
    DateType as TDate,
)
from pyiceberg.types import (
    DecimalType as TDecimal,
)
from pyiceberg.types import (
    DoubleType as TDouble,
)
from pyiceberg.types import (
    FixedType as TFixed,
)
from pyiceberg.types import (
    FloatType as TFloat,
)
from pyiceberg.types import (
    IntegerType as TInt,
)
from pyiceberg.types import (
    LongType as TLong,
)
from pyiceberg.types import (
    StringType as TString,
)
from pyiceberg.types import (
    TimestampType as TTimestamp,
)
from pyiceberg.types import (
    TimestamptzType as TTimestamptz,
)
from pyiceberg.types import (
    TimeType as TTime,
)
from pyiceberg.types import (
    UUIDType as TUUID,
)

from datashard.errors import ValidationError
from datashard.iceberg.conversions import (
    from_bytes,
    to_bytes,
    to_physical,
    to_python,
    truncate_lower_bound,
    truncate_upper_bound,
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

U = uuid.UUID("f79c3e09-677c-4bbd-a479-3f349cb785e7")

SPEC_EXAMPLES: list[tuple[IcebergType, Any, bytes]] = [
    (BooleanType(), True, b"\x01"),
    (BooleanType(), False, b"\x00"),
    (IntType(), 1, b"\x01\x00\x00\x00"),
    (IntType(), -1, b"\xff\xff\xff\xff"),
    (LongType(), 34, b"\x22\x00\x00\x00\x00\x00\x00\x00"),
    (FloatType(), 1.0, b"\x00\x00\x80\x3f"),
    (DoubleType(), 1.0, b"\x00\x00\x00\x00\x00\x00\xf0\x3f"),
    (DateType(), dt.date(1970, 1, 2), b"\x01\x00\x00\x00"),
    (TimeType(), dt.time(0, 0, 1), (1_000_000).to_bytes(8, "little")),
    (TimestampType(), dt.datetime(1970, 1, 1, 0, 0, 1), (1_000_000).to_bytes(8, "little")),
    (
        TimestamptzType(),
        dt.datetime(1970, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        b"\x00" * 8,
    ),
    (StringType(), "iceberg", b"iceberg"),
    (StringType(), "é", "é".encode()),
    (UUIDType(), U, U.bytes),
    (FixedType(3), b"abc", b"abc"),
    (BinaryType(), b"\x00\xff", b"\x00\xff"),
    (DecimalType(5, 2), Decimal("14.20"), b"\x05\x8c"),
    (DecimalType(5, 2), Decimal("-14.20"), (-1420).to_bytes(2, "big", signed=True)),
    (DecimalType(3, 0), Decimal("127"), b"\x7f"),
    (DecimalType(3, 0), Decimal("128"), b"\x00\x80"),
    (DecimalType(3, 0), Decimal("-128"), b"\x80"),
    (DecimalType(3, 0), Decimal("0"), b"\x00"),
    (DecimalType(9, 4), Decimal("1.5"), (15000).to_bytes(2, "big", signed=True)),
]


@pytest.mark.parametrize(("t", "value", "expected"), SPEC_EXAMPLES, ids=lambda x: str(x)[:20])
def test_values_serialize_to_the_spec_layout(t: IcebergType, value: Any, expected: bytes) -> None:
    assert to_bytes(t, value) == expected
    assert to_python(t, from_bytes(t, expected)) == (
        value if not isinstance(t, DecimalType) else value.quantize(Decimal(1).scaleb(-t.scale))
    ) or isinstance(t, TimestamptzType)


THEIRS = {
    BooleanType(): TBoolean(),
    IntType(): TInt(),
    LongType(): TLong(),
    FloatType(): TFloat(),
    DoubleType(): TDouble(),
    DateType(): TDate(),
    TimeType(): TTime(),
    TimestampType(): TTimestamp(),
    TimestamptzType(): TTimestamptz(),
    StringType(): TString(),
    UUIDType(): TUUID(),
    BinaryType(): TBinary(),
    FixedType(3): TFixed(3),
    DecimalType(5, 2): TDecimal(5, 2),
}


@pytest.mark.parametrize(("t", "value", "expected"), SPEC_EXAMPLES, ids=lambda x: str(x)[:20])
def test_bytes_match_pyiceberg_byte_for_byte(t: IcebergType, value: Any, expected: bytes) -> None:
    their_type = THEIRS.get(t) or (
        TDecimal(t.precision, t.scale)
        if isinstance(t, DecimalType)
        else TFixed(t.length)
        if isinstance(t, FixedType)
        else None
    )
    assert their_type is not None
    physical = to_physical(t, value)
    if isinstance(t, DecimalType):  # PyIceberg wants the value already at the type's scale
        physical = physical.quantize(Decimal(1).scaleb(-t.scale))
    assert theirs.to_bytes(their_type, physical) == to_bytes(t, value)
    assert from_bytes(t, to_bytes(t, value)) == to_physical(
        t, theirs.from_bytes(their_type, expected)
    )


def test_timestamps_before_the_epoch_and_dates_round_trip() -> None:
    ts = dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    assert from_bytes(TimestampType(), to_bytes(TimestampType(), ts)) == -1
    assert to_python(TimestampType(), -1) == ts
    assert to_python(
        DateType(), from_bytes(DateType(), to_bytes(DateType(), dt.date(1900, 1, 1)))
    ) == dt.date(1900, 1, 1)


@pytest.mark.parametrize(
    ("t", "value", "expected"),
    [
        (IntType(), 2**31, "Iceberg int"),
        (StringType(), 5, "Iceberg string"),
        (FixedType(4), b"abc", "length 3, expected 4"),
        (DecimalType(5, 2), Decimal("1.234"), "more than 2 digits"),
        (BooleanType(), 1, "Iceberg boolean"),
    ],
)
def test_values_that_do_not_fit_raise_validation_error(
    t: IcebergType, value: Any, expected: str
) -> None:
    with pytest.raises(ValidationError, match=expected):
        to_bytes(t, value)


def test_wrong_length_bytes_raise_validation_error() -> None:
    with pytest.raises(ValidationError, match="bad long bound"):
        from_bytes(LongType(), b"\x01\x02")


def test_truncated_bounds_still_bound_the_value() -> None:
    s = "abcdefghijklmnopqrstuvwxyz"
    lo = truncate_lower_bound(StringType(), s, 16)
    hi = truncate_upper_bound(StringType(), s, 16)
    assert lo == s[:16] and lo <= s
    assert hi == "abcdefghijklmnoq" and hi > s
    assert truncate_upper_bound(StringType(), "a" + "\U0010ffff" * 20, 3) == "b"
    assert truncate_upper_bound(StringType(), "\U0010ffff" * 20, 3) is None
    assert truncate_upper_bound(BinaryType(), b"\x01\xff\xff\xff", 3) == b"\x02"
    assert truncate_upper_bound(BinaryType(), b"\xff" * 5, 3) is None
    assert truncate_upper_bound(StringType(), "short", 16) == "short"


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1))
def test_any_decimal38_round_trips_in_the_fewest_bytes(unscaled: int) -> None:
    t = DecimalType(38, 4)
    digits = tuple(int(c) for c in str(abs(unscaled)))
    value = Decimal((int(unscaled < 0), digits, -4))
    data = to_bytes(t, value)
    assert from_bytes(t, data) == value
    assert data == theirs.to_bytes(TDecimal(38, 4), value)


@given(st.text(min_size=0, max_size=40), st.integers(min_value=1, max_value=20))
def test_truncated_string_bounds_enclose_the_value(value: str, length: int) -> None:
    lo = truncate_lower_bound(StringType(), value, length)
    hi = truncate_upper_bound(StringType(), value, length)
    assert lo.encode() <= value.encode()
    if hi is not None:
        assert value.encode() <= hi.encode() or value[:length] == value
        assert len(hi) <= length
