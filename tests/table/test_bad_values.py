"""Bad values get a ValidationError (SchemaError, CorruptMetadataError) naming the field and the
row, and leave the table exactly as it was: floats that overflow their column, strings that are
not UTF-8, booleans in schema JSON that are not JSON booleans. An absurd version hint is ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import CorruptMetadataError, SchemaError, ValidationError

SCHEMA = Schema(
    schema_id=1,
    fields=[
        {"id": 1, "name": "n", "type": "long", "required": True},
        {"id": 2, "name": "f", "type": "float"},
        {"id": 3, "name": "d", "type": "double"},
        {"id": 4, "name": "s", "type": "string"},
        {
            "id": 5,
            "name": "tags",
            "type": {
                "type": "list",
                "element-id": 6,
                "element": "string",
                "element-required": False,
            },
        },
        {
            "id": 7,
            "name": "fs",
            "type": {
                "type": "list",
                "element-id": 8,
                "element": "float",
                "element-required": False,
            },
        },
    ],
)
GOOD = {"n": 0, "f": 1.5, "d": 2.5, "s": "ok", "tags": ["a"], "fs": [1.0]}


@pytest.fixture
def table_and_state(local_wh: Any) -> tuple[Any, Any, dict[str, bytes]]:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records([GOOD])
    table.flush()  # the version-hint write runs in the background
    return table, local_wh, local_wh.snapshot_of_storage()


def _refused(state: tuple[Any, Any, dict[str, bytes]], data: Any, message: str) -> None:
    table, warehouse, before = state
    append = table.append_records if isinstance(data, list) else table.append
    with pytest.raises(ValidationError, match=message):
        append(data)
    assert warehouse.snapshot_of_storage() == before
    assert table.refresh().count() == 1


# ------------------------------------------------------------------------------------------
# 9, 10: floats that do not fit their column


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"n": 1, "f": 1e300}], r"row 0, field 'f': expected float.*1e\+300.*32-bit"),
        ([{"n": 1, "f": 1.0}, {"n": 2, "f": -1e39}], r"row 1, field 'f'.*32-bit"),
        ([{"n": 1, "f": 2**128}], r"row 0, field 'f'.*32-bit"),
        ([{"n": 1, "f": np.float64(1e300)}], r"row 0, field 'f'.*32-bit"),
        ([{"n": 1, "fs": [1.0, 1e300]}], r"row 0, field 'fs\[1\]'.*32-bit"),
        ([{"n": 1, "d": 10**400}], r"row 0, field 'd': expected double.*too large for double"),
        ([GOOD, {"n": 1, "f": 10**400}], r"row 1, field 'f'.*too large"),
    ],
    ids=["1e300", "second row", "2**128", "numpy", "in a list", "10**400 double", "10**400 float"],
)
def test_a_finite_value_beyond_the_column_range_is_refused_not_stored_as_inf(
    table_and_state: Any, rows: list[dict[str, Any]], message: str
) -> None:
    _refused(table_and_state, rows, message)


def test_nan_and_infinities_given_as_such_are_stored_as_given(table_and_state: Any) -> None:
    table, _, _ = table_and_state
    nan, inf = float("nan"), float("inf")
    table.append_records(
        [
            {"n": 1, "f": nan, "d": inf, "fs": [inf, -inf, nan]},
            {"n": 2, "f": -inf, "d": nan},
            {"n": 3, "f": 3.4028235e38, "d": 1e300},  # the largest float32 still fits
        ]
    )
    rows = {r["n"]: r for r in table.to_arrow().to_pylist()}
    assert math.isnan(rows[1]["f"]) and rows[1]["d"] == inf
    assert rows[1]["fs"][:2] == [inf, -inf] and math.isnan(rows[1]["fs"][2])
    assert rows[2]["f"] == -inf and math.isnan(rows[2]["d"])
    assert rows[3]["f"] == np.float32(3.4028235e38) and rows[3]["d"] == 1e300


@pytest.mark.parametrize("kind", ["arrow", "pandas"])
def test_a_float64_column_is_not_narrowed_into_a_float_column(
    table_and_state: Any, kind: str
) -> None:
    data = pa.table({"n": pa.array([1], pa.int64()), "f": pa.array([1e300], pa.float64())})
    _refused(
        table_and_state,
        data if kind == "arrow" else data.to_pandas(),
        r"field 'f': expected float \(Arrow float\), got Arrow double",
    )


def test_an_arrow_float32_column_keeps_its_infinities(table_and_state: Any) -> None:
    table, _, _ = table_and_state
    table.append(pa.table({"n": [1], "f": pa.array([float("inf")], pa.float32())}))
    assert sorted(table.to_arrow().column("f").to_pylist()) == [1.5, float("inf")]


# ------------------------------------------------------------------------------------------
# 12: strings that cannot be UTF-8


def _not_utf8(values: list[bytes]) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())  # Arrow does not check the bytes


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"n": 1, "s": "\ud800"}], r"row 0, field 's'.*lone surrogate '\\ud800'"),
        ([GOOD, {"n": 1, "s": "abc\udfff"}], r"row 1, field 's'.*surrogate.*index 3"),
        ([{"n": 1, "tags": ["x", "\ud800"]}], r"row 0, field 'tags\[1\]'.*surrogate"),
    ],
    ids=["alone", "second row", "in a list"],
)
def test_a_lone_surrogate_is_refused_with_field_and_row(
    table_and_state: Any, rows: list[dict[str, Any]], message: str
) -> None:
    _refused(table_and_state, rows, message)


def test_a_lone_surrogate_in_a_dataframe_is_refused_with_field_and_row(
    table_and_state: Any,
) -> None:
    frame = pd.DataFrame({"n": [1, 2], "s": pd.Series(["ok", "\ud800"], dtype=object)})
    _refused(table_and_state, frame, r"row 1, field 's'.*lone surrogate")


def test_arrow_strings_that_are_not_utf8_are_refused_with_field_and_row(
    table_and_state: Any,
) -> None:
    n = pa.array([1, 2, 3], pa.int64())
    column = _not_utf8([b"ok", b"ok", b"\xff\xfe"])
    _refused(
        table_and_state,
        pa.table({"n": n, "s": column}),
        r"row 2, field 's': expected string \(valid UTF-8\), got bytes b'\\xff\\xfe'",
    )
    chunked = pa.chunked_array([column.slice(0, 1), column.slice(1)])
    _refused(table_and_state, pa.table({"n": n, "s": chunked}), r"row 2, field 's'")
    tags = pa.ListArray.from_arrays(
        pa.array([0, 1, 1, 3], pa.int32()), _not_utf8([b"a"] * 2 + [b"\xc3("])
    )
    _refused(table_and_state, pa.table({"n": n, "tags": tags}), r"row 2, field 'tags.element'")


def test_a_slice_whose_own_strings_are_utf8_is_accepted(table_and_state: Any) -> None:
    table, _, _ = table_and_state
    tags = pa.ListArray.from_arrays(
        pa.array([0, 1, 3], pa.int32()), _not_utf8([b"a", b"\xff", b"b"])
    )
    table.append(pa.table({"n": [1], "tags": tags.slice(0, 1)}))  # the bad bytes are not in it
    assert sorted(map(str, table.to_arrow().column("tags").to_pylist())) == ["['a']", "['a']"]


# ------------------------------------------------------------------------------------------
# 13: booleans in schema JSON


def _schema_json(flag: str, value: Any) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [
        {"id": 1, "name": "n", "type": "long", "required": True},
        {
            "id": 2,
            "name": "tags",
            "required": False,
            "type": {
                "type": "list",
                "element-id": 3,
                "element": "string",
                "element-required": True,
            },
        },
        {
            "id": 4,
            "name": "props",
            "required": False,
            "type": {
                "type": "map",
                "key-id": 5,
                "key": "string",
                "value-id": 6,
                "value": "long",
                "value-required": False,
            },
        },
    ]
    where = {"required": fields[0], "element-required": fields[1]["type"]}
    where["value-required"] = fields[2]["type"]
    where[flag][flag] = value
    return {"type": "struct", "schema-id": 0, "fields": fields}


FLAGS = [("required", "n"), ("element-required", "tags"), ("value-required", "props")]


@pytest.mark.parametrize(("flag", "field"), FLAGS, ids=[f for f, _ in FLAGS])
@pytest.mark.parametrize("value", ["false", "yes", 0, None], ids=repr)
def test_a_schema_boolean_that_is_not_a_json_boolean_is_refused(
    flag: str, field: str, value: Any
) -> None:
    with pytest.raises(SchemaError, match=rf"field '{field}': '{flag}' must be a JSON boolean"):
        Schema.from_json(_schema_json(flag, value))
    assert Schema.from_json(_schema_json(flag, False)).find_field(field)  # the control


def test_a_nested_schema_boolean_names_the_nested_field() -> None:
    inner = {"type": "list", "element-id": 3, "element": "long", "element-required": "false"}
    outer = {"type": "list", "element-id": 2, "element": inner, "element-required": True}
    data = {"type": "struct", "fields": [{"id": 1, "name": "xs", "type": outer}]}
    with pytest.raises(SchemaError, match=r"field 'xs.element': 'element-required'"):
        Schema.from_json(data)


@pytest.mark.parametrize(("flag", "field"), FLAGS, ids=[f for f, _ in FLAGS])
def test_a_string_boolean_in_table_metadata_is_corrupt_metadata(
    local_wh: Any, flag: str, field: str
) -> None:
    create_table("t", Schema.from_json(_schema_json(flag, True)), warehouse=local_wh.uri)
    key = "t/metadata/v1.metadata.json"
    metadata = json.loads(local_wh.backend.read(key))
    bad = _schema_json(flag, "false")
    metadata["schemas"][0]["fields"] = bad["fields"]
    local_wh.backend.write(key, json.dumps(metadata).encode())
    before = local_wh.snapshot_of_storage()
    with pytest.raises(
        CorruptMetadataError, match=rf"v1\.metadata\.json.*field '{field}': '{flag}'"
    ):
        load_table("t", warehouse=local_wh.uri)
    assert local_wh.snapshot_of_storage() == before


# ------------------------------------------------------------------------------------------
# 14: an absurd version hint


HINTS = [
    ("5,000 digits", b"9" * 5000),
    ("19 digits", b"1" * 19),
    ("negative", b"-3"),
    ("zero", b"0"),
    ("arabic digit", "\u0661".encode()),
    ("two numbers", b"4 5"),
    ("empty", b""),
]


@pytest.mark.parametrize("hint", [h for _, h in HINTS], ids=[i for i, _ in HINTS])
def test_an_absurd_version_hint_is_ignored_and_the_table_loads(local_wh: Any, hint: bytes) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    behind = load_table(
        "t", warehouse=local_wh.uri
    )  # at v1: its refresh probes, then reads the hint
    for i in range(3):
        table.append_records([{"n": i}])
    table.flush()
    local_wh.backend.write("t/metadata/version-hint.text", hint)
    loaded = load_table("t", warehouse=local_wh.uri)
    assert loaded.version == 4 and loaded.count() == 3
    assert behind.refresh().version == 4
    behind.append_records([{"n": 3}])  # a writer reads the hint too
    assert load_table("t", warehouse=local_wh.uri).count() == 4
