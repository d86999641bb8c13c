"""The Avro schemas of Iceberg v2 and v3 manifests and manifest lists, with the spec's field ids.

Version 3 adds a data file's ``first_row_id`` (142), ``content_offset`` (144) and
``content_size_in_bytes`` (145), and a manifest's ``first_row_id`` (520).

Every field carries ``field-id``; lists carry ``element-id``; maps with int keys are Avro arrays
of ``{key, value}`` records (``logicalType: map``) whose key and value carry their field ids,
as the spec's Avro appendix says. Record names follow the Java/PyIceberg convention (``r2``,
``r102``, ``k117_v118``, ``r508``) so that every reader resolves them the same way.
"""

from __future__ import annotations

from typing import Any

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
    LongType,
    StringType,
    StructType,
    TimestampNsType,
    TimestampType,
    TimestamptzNsType,
    TimestamptzType,
    TimeType,
    UUIDType,
)


def _optional(avro_type: Any) -> list[Any]:
    return ["null", avro_type]


def _int_map(
    field_id: int, name: str, key_id: int, value_id: int, value: str, doc: str
) -> dict[str, Any]:
    return {
        "name": name,
        "field-id": field_id,
        "type": _optional(
            {
                "type": "array",
                "logicalType": "map",
                "items": {
                    "type": "record",
                    "name": f"k{key_id}_v{value_id}",
                    "fields": [
                        {"name": "key", "type": "int", "field-id": key_id},
                        {"name": "value", "type": value, "field-id": value_id},
                    ],
                },
            }
        ),
        "default": None,
        "doc": doc,
    }


def decimal_required_bytes(precision: int) -> int:
    """Bytes of the Avro ``fixed`` that holds any unscaled value of ``precision`` digits."""
    length = 1
    while 2 ** (8 * length - 1) - 1 < 10**precision - 1:
        length += 1
    return length


def avro_type_for(t: IcebergType, name: str) -> Any:
    """The Avro type Iceberg uses for a primitive ``t`` (for partition values)."""
    if isinstance(t, BooleanType):
        return "boolean"
    if isinstance(t, IntType):
        return "int"
    if isinstance(t, LongType):
        return "long"
    if isinstance(t, FloatType):
        return "float"
    if isinstance(t, DoubleType):
        return "double"
    if isinstance(t, DateType):
        return {"type": "int", "logicalType": "date"}
    if isinstance(t, TimeType):
        return {"type": "long", "logicalType": "time-micros"}
    if isinstance(t, TimestampType):
        return {"type": "long", "logicalType": "timestamp-micros", "adjust-to-utc": False}
    if isinstance(t, TimestamptzType):
        return {"type": "long", "logicalType": "timestamp-micros", "adjust-to-utc": True}
    if isinstance(t, TimestampNsType):
        return {"type": "long", "logicalType": "timestamp-nanos", "adjust-to-utc": False}
    if isinstance(t, TimestamptzNsType):
        return {"type": "long", "logicalType": "timestamp-nanos", "adjust-to-utc": True}
    if isinstance(t, StringType):
        return "string"
    if isinstance(t, UUIDType):
        return {"type": "fixed", "name": f"{name}_uuid", "size": 16, "logicalType": "uuid"}
    if isinstance(t, BinaryType):
        return "bytes"
    if isinstance(t, FixedType):
        return {"type": "fixed", "name": f"{name}_fixed", "size": t.length}
    if isinstance(t, DecimalType):
        return {
            "type": "fixed",
            "name": f"{name}_decimal",
            "size": decimal_required_bytes(t.precision),
            "logicalType": "decimal",
            "precision": t.precision,
            "scale": t.scale,
        }
    raise SchemaError(f"partition field {name!r} has type {t}, which cannot be a partition value")


def partition_record(partition_type: StructType) -> dict[str, Any]:
    """The Avro record ``r102`` of the partition tuple (every field optional)."""
    return {
        "type": "record",
        "name": "r102",
        "fields": [
            {
                "name": f.name,
                "field-id": f.field_id,
                "type": _optional(avro_type_for(f.field_type, f"r102_{f.field_id}")),
                "default": None,
            }
            for f in partition_type.fields
        ],
    }


def _optional_field(name: str, avro_type: str, field_id: int, doc: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": _optional(avro_type),
        "field-id": field_id,
        "default": None,
        "doc": doc,
    }


