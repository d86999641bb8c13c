"""Column default values (``initial-default``, ``write-default``): their JSON single-value form,
the array an old file reads for an added column, and filling defaults into data being written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa

from datashard.errors import SchemaError
from datashard.iceberg.schema import Schema
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
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
    to_arrow_type,
)

# --------------------------------------------------------------------------------------------
# default values: the spec's JSON single-value form


def default_to_json(t: IcebergType, value: Any) -> Any:
    """The JSON single-value form of a default ``value`` of type ``t``; ``SchemaError`` if it
    does not fit."""
    try:
        if isinstance(t, BooleanType) and isinstance(value, bool):
            return value
        if (
            isinstance(t, (IntType, LongType))
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            pa.scalar(value, type=to_arrow_type(t))
            return value
        if isinstance(t, (FloatType, DoubleType)) and isinstance(value, (int, float)):
            return float(value)
        if isinstance(t, StringType) and isinstance(value, str):
            return value
        if isinstance(t, DecimalType) and isinstance(value, (Decimal, int, str)):
            pa.scalar(Decimal(value), type=to_arrow_type(t))
            return str(Decimal(value))
        if isinstance(t, DateType) and isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(t, TimeType) and isinstance(value, dt.time):
            return value.isoformat()
        if isinstance(t, (TimestampType, TimestamptzType)) and isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(t, UUIDType):
            return str(uuid.UUID(str(value)))
        if isinstance(t, (BinaryType, FixedType)) and isinstance(value, (bytes, bytearray)):
            return bytes(value).hex()
    except (ValueError, TypeError, ArithmeticError, pa.ArrowException) as exc:
        raise SchemaError(f"default {value!r} does not fit type {t}: {exc}") from None
    raise SchemaError(f"default {value!r} ({type(value).__name__}) does not fit type {t}")


def default_from_json(t: IcebergType, value: Any) -> Any:
    """The Python value of a default in its JSON form (as Arrow accepts it for ``t``)."""
    if value is None:
        return None
    if isinstance(t, DecimalType):
        return Decimal(str(value))
    if isinstance(t, DateType) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if isinstance(t, TimeType) and isinstance(value, str):
        return dt.time.fromisoformat(value)
    if isinstance(t, (TimestampType, TimestamptzType)) and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if isinstance(t, UUIDType):
        return uuid.UUID(str(value)).bytes
    if isinstance(t, (BinaryType, FixedType)) and isinstance(value, str):
        return bytes.fromhex(value)
    return value


def default_array(f: NestedField, length: int, default: Any) -> pa.Array:
    """``length`` copies of a field's default (JSON form) as an Arrow array of its type."""
    arrow_type = to_arrow_type(f.field_type)
    value = default_from_json(f.field_type, default)
    storage = arrow_type.storage_type if isinstance(arrow_type, pa.ExtensionType) else arrow_type
    arr = pa.repeat(pa.scalar(value, type=storage), length)
    if isinstance(arrow_type, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(arrow_type, arr)
    return arr


def fill_write_defaults_arrow(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` with every column that has a ``write-default`` and is absent added."""
    for f in schema.fields:
        if f.write_default is not None and f.name not in table.column_names:
            table = table.append_column(f.name, default_array(f, table.num_rows, f.write_default))
    return table


def fill_write_defaults_records(
    records: Sequence[Mapping[str, Any]], schema: Schema
) -> Sequence[Mapping[str, Any]]:
    """``records`` with absent ``write-default`` fields filled in (a copy only if needed)."""
    fields = [f for f in schema.fields if f.write_default is not None]
    if not fields or not isinstance(records, Sequence):
        return records
    out: list[Mapping[str, Any]] = []
    for r in records:
        missing = [f for f in fields if isinstance(r, Mapping) and f.name not in r]
        if missing:
            filled = dict(r)
            for f in missing:
                filled[f.name] = default_from_json(f.field_type, f.write_default)
                if isinstance(f.field_type, UUIDType):
                    filled[f.name] = uuid.UUID(bytes=filled[f.name])
            r = filled
        out.append(r)
    return out


# --------------------------------------------------------------------------------------------
# type promotion


__all__ = [
    "default_array",
    "default_from_json",
    "default_to_json",
    "fill_write_defaults_arrow",
    "fill_write_defaults_records",
]
