"""Partition transforms give the values PyIceberg (and so Java) give, one by one and on whole
Arrow columns; a transform on a type it does not take is refused by name; a projected filter
never excludes a partition that holds a matching value."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import mmh3
import pyarrow as pa
import pytest
from pyiceberg import transforms as pyt
from pyiceberg import types as pty

from datashard.errors import SchemaError
from datashard.iceberg import types as t
from datashard.iceberg.conversions import to_physical
from datashard.iceberg.transforms import murmur3_32, parse_transform

TRANSFORMS = [
    "identity",
    "bucket[16]",
    "bucket[1000]",
    "truncate[1]",
    "truncate[3]",
    "truncate[10]",
    "year",
    "month",
    "day",
    "hour",
    "void",
]

CASES: list[tuple[t.IcebergType, Any, list[Any]]] = [
    (t.IntType(), pty.IntegerType(), [34, -1, 0, 7, 2**31 - 1, -(2**31) + 10, None]),
    (t.LongType(), pty.LongType(), [34, -7, 0, 2**62, -(2**63) + 10, None]),
    (t.StringType(), pty.StringType(), ["iceberg", "", "héllo wörld", "日本語テキスト", None]),
    (
        t.DateType(),
        pty.DateType(),
        [
            dt.date(2017, 11, 16),
            dt.date(1969, 12, 31),
            dt.date(1900, 2, 1),
            dt.date(2400, 2, 29),
            None,
        ],
    ),
    (
        t.TimestampType(),
        pty.TimestampType(),
        [
            dt.datetime(2017, 11, 16, 22, 31, 8),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
            dt.datetime(1970, 1, 1),
            dt.datetime(1850, 6, 1, 1, 2, 3),
            None,
        ],
    ),
    (
        t.TimestamptzType(),
        pty.TimestamptzType(),
        [
            dt.datetime(2017, 11, 16, 22, 31, 8, tzinfo=dt.timezone.utc),
            dt.datetime(1969, 12, 31, 23, 0, tzinfo=dt.timezone.utc),
            None,
        ],
    ),
    (t.TimeType(), pty.TimeType(), [dt.time(22, 31, 8), dt.time(0, 0), None]),
    (
        t.DecimalType(9, 2),
        pty.DecimalType(9, 2),
        [Decimal("14.20"), Decimal("-0.01"), Decimal("0.00"), Decimal("-12345.67"), None],
    ),
    (t.UUIDType(), pty.UUIDType(), [uuid.UUID("f79c3e09-677c-4bbd-a479-3f349cb785e7"), None]),
    (t.BinaryType(), pty.BinaryType(), [b"\x00\x01\x02\x03", b"", b"abcdefghijkl", None]),
    (t.FixedType(4), pty.FixedType(4), [b"\x00\x01\x02\x03", None]),
]


def test_murmur3_matches_the_reference_implementation() -> None:
    for data in [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"abcd",
        b"iceberg",
        bytes(range(255)),
        (34).to_bytes(8, "little"),
    ]:
        assert murmur3_32(data) == mmh3.hash(data)
    # the spec's example: bucket hash of int/long 34
    assert murmur3_32((34).to_bytes(8, "little")) == 2017239379


def _pyiceberg_input(source: t.IcebergType, value: Any) -> Any:
    if value is None or isinstance(source, t.UUIDType):
        return value
    return to_physical(source, value)


@pytest.mark.parametrize("source,py_type,values", CASES, ids=[str(c[0]) for c in CASES])
def test_every_transform_gives_pyicebergs_value(
    source: t.IcebergType, py_type: Any, values: list[Any]
) -> None:
    checked = 0
    for name in TRANSFORMS:
        ours = parse_transform(name)
        theirs = pyt.parse_transform(name)
        if not theirs.can_transform(py_type):
            with pytest.raises(SchemaError) as err:
                ours.check_source(source, "c")
            assert str(source) in str(err.value)
            continue
        ours.check_source(source, "c")
        fn = theirs.transform(py_type)
        for v in values:
            expected = fn(_pyiceberg_input(source, v))
            got = ours.apply(source, v)
            assert got == expected, (name, source, v)
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("source,py_type,values", CASES, ids=[str(c[0]) for c in CASES])
def test_arrow_columns_transform_like_single_values(
    source: t.IcebergType, py_type: Any, values: list[Any]
) -> None:
    if isinstance(source, t.UUIDType):
        storage = pa.array([None if v is None else v.bytes for v in values], pa.binary(16))
        array = pa.ExtensionArray.from_storage(t.to_arrow_type(source), storage)
    else:
        array = pa.array(values, type=t.to_arrow_type(source))
    for name in TRANSFORMS:
        tr = parse_transform(name)
        try:
            tr.check_source(source, "c")
        except SchemaError:
            continue
        out = tr.apply_arrow(source, pa.chunked_array([array]))
        result = tr.result_type(source)
        assert out.type == t.to_arrow_type(result) or name == "identity"
        got = [None if v is None else to_physical(result, v) for v in out.to_pylist()]
        if isinstance(source, t.UUIDType) and name == "identity":
            got = [None if v is None else uuid.UUID(bytes=v) for v in out.storage.to_pylist()]
        assert got == [tr.apply(source, v) for v in values], name


@pytest.mark.parametrize(
    "transform,source",
    [
        ("bucket[4]", t.BooleanType()),
        ("bucket[4]", t.DoubleType()),
        ("truncate[2]", t.DateType()),
        ("day", t.StringType()),
        ("hour", t.DateType()),
        ("year", t.LongType()),
        ("truncate[3]", t.FloatType()),
    ],
)
def test_a_transform_on_the_wrong_type_is_refused_by_name(
    transform: str, source: t.IcebergType
) -> None:
    with pytest.raises(SchemaError) as err:
        parse_transform(transform).check_source(source, "col_x")
    assert "col_x" in str(err.value) and str(source) in str(err.value)
    assert transform.split("[")[0] in str(err.value)


@pytest.mark.parametrize("text", ["bucket", "bucket[0]", "truncate[-1]", "week", "", "bucket[x]"])
def test_unknown_or_malformed_transforms_are_refused(text: str) -> None:
    with pytest.raises(SchemaError, match="transform"):
        parse_transform(text)


def test_transform_names_round_trip() -> None:
    for name in TRANSFORMS:
        assert str(parse_transform(name)) == name
    assert str(parse_transform("Days")) == "day"


_OPS = ["==", "<", "<=", ">", ">=", "in"]


def _holds(op: str, a: Any, b: tuple[Any, ...]) -> bool:
    if op == "==":
        return bool(a == b[0])
    if op == "in":
        return a in b
    if op == "<":
        return bool(a < b[0])
    if op == "<=":
        return bool(a <= b[0])
    if op == ">":
        return bool(a > b[0])
    return bool(a >= b[0])


@pytest.mark.parametrize(
    "name,source,domain",
    [
        ("day", t.TimestampType(), [i * 3_600_000_000 * 7 - 10**12 for i in range(60)]),
        ("month", t.DateType(), list(range(-400, 400, 13))),
        ("year", t.DateType(), list(range(-800, 800, 37))),
        ("hour", t.TimestampType(), [i * 1_000_000_000 - 5 * 10**10 for i in range(50)]),
        ("truncate[10]", t.LongType(), list(range(-55, 55, 3))),
        ("truncate[2]", t.StringType(), ["", "a", "ab", "abc", "abd", "b", "ba", "zz"]),
        ("bucket[8]", t.LongType(), list(range(-20, 20))),
        ("identity", t.IntType(), list(range(-5, 5))),
    ],
)
def test_projected_filters_never_exclude_a_matching_partition(
    name: str, source: t.IcebergType, domain: list[Any]
) -> None:
    tr = parse_transform(name)
    for op in _OPS:
        for lit in domain[:: max(1, len(domain) // 8)]:
            values = (lit, domain[-1]) if op == "in" else (lit,)
            projected = tr.project(source, op, values)
            if projected is None:
                continue
            pop, pvals = projected
            for v in domain:
                if _holds(op, v, values):
                    assert _holds(pop, tr.apply(source, v), pvals), (name, op, lit, v)