def manifest_entry_schema(partition_type: StructType, format_version: int = 2) -> dict[str, Any]:
    """The ``manifest_entry`` Avro schema of ``format_version`` (2 or 3) for a partition type."""
    data_file = {
        "type": "record",
        "name": "r2",
        "fields": [
            {
                "name": "content",
                "type": "int",
                "field-id": 134,
                "doc": "Contents of the file: 0=data, 1=position deletes, 2=equality deletes",
            },
            {
                "name": "file_path",
                "type": "string",
                "field-id": 100,
                "doc": "Location URI with FS scheme",
            },
            {
                "name": "file_format",
                "type": "string",
                "field-id": 101,
                "doc": "File format name: avro, orc, or parquet",
            },
            {
                "name": "partition",
                "type": partition_record(partition_type),
                "field-id": 102,
                "doc": "Partition data tuple, schema based on the partition spec",
            },
            {
                "name": "record_count",
                "type": "long",
                "field-id": 103,
                "doc": "Number of records in the file",
            },
            {
                "name": "file_size_in_bytes",
                "type": "long",
                "field-id": 104,
                "doc": "Total file size in bytes",
            },
            _int_map(108, "column_sizes", 117, 118, "long", "Map of column id to total size"),
            _int_map(
                109,
                "value_counts",
                119,
                120,
                "long",
                "Map of column id to total count, including null and NaN",
            ),
            _int_map(
                110, "null_value_counts", 121, 122, "long", "Map of column id to null value count"
            ),
            _int_map(
                137,
                "nan_value_counts",
                138,
                139,
                "long",
                "Map of column id to number of NaN values in the column",
            ),
            _int_map(125, "lower_bounds", 126, 127, "bytes", "Map of column id to lower bound"),
            _int_map(128, "upper_bounds", 129, 130, "bytes", "Map of column id to upper bound"),
            {
                "name": "key_metadata",
                "type": _optional("bytes"),
                "field-id": 131,
                "default": None,
                "doc": "Encryption key metadata blob",
            },
            {
                "name": "split_offsets",
                "field-id": 132,
                "default": None,
                "type": _optional({"type": "array", "items": "long", "element-id": 133}),
                "doc": "Splittable offsets",
            },
            {
                "name": "equality_ids",
                "field-id": 135,
                "default": None,
                "type": _optional({"type": "array", "items": "int", "element-id": 136}),
                "doc": "Equality comparison field IDs",
            },
            {
                "name": "sort_order_id",
                "type": _optional("int"),
                "field-id": 140,
                "default": None,
                "doc": "Sort order ID",
            },
            *(
                [_optional_field("first_row_id", "long", 142, "The _row_id of the first row")]
                if format_version >= 3
                else []
            ),
            {
                "name": "referenced_data_file",
                "type": _optional("string"),
                "field-id": 143,
                "default": None,
                "doc": "Fully qualified location of a data file that all deletes reference",
            },
            *(
                [
                    _optional_field(
                        "content_offset", "long", 144, "Where the referenced content starts"
                    ),
                    _optional_field(
                        "content_size_in_bytes", "long", 145, "The referenced content's length"
                    ),
                ]
                if format_version >= 3
                else []
            ),
        ],
    }
    return {
        "type": "record",
        "name": "manifest_entry",
        "fields": [
            {
                "name": "status",
                "type": "int",
                "field-id": 0,
                "doc": "0=EXISTING, 1=ADDED, 2=DELETED",
            },
            {"name": "snapshot_id", "type": _optional("long"), "field-id": 1, "default": None},
            {"name": "sequence_number", "type": _optional("long"), "field-id": 3, "default": None},
            {
                "name": "file_sequence_number",
                "type": _optional("long"),
                "field-id": 4,
                "default": None,
            },
            {"name": "data_file", "type": data_file, "field-id": 2},
        ],
    }


MANIFEST_FILE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "manifest_file",
    "fields": [
        {
            "name": "manifest_path",
            "type": "string",
            "field-id": 500,
            "doc": "Location URI with FS scheme",
        },
        {"name": "manifest_length", "type": "long", "field-id": 501},
        {"name": "partition_spec_id", "type": "int", "field-id": 502},
        {"name": "content", "type": "int", "field-id": 517},
        {"name": "sequence_number", "type": "long", "field-id": 515},
        {"name": "min_sequence_number", "type": "long", "field-id": 516},
        {"name": "added_snapshot_id", "type": "long", "field-id": 503},
        {"name": "added_files_count", "type": "int", "field-id": 504},
        {"name": "existing_files_count", "type": "int", "field-id": 505},
        {"name": "deleted_files_count", "type": "int", "field-id": 506},
        {"name": "added_rows_count", "type": "long", "field-id": 512},
        {"name": "existing_rows_count", "type": "long", "field-id": 513},
        {"name": "deleted_rows_count", "type": "long", "field-id": 514},
        {
            "name": "partitions",
            "field-id": 507,
            "default": None,
            "type": _optional(
                {
                    "type": "array",
                    "element-id": 508,
                    "items": {
                        "type": "record",
                        "name": "r508",
                        "fields": [
                            {"name": "contains_null", "type": "boolean", "field-id": 509},
                            {
                                "name": "contains_nan",
                                "type": _optional("boolean"),
                                "field-id": 518,
                                "default": None,
                            },
                            {
                                "name": "lower_bound",
                                "type": _optional("bytes"),
                                "field-id": 510,
                                "default": None,
                            },
                            {
                                "name": "upper_bound",
                                "type": _optional("bytes"),
                                "field-id": 511,
                                "default": None,
                            },
                        ],
                    },
                }
            ),
        },
        {"name": "key_metadata", "type": _optional("bytes"), "field-id": 519, "default": None},
    ],
}

#: The v3 manifest list schema: v2's and the manifest's ``first_row_id``.
MANIFEST_FILE_SCHEMA_V3: dict[str, Any] = {
    **MANIFEST_FILE_SCHEMA,
    "fields": [
        *MANIFEST_FILE_SCHEMA["fields"],
        _optional_field("first_row_id", "long", 520, "The first _row_id its data files inherit"),
    ],
}

__all__ = [
    "MANIFEST_FILE_SCHEMA",
    "MANIFEST_FILE_SCHEMA_V3",
    "avro_type_for",
    "decimal_required_bytes",
    "manifest_entry_schema",
    "partition_record",
]
