"""Iceberg types: JSON form, Arrow mapping, and agreement with PyIceberg's reading of both."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.io.pyarrow import pyarrow_to_schema, schema_to_pyarrow
from pyiceberg.schema import Schema as PyIcebergSchema

from datashard.errors import SchemaError
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
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
    from_arrow_type,
    parse_type,
    to_arrow_type,
    type_to_json,
)

PRIMITIVES: list[tuple[str, IcebergType]] = [
    ("boolean", BooleanType()),
    ("int", IntType()),
    ("long", LongType()),
    ("float", FloatType()),
    ("double", DoubleType()),
    ("decimal(9,2)", DecimalType(9, 2)),
    ("decimal(38,0)", DecimalType(38, 0)),
    ("date", DateType()),
    ("time", TimeType()),
    ("timestamp", TimestampType()),
    ("timestamptz", TimestamptzType()),
    ("string", StringType()),
    ("uuid", UUIDType()),
    ("binary", BinaryType()),
    ("fixed[16]", FixedType(16)),
]

NESTED: list[IcebergType] = [
    StructType((NestedField(10, "a", IntType(), True), NestedField(11, "b", StringType(), False))),
    ListType(12, LongType(), element_required=False),
    ListType(13, StructType((NestedField(14, "x", DoubleType(), True),)), True),
    MapType(15, StringType(), 16, DecimalType(10, 3), value_required=False),
    MapType(17, IntType(), 18, ListType(19, DateType(), True), True),
]


@pytest.mark.parametrize(("text", "expected"), PRIMITIVES, ids=[p[0] for p in PRIMITIVES])
def test_primitive_type_strings_parse_and_print_back(text: str, expected: IcebergType) -> None:
    assert parse_type(text) == expected
    assert type_to_json(expected) == text
    assert str(expected) == text


def test_type_strings_tolerate_spaces_and_case() -> None:
    assert parse_type("Decimal( 9, 2 )") == DecimalType(9, 2)
    assert parse_type(" LONG ") == LongType()
    assert parse_type("fixed[ 4 ]") == FixedType(4)


@pytest.mark.parametrize("t", [t for _, t in PRIMITIVES] + NESTED, ids=str)
def test_every_type_round_trips_through_json_and_arrow(t: IcebergType) -> None:
    assert parse_type(json.loads(json.dumps(type_to_json(t)))) == t
    assert from_arrow_type(to_arrow_type(t)) == t


@pytest.mark.parametrize("t", [t for _, t in PRIMITIVES] + NESTED, ids=str)
def test_pyiceberg_reads_our_type_json_and_arrow_as_the_same_type(t: IcebergType) -> None:
    doc = {
        "type": "struct",
        "schema-id": 0,
        "fields": [{"id": 1, "name": "c", "required": False, "type": type_to_json(t)}],
    }
    theirs = PyIcebergSchema.model_validate_json(json.dumps(doc))
    their_json = json.loads(theirs.model_dump_json(by_alias=True))["fields"][0]["type"]
    assert parse_type(their_json) == t
    arrow_theirs = schema_to_pyarrow(theirs)
    assert from_arrow_type(arrow_theirs.field("c").type) == t
    back = pyarrow_to_schema(
        pa.schema([pa.field("c", to_arrow_type(t), metadata={b"PARQUET:field_id": b"1"})])
    )
    assert parse_type(json.loads(back.model_dump_json(by_alias=True))["fields"][0]["type"]) == t


def test_unknown_type_string_names_it_and_the_valid_types() -> None:
    with pytest.raises(SchemaError) as info:
        parse_type("bigint")
    assert "'bigint'" in str(info.value)
    assert "long" in str(info.value) and "decimal(P,S)" in str(info.value)


@pytest.mark.parametrize("bad", ["decimal(39,0)", "decimal(5,6)", "fixed[0]", 42, None, {}])
def test_invalid_types_raise_schema_error(bad: object) -> None:
    with pytest.raises(SchemaError):
        parse_type(bad)


def test_arrow_mapping_matches_what_pyiceberg_reads_and_writes() -> None:
    assert to_arrow_type(TimestampType()) == pa.timestamp("us")
    assert to_arrow_type(TimestamptzType()) == pa.timestamp("us", tz="UTC")
    assert to_arrow_type(TimeType()) == pa.time64("us")
    assert to_arrow_type(UUIDType()) == pa.uuid()
    assert to_arrow_type(DecimalType(9, 2)) == pa.decimal128(9, 2)
    assert to_arrow_type(FixedType(3)) == pa.binary(3)


def test_arrow_types_widen_to_the_nearest_iceberg_type() -> None:
    assert from_arrow_type(pa.int8()) == IntType()
    assert from_arrow_type(pa.uint16()) == IntType()
    assert from_arrow_type(pa.uint32()) == LongType()
    assert from_arrow_type(pa.large_string()) == StringType()
    assert from_arrow_type(pa.timestamp("ns")) == TimestampType()
    assert from_arrow_type(pa.timestamp("ms", tz="+00:00")) == TimestamptzType()
    assert from_arrow_type(pa.dictionary(pa.int32(), pa.string())) == StringType()
    assert from_arrow_type(pa.binary(16)) == FixedType(16)


@pytest.mark.parametrize("bad", [pa.uint64(), pa.timestamp("us", tz="Europe/Paris"), pa.null()])
def test_arrow_types_iceberg_cannot_hold_raise_schema_error(bad: pa.DataType) -> None:
    with pytest.raises(SchemaError, match="col"):
        from_arrow_type(bad, name="col")


def test_nested_arrow_type_without_field_ids_needs_an_allocator() -> None:
    with pytest.raises(SchemaError, match="PARQUET:field_id"):
        from_arrow_type(pa.list_(pa.int64()), name="xs")
    ids = iter(range(100, 200))
    assert from_arrow_type(pa.list_(pa.int64()), lambda: next(ids)) == ListType(
        100, LongType(), False
    )


# --- property: any nested type survives JSON, Arrow and a Schema built from Arrow -----------

from itertools import count  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from datashard.iceberg.schema import Schema  # noqa: E402

_PRIMS = st.sampled_from([t for _, t in PRIMITIVES])


def _nested(ids: Any) -> Any:
    def build(children: Any) -> Any:
        return st.one_of(
            st.builds(
                lambda ts, req: StructType(
                    tuple(
                        NestedField(next(ids), f"f{i}", t, r)
                        for i, (t, r) in enumerate(zip(ts, req, strict=False))
                    )
                ),
                st.lists(children, min_size=1, max_size=3),
                st.lists(st.booleans(), min_size=3, max_size=3),
            ),
            st.builds(lambda t, r: ListType(next(ids), t, r), children, st.booleans()),
            st.builds(
                lambda k, v, r: MapType(next(ids), k, next(ids), v, r),
                st.sampled_from([StringType(), IntType(), LongType()]),
                children,
                st.booleans(),
            ),
        )

    return st.recursive(_PRIMS, build, max_leaves=6)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_nested_type_round_trips(data: Any) -> None:
    ids = count(100)
    t = data.draw(_nested(ids))
    assert parse_type(json.loads(json.dumps(type_to_json(t)))) == t
    assert from_arrow_type(to_arrow_type(t)) == t
    schema = Schema(0, [NestedField(1, "c", t, False)])
    assert Schema.from_arrow(schema.to_arrow()) == schema
    assert Schema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


# --------------------------------------------------------------------------------------------
# format version 3 types


V3_TYPES: list[tuple[str, str, pa.DataType]] = [
    # JSON form, str, Arrow type
    ("timestamp_ns", "timestamp_ns", pa.timestamp("ns")),
    ("timestamptz_ns", "timestamptz_ns", pa.timestamp("ns", tz="UTC")),
    ("unknown", "unknown", pa.null()),
    ("geometry", "geometry", pa.binary()),
    ("geometry(EPSG:3857)", "geometry(EPSG:3857)", pa.binary()),
    ("geography", "geography", pa.binary()),
    ("geography(OGC:CRS84, karney)", "geography(OGC:CRS84, karney)", pa.binary()),
    # Java writes the default CRS and algorithm out, PyIceberg quotes them
    ("geometry(OGC:CRS84)", "geometry", pa.binary()),
    ("geography(OGC:CRS84, spherical)", "geography", pa.binary()),
    ("geometry('EPSG:3857')", "geometry(EPSG:3857)", pa.binary()),
    ("geography('EPSG:4326', 'vincenty')", "geography(EPSG:4326, vincenty)", pa.binary()),
]


@pytest.mark.parametrize(("text", "name", "arrow"), V3_TYPES)
def test_v3_types_parse_print_and_map_to_arrow(text: str, name: str, arrow: pa.DataType) -> None:
    t = parse_type(text)
    assert str(t) == name
    assert type_to_json(t) == name
    assert parse_type(type_to_json(t)) == t
    assert to_arrow_type(t) == arrow


def test_v3_types_match_pyiceberg_json() -> None:
    from pyiceberg.types import NestedField as PyField

    for text in ("timestamp_ns", "timestamptz_ns", "unknown", "geometry('EPSG:3857')"):
        field = PyField.model_validate({"id": 1, "name": "c", "type": text, "required": False})
        assert parse_type(json.loads(field.model_dump_json())["type"]) == parse_type(text)


def test_a_geography_with_an_unknown_edge_algorithm_is_refused_by_name() -> None:
    with pytest.raises(SchemaError, match="'bogus'.*spherical"):
        parse_type("geography(OGC:CRS84, bogus)")


def test_a_variant_column_is_refused_by_name_when_read() -> None:
    from datashard.errors import UnsupportedFeatureError
    from datashard.iceberg.types import to_arrow_field

    with pytest.raises(UnsupportedFeatureError, match="'doc'.*variant"):
        to_arrow_field(NestedField(7, "doc", parse_type("variant"), False))


def test_nanosecond_timestamps_keep_their_nanoseconds_in_bounds_and_transforms() -> None:
    import pandas as pd

    from datashard.iceberg.conversions import from_bytes, to_bytes, to_physical
    from datashard.iceberg.transforms import parse_transform

    ns = parse_type("timestamp_ns")
    value = to_physical(ns, pd.Timestamp("2017-11-16T22:31:08.000001001"))
    assert value == 1_510_871_468_000_001_001
    assert from_bytes(ns, to_bytes(ns, value)) == value
    assert to_bytes(ns, value) == value.to_bytes(8, "little", signed=True)
    # the spec's bucket example: nanoseconds are taken to microseconds before hashing
    bucket = parse_transform("bucket[1000000]")
    micro = parse_transform("bucket[1000000]").apply(parse_type("timestamp"), value // 1000)
    assert bucket.apply(ns, value) == micro
    day = parse_transform("day")
    arrow = day.apply_arrow(ns, pa.array([value, None], pa.timestamp("ns")))
    assert arrow.to_pylist() == [pd.Timestamp("2017-11-16").date(), None]
