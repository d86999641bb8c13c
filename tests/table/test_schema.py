"""Schema: construction, lookups, JSON/Arrow round trips, and validation of appended data."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from pyiceberg.schema import Schema as PyIcebergSchema

from datashard.errors import SchemaError, ValidationError
from datashard.iceberg.schema import Schema, check_not_empty
from datashard.iceberg.types import FIELD_ID_KEY, IntType, LongType, NestedField, StringType

EVENTS = [
    {"id": 1, "name": "user_id", "type": "long", "required": True},
    {"id": 2, "name": "event", "type": "string", "required": True},
    {"id": 3, "name": "timestamp", "type": "long", "required": True},
]

RICH = [
    {"id": 1, "name": "id", "type": "long", "required": True},
    {"id": 2, "name": "flag", "type": "boolean"},
    {"id": 3, "name": "small", "type": "int"},
    {"id": 4, "name": "f", "type": "float"},
    {"id": 5, "name": "d", "type": "double"},
    {"id": 6, "name": "price", "type": "decimal(9,2)"},
    {"id": 7, "name": "day", "type": "date"},
    {"id": 8, "name": "at", "type": "time"},
    {"id": 9, "name": "ts", "type": "timestamp"},
    {"id": 10, "name": "tstz", "type": "timestamptz"},
    {"id": 11, "name": "s", "type": "string"},
    {"id": 12, "name": "u", "type": "uuid"},
    {"id": 13, "name": "b", "type": "binary"},
    {"id": 14, "name": "fx", "type": "fixed[4]"},
    {
        "id": 15,
        "name": "addr",
        "type": {
            "type": "struct",
            "fields": [
                {"id": 16, "name": "city", "type": "string", "required": True},
                {"id": 17, "name": "zip", "type": "int"},
            ],
        },
    },
    {
        "id": 18,
        "name": "tags",
        "type": {"type": "list", "element-id": 19, "element": "string", "element-required": False},
    },
    {
        "id": 20,
        "name": "attrs",
        "type": {
            "type": "map",
            "key-id": 21,
            "key": "string",
            "value-id": 22,
            "value": "long",
            "value-required": False,
        },
    },
]

RICH_ROW = {
    "id": 7,
    "flag": True,
    "small": 3,
    "f": 1.5,
    "d": 2.25,
    "price": Decimal("12.34"),
    "day": dt.date(2024, 2, 29),
    "at": dt.time(12, 30, 1, 5),
    "ts": dt.datetime(2024, 1, 1, 1),
    "tstz": dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone.utc),
    "s": "héllo",
    "u": uuid.UUID("f79c3e09-677c-4bbd-a479-3f349cb785e7"),
    "b": b"\x00\x01",
    "fx": b"abcd",
    "addr": {"city": "Paris", "zip": 75001},
    "tags": ["a", None],
    "attrs": {"k": 1, "n": None},
}


def test_schema_from_dicts_matches_the_issue_example() -> None:
    s = Schema(schema_id=1, fields=EVENTS)
    assert s.column_names == ["user_id", "event", "timestamp"]
    assert s.find_field("event") == NestedField(2, "event", StringType(), True)
    assert s.find_field(3).name == "timestamp"
    assert s.highest_field_id == 3


def test_nested_fields_are_found_by_dotted_path_and_id() -> None:
    s = Schema(0, RICH)
    assert s.find_field("addr.city").field_id == 16
    assert s.field_by_path("tags.element").field_id == 19
    assert s.find_field("attrs.value").field_id == 22
    assert s.column_name(21) == "attrs.key"
    assert s.highest_field_id == 22
    assert s.is_in_repeated(19) and not s.is_in_repeated(16)


def test_unknown_field_lookup_names_the_field_and_the_columns() -> None:
    with pytest.raises(SchemaError, match="'nope'.*user_id"):
        Schema(0, EVENTS).find_field("nope")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            [{"id": 1, "name": "a", "type": "long"}, {"id": 1, "name": "b", "type": "long"}],
            "duplicate field id 1",
        ),
        (
            [{"id": 1, "name": "a", "type": "long"}, {"id": 2, "name": "a", "type": "long"}],
            "duplicate field name 'a'",
        ),
        (
            [{"id": 1, "name": "a", "type": {"type": "list", "element-id": 1, "element": "int"}}],
            "duplicate field id 1",
        ),
        ([{"id": 1, "name": "a", "type": "varchar"}], "'varchar'"),
        ([{"id": 1, "type": "long"}], "'name'"),
    ],
)
def test_malformed_schemas_raise_schema_error(
    fields: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(SchemaError, match=message):
        Schema(0, fields)


def test_schema_json_round_trips_and_pyiceberg_reads_it() -> None:
    s = Schema(4, RICH, identifier_field_ids=(1,))
    doc = json.loads(json.dumps(s.to_json()))
    assert doc["schema-id"] == 4 and doc["identifier-field-ids"] == [1]
    assert Schema.from_json(doc) == s
    theirs = PyIcebergSchema.model_validate_json(json.dumps(doc))
    assert theirs.schema_id == 4
    assert theirs.find_field("addr.city").field_id == 16
    assert Schema.from_json(json.loads(theirs.model_dump_json(by_alias=True))) == s


def test_arrow_round_trip_keeps_field_ids_on_nested_fields() -> None:
    s = Schema(0, RICH)
    arrow = s.to_arrow()
    assert arrow.field("addr").type.field("city").metadata[FIELD_ID_KEY] == b"16"
    assert arrow.field("tags").type.value_field.metadata[FIELD_ID_KEY] == b"19"
    assert arrow.field("attrs").type.item_field.metadata[FIELD_ID_KEY] == b"22"
    assert Schema.from_arrow(arrow) == s


def test_from_arrow_assigns_ids_when_the_arrow_schema_has_none() -> None:
    s = Schema.from_arrow(
        pa.schema(
            [
                pa.field("a", pa.int64(), nullable=False),
                pa.field("b", pa.struct([pa.field("c", pa.string())])),
                pa.field("d", pa.list_(pa.int32())),
            ]
        ),
        schema_id=2,
    )
    assert s.schema_id == 2
    assert sorted(s.field_ids) == [1, 2, 3, 4, 5]
    assert s.find_field("a").required and s.find_field("a").field_type == LongType()
    assert s.find_field("d.element").field_type == IntType()


def test_records_to_arrow_builds_every_type() -> None:
    s = Schema(0, RICH)
    table = s.records_to_arrow([RICH_ROW, {"id": 8}])
    assert table.schema.equals(s.to_arrow(), check_metadata=True)
    back = table.to_pylist()
    assert back[0]["u"] == RICH_ROW["u"] and back[0]["price"] == Decimal("12.34")
    assert back[0]["attrs"] == [("k", 1), ("n", None)]
    assert back[1] == {f["name"]: (8 if f["name"] == "id" else None) for f in RICH}


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (
            [
                {"user_id": 1, "event": "a", "timestamp": 1},
                {"user_id": "2", "event": "b", "timestamp": 2},
            ],
            r"row 1, field 'user_id': expected long .*got str '2'",
        ),
        ([{"user_id": 1, "timestamp": 1}], r"row 0, field 'event': required field .* missing"),
        (
            [{"user_id": 1, "event": "a", "timestamp": 1, "extra": 5}],
            r"row 0: unknown field\(s\) \['extra'\]",
        ),
        ([{"user_id": None, "event": "a", "timestamp": 1}], r"row 0, field 'user_id'.*None"),
        ([{"user_id": True, "event": "a", "timestamp": 1}], r"expected long .*got bool"),
        ([{"user_id": 2**63, "event": "a", "timestamp": 1}], r"out of range"),
        (["not a dict"], r"row 0: expected a dict"),
    ],
)
def test_bad_records_name_row_field_expected_and_actual(
    records: list[object], expected: str
) -> None:
    with pytest.raises(ValidationError, match=expected):
        Schema(1, EVENTS).records_to_arrow(records)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"price": Decimal("1.234")}, "more than 2 digits after the point"),
        ({"price": 1.5}, r"expected decimal\(9,2\) .*got float"),
        ({"ts": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)}, "timestamp has no zone"),
        ({"tstz": dt.datetime(2024, 1, 1)}, "naive datetime"),
        ({"day": dt.datetime(2024, 1, 1)}, r"expected date .*got datetime"),
        ({"fx": b"abc"}, "length 3, expected 4"),
        ({"u": "not-a-uuid"}, "not a UUID"),
        ({"addr": {"zip": 1}}, r"field 'addr.city': required field"),
        ({"tags": "abc"}, r"field 'tags': expected list"),
        ({"small": 2**31}, "out of range"),
    ],
)
def test_bad_values_of_each_type_are_named(row: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        Schema(0, RICH).records_to_arrow([{"id": 1, **row}])


def test_coerce_arrow_accepts_reordered_columns_and_safe_widening() -> None:
    s = Schema(1, EVENTS)
    table = pa.table(
        {
            "timestamp": pa.array([5], pa.int32()),
            "event": pa.array(["x"], pa.large_string()),
            "user_id": pa.array([1], pa.int16()),
        }
    )
    out = s.coerce_arrow(table)
    assert out.schema.equals(s.to_arrow(), check_metadata=True)
    assert out.to_pylist() == [{"user_id": 1, "event": "x", "timestamp": 5}]


def test_coerce_arrow_accepts_a_pandas_frame_with_its_index() -> None:
    s = Schema(1, EVENTS)
    df = pd.DataFrame({"user_id": [1, 2], "event": ["a", "b"], "timestamp": [3, 4]}, index=[10, 11])
    out = s.coerce_arrow(pa.Table.from_pandas(df))
    assert out.column_names == ["user_id", "event", "timestamp"]
    assert out.num_rows == 2


def test_coerce_arrow_fills_missing_optional_columns_with_nulls() -> None:
    s = Schema(0, RICH)
    out = s.coerce_arrow(pa.table({"id": [1, 2]}))
    assert out.schema.equals(s.to_arrow(), check_metadata=True)
    assert out.column("addr").null_count == 2


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            pa.table({"user_id": ["1"], "event": ["a"], "timestamp": [1]}),
            r"field 'user_id': expected long .*got Arrow string",
        ),
        (pa.table({"user_id": [1], "timestamp": [1]}), r"field 'event': required field"),
        (
            pa.table({"user_id": [1], "event": ["a"], "timestamp": [1], "x": [1]}),
            r"unknown field\(s\) \['x'\]",
        ),
        (
            pa.table({"user_id": [1, 2, None], "event": ["a"] * 3, "timestamp": [1] * 3}),
            r"row 2, field 'user_id': required long is null",
        ),
        (
            pa.table({"user_id": [1.5], "event": ["a"], "timestamp": [1]}),
            r"expected long .*got Arrow double",
        ),
    ],
)
def test_bad_arrow_tables_name_field_expected_and_actual(table: pa.Table, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        Schema(1, EVENTS).coerce_arrow(table)


def test_null_in_required_nested_field_names_the_row() -> None:
    s = Schema(0, RICH)
    addr = pa.array(
        [{"city": "a", "zip": 1}, None, {"city": None, "zip": 2}],
        pa.struct([("city", pa.string()), ("zip", pa.int64())]),
    )
    with pytest.raises(ValidationError, match=r"row 2, field 'addr.city'"):
        s.coerce_arrow(pa.table({"id": [1, 2, 3], "addr": addr}))


def test_empty_input_is_the_callers_decision() -> None:
    s = Schema(1, EVENTS)
    assert s.records_to_arrow([]).num_rows == 0
    assert s.coerce_arrow(s.empty_table()).num_rows == 0
    with pytest.raises(ValidationError, match="0 rows"):
        check_not_empty(0)
    check_not_empty(1)


def test_timestamp_units_are_cast_only_when_exact() -> None:
    s = Schema(0, [{"id": 1, "name": "ts", "type": "timestamp", "required": True}])
    exact = pa.table({"ts": pa.array([1_000, 2_000], pa.timestamp("ns"))})
    assert s.coerce_arrow(exact).column("ts").type == pa.timestamp("us")
    seconds = pa.table({"ts": pa.array([1, 2], pa.timestamp("s"))})
    assert s.coerce_arrow(seconds).column("ts").to_pylist()[1] == dt.datetime(1970, 1, 1, 0, 0, 2)
    lossy = pa.table({"ts": pa.array([1_001], pa.timestamp("ns"))})
    with pytest.raises(ValidationError, match="field 'ts'.*lose data"):
        s.coerce_arrow(lossy)


def test_decimal_precision_may_grow_but_scale_must_match() -> None:
    s = Schema(0, [{"id": 1, "name": "p", "type": "decimal(9,2)"}])
    narrow = pa.table({"p": pa.array([Decimal("1.25")], pa.decimal128(5, 2))})
    assert s.coerce_arrow(narrow).column("p").type == pa.decimal128(9, 2)
    with pytest.raises(ValidationError, match=r"expected decimal\(9,2\)"):
        s.coerce_arrow(pa.table({"p": pa.array([Decimal("1.250")], pa.decimal128(9, 3))}))


def test_decimals_beyond_28_digits_are_exact() -> None:
    s = Schema(0, [{"id": 1, "name": "p", "type": "decimal(38,2)"}])
    big = Decimal("123456789012345678901234567890123456.78")
    assert s.records_to_arrow([{"p": big}]).column("p").to_pylist() == [big]
    with pytest.raises(ValidationError, match="more than 38 digits"):
        s.records_to_arrow([{"p": big * 10}])


NESTED = Schema(
    0,
    [
        {
            "id": 1,
            "name": "l",
            "type": {"type": "list", "element-id": 2, "element": "long", "element-required": True},
        },
        {
            "id": 3,
            "name": "m",
            "type": {
                "type": "map",
                "key-id": 4,
                "key": "string",
                "value-id": 5,
                "value": "long",
                "value-required": True,
            },
        },
    ],
)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            pa.table({"l": pa.array([[1], None, [2, None]])}),
            r"row 2, field 'l.element': required list element \(long\) is null",
        ),
        (
            pa.table(
                {"m": pa.array([[("a", 1)], None, [("b", None)]], pa.map_(pa.string(), pa.int64()))}
            ),
            r"row 2, field 'm.value': required map value \(long\) is null",
        ),
    ],
)
def test_nulls_inside_required_list_elements_and_map_values_are_named(
    table: pa.Table, expected: str
) -> None:
    with pytest.raises(ValidationError, match=expected):
        NESTED.coerce_arrow(table)


def test_a_sliced_table_reports_rows_of_the_slice() -> None:
    table = pa.table({"l": pa.array([[None], [1], [2, None]])}).slice(1)
    with pytest.raises(ValidationError, match="row 1, field 'l.element'"):
        NESTED.coerce_arrow(table)
