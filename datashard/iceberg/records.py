"""Validation of appended data against a schema: Python dicts and Arrow tables.

Used through :meth:`Schema.records_to_arrow` and :meth:`Schema.coerce_arrow`. Every error is a
:class:`~datashard.errors.ValidationError` naming the row (when there is one), the field path,
the expected Iceberg type and the actual Python or Arrow type.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datashard.errors import SchemaError, ValidationError
from datashard.iceberg.conversions import decimal_unscaled
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
    TimestampNsType,
    TimestampType,
    TimestamptzNsType,
    TimestamptzType,
    TimeType,
    UUIDType,
    from_arrow_type,
    to_arrow_field,
    to_arrow_type,
)

if TYPE_CHECKING:
    from datashard.iceberg.schema import Schema

_INT_RANGE = {IntType: (-(2**31), 2**31 - 1), LongType: (-(2**63), 2**63 - 1)}
_FLOAT32 = struct.Struct("<f")
_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")

_HINT: dict[type, str] = {
    BooleanType: "bool",
    IntType: "int (32-bit)",
    LongType: "int (64-bit)",
    FloatType: "float",
    DoubleType: "float",
    DecimalType: "decimal.Decimal",
    DateType: "datetime.date",
    TimeType: "datetime.time",
    TimestampType: "naive datetime.datetime",
    TimestamptzType: "timezone-aware datetime.datetime",
    StringType: "str",
    UUIDType: "uuid.UUID",
    BinaryType: "bytes",
    FixedType: "bytes",
    StructType: "dict",
    ListType: "list",
    MapType: "dict",
}


def _fail(row: int | None, path: str, t: IcebergType, value: Any, why: str = "") -> ValidationError:
    where = f"row {row}, field {path!r}" if row is not None else f"field {path!r}"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    extra = f" ({why})" if why else ""
    return ValidationError(
        f"{where}: expected {t} (Python {_HINT.get(type(t), 'value')}), "
        f"got {type(value).__name__} {shown}{extra}"
    )


def _check(t: IcebergType, value: Any, row: int, path: str) -> Any:
    """``value`` in the form pyarrow builds ``to_arrow_type(t)`` from, or raise."""
    if isinstance(t, BooleanType):
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
    elif isinstance(t, (IntType, LongType)):
        if isinstance(value, Integral) and not isinstance(value, bool):
            lo, hi = _INT_RANGE[type(t)]
            if lo <= int(value) <= hi:
                return int(value)
            raise _fail(row, path, t, value, f"out of range {lo}..{hi}")
    elif isinstance(t, (FloatType, DoubleType)):
        if isinstance(value, Real) and not isinstance(value, bool):
            return _check_float(t, value, row, path)
    elif isinstance(t, DecimalType):
        if isinstance(value, (Decimal, Integral)) and not isinstance(value, bool):
            return _check_decimal(
                t, Decimal(int(value)) if isinstance(value, Integral) else value, row, path
            )
    elif isinstance(t, DateType):
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
    elif isinstance(t, TimeType):
        if isinstance(value, dt.time):
            return value
    elif isinstance(t, TimestampType):
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                return value
            raise _fail(
                row, path, t, value, "timestamp has no zone; use timestamptz or drop tzinfo"
            )
    elif isinstance(t, TimestamptzType):
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                return value
            raise _fail(row, path, t, value, "a naive datetime is ambiguous; attach a zone")
    elif isinstance(t, StringType):
        if isinstance(value, str):
            if not value.isascii():  # O(1); only non-ASCII text can hold a lone surrogate
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise _fail(
                        row,
                        path,
                        t,
                        value,
                        f"lone surrogate {value[exc.start]!r} at index {exc.start} "
                        "cannot be written as UTF-8",
                    ) from None
            return value
    elif isinstance(t, UUIDType):
        if isinstance(value, uuid.UUID):
            return value.bytes
        if isinstance(value, str):
            try:
                return uuid.UUID(value).bytes
            except ValueError:
                raise _fail(row, path, t, value, "not a UUID string") from None
    elif isinstance(t, BinaryType):
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
    elif isinstance(t, FixedType):
        if isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) == t.length:
                return bytes(value)
            raise _fail(row, path, t, value, f"length {len(value)}, expected {t.length}")
    elif isinstance(t, StructType):
        if isinstance(value, Mapping):
            return _check_struct(t.fields, value, row, path + ".")
    elif isinstance(t, ListType):
        if isinstance(value, (list, tuple)):
            return [
                _check_nullable(t.element_field, v, row, f"{path}[{i}]")
                for i, v in enumerate(value)
            ]
    elif isinstance(t, MapType):
        if isinstance(value, Mapping):
            return [
                (
                    _check_nullable(t.key_field, k, row, f"{path}.key"),
                    _check_nullable(t.value_field, v, row, f"{path}[{k!r}]"),
                )
                for k, v in value.items()
            ]
    raise _fail(row, path, t, value)


def _check_float(t: FloatType | DoubleType, value: Any, row: int, path: str) -> float:
    """``value`` as a Python float; a finite value that overflows ``t`` raises (an infinity or
    NaN given as such is stored as given)."""
    try:
        x = float(value)
    except OverflowError:
        raise _fail(row, path, t, value, f"too large for {t}") from None
    if math.isinf(x) and value != x:  # e.g. a numpy long double beyond the double range
        raise _fail(row, path, t, value, f"too large for {t}")
    if isinstance(t, FloatType):
        try:
            _FLOAT32.pack(x)  # raises exactly when a finite x rounds to an infinity
        except OverflowError:
            raise _fail(
                row, path, t, value, "beyond the 32-bit float range of about 3.4e38; use double"
            ) from None
    return x


def _check_decimal(t: DecimalType, value: Decimal, row: int, path: str) -> Decimal:
    unscaled = decimal_unscaled(value, t.scale)
    if unscaled is None:
        raise _fail(row, path, t, value, f"more than {t.scale} digits after the point")
    if len(str(abs(unscaled))) > t.precision:
        raise _fail(row, path, t, value, f"more than {t.precision} digits")
    return Decimal((1 if unscaled < 0 else 0, tuple(int(c) for c in str(abs(unscaled))), -t.scale))


def _check_nullable(f: NestedField, value: Any, row: int, path: str) -> Any:
    if value is None:
        if f.required:
            raise ValidationError(
                f"row {row}, field {path!r}: required {f.field_type} is None; "
                "a required field needs a value"
            )
        return None
    return _check(f.field_type, value, row, path)


def _check_struct(
    fields: Sequence[NestedField], record: Mapping[str, Any], row: int, prefix: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if f.name not in record:
            if f.required:
                raise ValidationError(
                    f"row {row}, field {prefix + f.name!r}: required field ({f.field_type}) "
                    "is missing"
                )
            out[f.name] = None
            continue
        out[f.name] = _check_nullable(f, record[f.name], row, prefix + f.name)
    known = {f.name for f in fields}
    unknown = [k for k in record if k not in known]
    if unknown:
        raise ValidationError(
            f"row {row}: unknown field(s) {[prefix + str(k) for k in unknown]}; the schema has "
            f"{[prefix + f.name for f in fields]}"
        )
    return out


#: Python types pyarrow converts exactly (no truncation, no reinterpretation) per Iceberg type.
_EXACT: dict[type, frozenset[type]] = {
    LongType: frozenset({int}),
    IntType: frozenset({int}),
    DoubleType: frozenset({float, int}),
    FloatType: frozenset({float, int}),
    StringType: frozenset({str}),
    BooleanType: frozenset({bool}),
    BinaryType: frozenset({bytes}),
    DateType: frozenset({dt.date}),
}
_NONE = type(None)


def _column(f: NestedField, target: pa.DataType, records: Sequence[Mapping[str, Any]]) -> pa.Array:
    values = [r.get(f.name) for r in records]
    exact = _EXACT.get(type(f.field_type))
    if exact is not None:
        seen = set(map(type, values))
        if seen <= exact or (not f.required and seen <= exact | {_NONE}):
            try:
                fast = pa.array(values, type=target)
            except (pa.ArrowInvalid, OverflowError, UnicodeEncodeError):
                pass  # out of range or not UTF-8: the slow path below names the row
            else:
                # pyarrow rounds a finite value beyond the float32 range to an infinity without
                # a word; the slow path tells those from infinities given as such
                if not isinstance(f.field_type, FloatType) or not pc.any(pc.is_inf(fast)).as_py():
                    return fast
    checked: list[Any] = []
    for row, (record, v) in enumerate(zip(records, values, strict=True)):
        if v is None and f.name not in record:
            if f.required:
                raise ValidationError(
                    f"row {row}, field {f.name!r}: required field ({f.field_type}) is missing"
                )
            checked.append(None)
        else:
            checked.append(_check_nullable(f, v, row, f.name))
    return pa.array(checked, type=target)


def records_to_arrow(schema: Schema, records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Validate ``records`` (dicts) against ``schema`` and build its Arrow table."""
    if isinstance(records, Mapping):
        raise ValidationError(
            "records must be a sequence of dicts, got a single dict; wrap it in a list"
        )
    records = list(records)
    known = frozenset(schema.column_names)
    for row, record in enumerate(records):
        if type(record) is not dict and not isinstance(record, Mapping):
            raise ValidationError(
                f"row {row}: expected a dict of field name to value, got "
                f"{type(record).__name__} {record!r:.60}"
            )
        if not known.issuperset(record):
            _check_struct(schema.fields, record, row, "")  # raises, naming the unknown fields
    arrow_schema = schema.to_arrow()
    arrays = [
        _column(f, target.type, records)
        for f, target in zip(schema.fields, arrow_schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


# ---------------------------------------------------------------------------------------------
# Arrow tables


def _promotable(actual: IcebergType, expected: IcebergType) -> bool:
    if actual == expected:
        return True
    if isinstance(expected, LongType) and isinstance(actual, IntType):
        return True
    if isinstance(expected, IntType) and isinstance(actual, LongType):
        return True  # checked cast: Python ints and pandas columns arrive as int64
    if isinstance(expected, DoubleType) and isinstance(actual, FloatType):
        return True
    if isinstance(expected, UUIDType) and actual == FixedType(16):
        return True
    if isinstance(expected, TimestampNsType) and isinstance(actual, TimestampType):
        return True  # any Arrow timestamp unit: cast to nanoseconds
    if isinstance(expected, TimestamptzNsType) and isinstance(actual, TimestamptzType):
        return True
    if isinstance(expected, DecimalType) and isinstance(actual, DecimalType):
        return actual.scale == expected.scale and actual.precision <= expected.precision
    return False


def _arrow_name(t: pa.DataType) -> str:
    return f"Arrow {t}"


def _type_error(path: str, expected: IcebergType, actual: pa.DataType, why: str = "") -> Exception:
    extra = f" ({why})" if why else ""
    return ValidationError(
        f"field {path!r}: expected {expected} (Arrow {to_arrow_type(expected)}), "
        f"got {_arrow_name(actual)}{extra}"
    )


def _first_true(mask: pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def _coerce(arr: pa.Array, f: NestedField, path: str, row0: int) -> pa.Array:
    """``arr`` cast to ``f``'s Arrow type; raises ValidationError on a mismatch."""
    t = f.field_type
    target = to_arrow_type(t)
    storage = arr.type.storage_type if isinstance(arr.type, pa.BaseExtensionType) else arr.type
    if pa.types.is_null(storage):
        return pa.nulls(len(arr), type=target)
    if pa.types.is_dictionary(storage):
        arr = arr.dictionary_decode()
        storage = arr.type
    if isinstance(t, StructType):
        if not pa.types.is_struct(storage):
            raise _type_error(path, t, arr.type)
        names = [storage.field(i).name for i in range(storage.num_fields)]
        known = {c.name for c in t.fields}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValidationError(
                f"field {path!r}: unknown nested field(s) {[path + '.' + n for n in unknown]}; "
                f"expected {t}"
            )
        children = []
        parent_valid = arr.is_valid()
        for child in t.fields:
            if child.name in names:
                raw = arr.field(names.index(child.name))
                c = _coerce(raw, child, f"{path}.{child.name}", row0)
            elif child.required:
                raise ValidationError(
                    f"field {path + '.' + child.name!r}: required field ({child.field_type}) "
                    "is missing"
                )
            else:
                c = pa.nulls(len(arr), type=to_arrow_type(child.field_type))
            if child.required and c.null_count:
                bad = pc.and_(c.is_null(), parent_valid)
                if pc.any(bad).as_py():
                    raise ValidationError(
                        f"row {row0 + _first_true(bad)}, field {path + '.' + child.name!r}: "
                        f"required {child.field_type} is null"
                    )
            children.append(c)
        mask = arr.is_null() if arr.null_count else None
        return pa.StructArray.from_arrays(
            children, fields=[to_arrow_field(c) for c in t.fields], mask=mask
        )
    try:
        actual = from_arrow_type(arr.type, lambda: 0, path)
    except SchemaError as exc:
        raise _type_error(path, t, arr.type, str(exc)) from None
    if isinstance(t, (ListType, MapType)):
        ok = type(actual) is type(t) and _nested_ok(actual, t)
    else:
        ok = _promotable(actual, t)
    if not ok:
        raise _type_error(path, t, arr.type)
    try:
        if arr.type == target:
            out = arr
        elif isinstance(t, UUIDType) and pa.types.is_fixed_size_binary(arr.type):
            out = pa.ExtensionArray.from_storage(pa.uuid(), arr)
        else:
            out = arr.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _type_error(path, t, arr.type, f"cast would lose data: {exc}") from None
    if isinstance(t, (ListType, MapType)):
        _check_required_inside(out, t, path, np.arange(len(out)) + row0)
    if _holds_strings(t):
        _check_utf8(out, t, path, row0)
    return out


def _holds_strings(t: IcebergType) -> bool:
    if isinstance(t, StringType):
        return True
    if isinstance(t, ListType):
        return _holds_strings(t.element_type)
    if isinstance(t, MapType):
        return _holds_strings(t.key_type) or _holds_strings(t.value_type)
    if isinstance(t, StructType):
        return any(_holds_strings(f.field_type) for f in t.fields)
    return False


def _check_utf8(arr: pa.Array, t: IcebergType, path: str, row0: int) -> None:
    """Raise ValidationError naming the row and field of a string that is not valid UTF-8
    (Arrow does not check the bytes of a string array it is handed)."""
    try:
        arr.validate(full=True)  # fast; checks all the bytes below a nested slice, not only its own
    except pa.ArrowInvalid:
        _find_bad_utf8(arr, t, path, np.arange(len(arr)) + row0)


def _find_bad_utf8(arr: pa.Array, t: IcebergType, path: str, rows: np.ndarray) -> None:
    if isinstance(t, StringType):
        try:
            arr.validate(full=True)
            return
        except pa.ArrowInvalid as exc:
            problem = exc
        for i, data in enumerate(arr.view(pa.binary()).to_pylist()):
            if data is None:
                continue
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = repr(data) if len(data) <= 60 else repr(data[:57]) + "..."
                raise ValidationError(
                    f"row {int(rows[i])}, field {path!r}: expected {t} (valid UTF-8), got bytes "
                    f"{shown} (not UTF-8 at byte {exc.start})"
                ) from None
        raise ValidationError(f"field {path!r}: the Arrow data is malformed: {problem}")
    elif isinstance(t, StructType):
        for i, child in enumerate(t.fields):
            _find_bad_utf8(arr.field(i), child.field_type, f"{path}.{child.name}", rows)
    elif isinstance(t, ListType):
        values, child_rows = _entries(arr, rows)
        _find_bad_utf8(values, t.element_type, f"{path}.element", child_rows)
    elif isinstance(t, MapType):
        entries, child_rows = _entries(arr, rows)
        _find_bad_utf8(entries.field(0), t.key_type, f"{path}.key", child_rows)
        _find_bad_utf8(entries.field(1), t.value_type, f"{path}.value", child_rows)


def _entries(arr: pa.Array, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The child values of a list or map array (slice-aware) and the row of each."""
    offsets = arr.offsets.to_numpy(zero_copy_only=False)
    start, end = int(offsets[0]), int(offsets[-1])
    children = arr.values.slice(start, end - start)
    return children, np.repeat(rows, np.diff(offsets))


def _check_required_inside(arr: pa.Array, t: IcebergType, path: str, rows: np.ndarray) -> None:
    """Raise ValidationError for a null where ``t`` requires a value, below the top level."""
    if isinstance(t, StructType):
        valid = arr.is_valid()
        for i, child in enumerate(t.fields):
            values = arr.field(i)
            if child.required and values.null_count:
                bad = pc.and_(values.is_null(), valid)
                if pc.any(bad).as_py():
                    raise ValidationError(
                        f"row {int(rows[_first_true(bad)])}, field {path + '.' + child.name!r}: "
                        f"required {child.field_type} is null"
                    )
            _check_required_inside(values, child.field_type, f"{path}.{child.name}", rows)
    elif isinstance(t, ListType):
        values, child_rows = _entries(arr, rows)
        if t.element_required and values.null_count:
            raise ValidationError(
                f"row {int(child_rows[_first_true(values.is_null())])}, field "
                f"{path + '.element'!r}: required list element ({t.element_type}) is null"
            )
        _check_required_inside(values, t.element_type, f"{path}.element", child_rows)
    elif isinstance(t, MapType):
        entries, child_rows = _entries(arr, rows)
        keys, values = entries.field(0), entries.field(1)
        if keys.null_count:
            raise ValidationError(
                f"row {int(child_rows[_first_true(keys.is_null())])}, field {path + '.key'!r}: "
                "map keys cannot be null"
            )
        if t.value_required and values.null_count:
            raise ValidationError(
                f"row {int(child_rows[_first_true(values.is_null())])}, field "
                f"{path + '.value'!r}: required map value ({t.value_type}) is null"
            )
        _check_required_inside(keys, t.key_type, f"{path}.key", child_rows)
        _check_required_inside(values, t.value_type, f"{path}.value", child_rows)


def _nested_ok(actual: IcebergType, expected: IcebergType) -> bool:
    if isinstance(expected, ListType) and isinstance(actual, ListType):
        return _nested_ok(actual.element_type, expected.element_type)
    if isinstance(expected, MapType) and isinstance(actual, MapType):
        return _nested_ok(actual.key_type, expected.key_type) and _nested_ok(
            actual.value_type, expected.value_type
        )
    if isinstance(expected, StructType) and isinstance(actual, StructType):
        if len(actual.fields) != len(expected.fields):
            return False
        return all(
            a.name == e.name and _nested_ok(a.field_type, e.field_type)
            for a, e in zip(actual.fields, expected.fields, strict=True)
        )
    return _promotable(actual, expected)


def null_column(t: pa.DataType, n: int) -> pa.Array:
    """``n`` nulls of type ``t``. A struct's required children get placeholder values under
    the null slots (Arrow refuses nulls in a non-nullable child even there; readers never see
    them: the parent is null)."""
    if not pa.types.is_struct(t):
        return pa.nulls(n, t)
    children = [_placeholder(f.type, n) if not f.nullable else pa.nulls(n, f.type) for f in t]
    return pa.StructArray.from_arrays(
        children, fields=list(t), mask=pa.array(np.ones(n, dtype=bool))
    )


def _placeholder(t: pa.DataType, n: int) -> pa.Array:
    """``n`` non-null values of type ``t`` (zero, empty) to stand under null parents."""
    if pa.types.is_struct(t):
        children = [_placeholder(f.type, n) if not f.nullable else pa.nulls(n, f.type) for f in t]
        return pa.StructArray.from_arrays(children, fields=list(t))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        return pa.array([[] for _ in range(n)], type=t)
    if isinstance(t, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(t, _placeholder(t.storage_type, n))
    if pa.types.is_fixed_size_binary(t):
        return pa.array([bytes(t.byte_width)] * n, type=t)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.array([""] * n, type=t)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pa.array([b""] * n, type=t)
    if pa.types.is_boolean(t):
        return pa.array(np.zeros(n, dtype=bool))
    if pa.types.is_decimal(t):
        return pa.array([0] * n, type=t)
    try:
        return pa.array(np.zeros(n, dtype=np.int64)).cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array(np.zeros(n, dtype=np.int32)).cast(t)  # date32, time32


def coerce_arrow(schema: Schema, table: pa.Table) -> pa.Table:
    """``table`` checked against ``schema`` and returned in ``schema.to_arrow()`` form."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise ValidationError(
            f"expected a pyarrow.Table (or pandas.DataFrame), got {type(table).__name__}"
        )
    names = [n for n in table.column_names if not _PANDAS_INDEX.match(n)]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValidationError(f"duplicate column(s) {dupes} in the appended data")
    known = set(schema.column_names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValidationError(f"unknown field(s) {unknown}; the schema has {schema.column_names}")
    arrow_schema = schema.to_arrow()
    columns: list[pa.ChunkedArray] = []
    for f, target in zip(schema.fields, arrow_schema, strict=True):
        if f.name not in names:
            if f.required:
                raise ValidationError(
                    f"field {f.name!r}: required field ({f.field_type}) is missing from the data"
                )
            columns.append(pa.chunked_array([null_column(target.type, table.num_rows)]))
            continue
        col = table.column(f.name)
        chunks = []
        row0 = 0
        for chunk in col.chunks:
            c = _coerce(chunk, f, f.name, row0)
            if f.required and c.null_count:
                raise ValidationError(
                    f"row {row0 + _first_true(c.is_null())}, field {f.name!r}: required "
                    f"{f.field_type} is null"
                )
            chunks.append(c)
            row0 += len(chunk)
        columns.append(pa.chunked_array(chunks, type=target.type))
    return pa.Table.from_arrays(columns, schema=arrow_schema)


def find_unencodable(columns: Iterable[tuple[str, Iterable[Any]]]) -> ValidationError | None:
    """The error naming the row and column of the first ``str`` (also inside lists and dicts)
    that cannot be written as UTF-8 (a lone surrogate), or ``None`` if there is none."""
    for name, values in columns:
        for row, value in enumerate(values):
            bad = _unencodable_in(value)
            if bad is not None:
                text, index = bad
                shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
                return ValidationError(
                    f"row {row}, field {name!r}: str {shown} holds a lone surrogate "
                    f"{text[index]!r} at index {index}, which cannot be written as UTF-8"
                )
    return None


def _unencodable_in(value: Any) -> tuple[str, int] | None:
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return value, exc.start
        return None
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, np.ndarray)):
        for item in value:
            bad = _unencodable_in(item)
            if bad is not None:
                return bad
    return None


__all__ = ["coerce_arrow", "find_unencodable", "records_to_arrow"]
