"""Iceberg data types: the type model, its JSON form, and its mapping to Arrow.

Every type is a frozen dataclass; ``str(t)`` is the type's Iceberg name (``"long"``,
``"decimal(9,2)"``, ``"fixed[16]"``, ``"struct<...>"``). :func:`parse_type` reads the JSON form
the Iceberg spec uses in table metadata (a string for a primitive, an object for struct, list and
map) and :func:`type_to_json` writes it. :func:`to_arrow_type` / :func:`from_arrow_type` map to
and from pyarrow the way PyIceberg does (timestamps in microseconds, ``timestamptz`` as UTC,
``uuid`` as the Arrow ``arrow.uuid`` extension type, ``time`` as ``time64[us]``).

The format version 3 types are read: ``timestamp_ns`` and ``timestamptz_ns`` (Arrow
``timestamp[ns]``, UTC for the second), ``unknown`` (always null, Arrow ``null``), ``geometry``
and ``geography`` (stored as WKB, read as Arrow ``binary``). ``variant`` parses, but reading a
variant column raises :class:`~datashard.errors.UnsupportedFeatureError` naming it.

Nested Arrow fields carry their Iceberg field id in the ``PARQUET:field_id`` metadata key, which
is what Parquet writers (pyarrow, Spark, PyIceberg) store as the Parquet field id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datashard.errors import SchemaError, UnsupportedFeatureError

#: The Arrow field-metadata key holding an Iceberg field id; pyarrow writes it as the Parquet id.
FIELD_ID_KEY = b"PARQUET:field_id"


class IcebergType:
    """Base of every Iceberg type."""

    @property
    def is_primitive(self) -> bool:
        return not isinstance(self, (StructType, ListType, MapType, VariantType))


@dataclass(frozen=True)
class BooleanType(IcebergType):
    def __str__(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class IntType(IcebergType):
    """32-bit signed integer."""

    def __str__(self) -> str:
        return "int"


@dataclass(frozen=True)
class LongType(IcebergType):
    """64-bit signed integer."""

    def __str__(self) -> str:
        return "long"


@dataclass(frozen=True)
class FloatType(IcebergType):
    """32-bit IEEE 754 float."""

    def __str__(self) -> str:
        return "float"


@dataclass(frozen=True)
class DoubleType(IcebergType):
    """64-bit IEEE 754 float."""

    def __str__(self) -> str:
        return "double"


@dataclass(frozen=True)
class DecimalType(IcebergType):
    """Fixed-point decimal; precision 1..38, scale 0..precision."""

    precision: int
    scale: int

    def __post_init__(self) -> None:
        if not (1 <= self.precision <= 38) or not (0 <= self.scale <= self.precision):
            raise SchemaError(
                f"invalid decimal({self.precision},{self.scale}): expected 1 <= precision <= 38 "
                "and 0 <= scale <= precision"
            )

    def __str__(self) -> str:
        return f"decimal({self.precision},{self.scale})"


@dataclass(frozen=True)
class DateType(IcebergType):
    """Calendar date without time zone (days since 1970-01-01)."""

    def __str__(self) -> str:
        return "date"


@dataclass(frozen=True)
class TimeType(IcebergType):
    """Time of day in microseconds, without date or time zone."""

    def __str__(self) -> str:
        return "time"


@dataclass(frozen=True)
class TimestampType(IcebergType):
    """Timestamp in microseconds, without time zone."""

    def __str__(self) -> str:
        return "timestamp"


@dataclass(frozen=True)
class TimestamptzType(IcebergType):
    """Timestamp in microseconds, stored as UTC."""

    def __str__(self) -> str:
        return "timestamptz"


@dataclass(frozen=True)
class TimestampNsType(IcebergType):
    """Timestamp in nanoseconds, without time zone (format version 3)."""

    def __str__(self) -> str:
        return "timestamp_ns"


@dataclass(frozen=True)
class TimestamptzNsType(IcebergType):
    """Timestamp in nanoseconds, stored as UTC (format version 3)."""

    def __str__(self) -> str:
        return "timestamptz_ns"


@dataclass(frozen=True)
class UnknownType(IcebergType):
    """A column whose type is not known yet: always null, never stored (format version 3)."""

    def __str__(self) -> str:
        return "unknown"


@dataclass(frozen=True)
class VariantType(IcebergType):
    """Semi-structured values (format version 3); parsed, not read."""

    def __str__(self) -> str:
        return "variant"


@dataclass(frozen=True)
class GeometryType(IcebergType):
    """Geospatial features with planar edges, stored as WKB (format version 3)."""

    crs: str = "OGC:CRS84"

    def __str__(self) -> str:
        return "geometry" if self.crs == "OGC:CRS84" else f"geometry({self.crs})"


@dataclass(frozen=True)
class GeographyType(IcebergType):
    """Geospatial features on the sphere or spheroid, stored as WKB (format version 3)."""

    crs: str = "OGC:CRS84"
    algorithm: str = "spherical"

    def __str__(self) -> str:
        if self.crs == "OGC:CRS84" and self.algorithm == "spherical":
            return "geography"
        return f"geography({self.crs}, {self.algorithm})"


#: The types format version 3 added: a table of version 2 must not use them.
V3_TYPES = (
    TimestampNsType,
    TimestamptzNsType,
    UnknownType,
    VariantType,
    GeometryType,
    GeographyType,
)


@dataclass(frozen=True)
class StringType(IcebergType):
    """UTF-8 string."""

    def __str__(self) -> str:
        return "string"


@dataclass(frozen=True)
class UUIDType(IcebergType):
    """Universally unique identifier, 16 bytes."""

    def __str__(self) -> str:
        return "uuid"


@dataclass(frozen=True)
class BinaryType(IcebergType):
    """Arbitrary-length byte array."""

    def __str__(self) -> str:
        return "binary"


@dataclass(frozen=True)
class FixedType(IcebergType):
    """Byte array of a fixed length."""

    length: int

    def __post_init__(self) -> None:
        if self.length < 1:
            raise SchemaError(f"invalid fixed[{self.length}]: the length must be at least 1")

    def __str__(self) -> str:
        return f"fixed[{self.length}]"


@dataclass(frozen=True)
class NestedField:
    """A named, id-carrying field of a struct (or of a schema)."""

    field_id: int
    name: str
    field_type: IcebergType
    required: bool = True
    doc: str | None = None
    #: The spec's ``initial-default`` / ``write-default``, in their JSON single-value form
    #: (see :mod:`datashard.iceberg.defaults`): the value of rows written before the field
    #: existed, and the value an append that leaves the field out writes.
    initial_default: Any = None
    write_default: Any = None

    def __str__(self) -> str:
        req = "required" if self.required else "optional"
        return f"{self.field_id}: {self.name}: {req} {self.field_type}"


@dataclass(frozen=True)
class StructType(IcebergType):
    """A tuple of named fields."""

    fields: tuple[NestedField, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.fields, tuple):
            object.__setattr__(self, "fields", tuple(self.fields))

    def field(self, name_or_id: str | int) -> NestedField | None:
        """The direct child field with that name or id, or ``None``."""
        for f in self.fields:
            if (isinstance(name_or_id, int) and f.field_id == name_or_id) or f.name == name_or_id:
                return f
        return None

    def __str__(self) -> str:
        return "struct<" + ", ".join(str(f) for f in self.fields) + ">"


@dataclass(frozen=True)
class ListType(IcebergType):
    """A list of elements of one type; the element has its own field id."""

    element_id: int
    element_type: IcebergType
    element_required: bool = True

    @property
    def element_field(self) -> NestedField:
        return NestedField(self.element_id, "element", self.element_type, self.element_required)

    def __str__(self) -> str:
        return f"list<{self.element_type}>"


@dataclass(frozen=True)
class MapType(IcebergType):
    """A map from keys (always required) to values; key and value have their own field ids."""

    key_id: int
    key_type: IcebergType
    value_id: int
    value_type: IcebergType
    value_required: bool = True

    @property
    def key_field(self) -> NestedField:
        return NestedField(self.key_id, "key", self.key_type, True)

    @property
    def value_field(self) -> NestedField:
        return NestedField(self.value_id, "value", self.value_type, self.value_required)

    def __str__(self) -> str:
        return f"map<{self.key_type}, {self.value_type}>"


PrimitiveType = (
    BooleanType
    | IntType
    | LongType
    | FloatType
    | DoubleType
    | DecimalType
    | DateType
    | TimeType
    | TimestampType
    | TimestamptzType
    | TimestampNsType
    | TimestamptzNsType
    | UnknownType
    | GeometryType
    | GeographyType
    | StringType
    | UUIDType
    | BinaryType
    | FixedType
)

_SIMPLE: dict[str, IcebergType] = {
    "boolean": BooleanType(),
    "int": IntType(),
    "integer": IntType(),
    "long": LongType(),
    "float": FloatType(),
    "double": DoubleType(),
    "date": DateType(),
    "time": TimeType(),
    "timestamp": TimestampType(),
    "timestamptz": TimestamptzType(),
    "string": StringType(),
    "uuid": UUIDType(),
    "binary": BinaryType(),
    "timestamp_ns": TimestampNsType(),
    "timestamptz_ns": TimestamptzNsType(),
    "unknown": UnknownType(),
    "variant": VariantType(),
    "geometry": GeometryType(),
    "geography": GeographyType(),
}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_FIXED = re.compile(r"^fixed\[\s*(\d+)\s*\]$")
# geometry(C) and geography(C, A); Java writes the CRS bare, PyIceberg in quotes: take both
_GEOMETRY = re.compile(r"^geometry\s*\(\s*['\"]?([^'\",()]+?)['\"]?\s*\)$", re.IGNORECASE)
_GEOGRAPHY = re.compile(
    r"^geography\s*\(\s*['\"]?([^'\",()]+?)['\"]?\s*(?:,\s*['\"]?(\w+)['\"]?\s*)?\)$",
    re.IGNORECASE,
)
_EDGE_ALGORITHMS = ("spherical", "vincenty", "thomas", "andoyer", "karney")
VALID_TYPE_NAMES = (
    "boolean, int, long, float, double, decimal(P,S), date, time, timestamp, timestamptz, "
    "string, uuid, binary, fixed[N], and the nested forms {'type': 'struct'|'list'|'map', ...}; "
    "format version 3 adds timestamp_ns, timestamptz_ns, unknown, variant, geometry(C) and "
    "geography(C, A)"
)


def parse_type(json_value: Any) -> IcebergType:
    """Read an Iceberg type from its spec JSON form (or pass an ``IcebergType`` through).

    Accepts ``"long"``, ``"decimal(9,2)"``, ``"fixed[16]"``, and the objects
    ``{"type": "struct", "fields": [...]}``, ``{"type": "list", "element-id", "element",
    "element-required"}`` and ``{"type": "map", "key-id", "key", "value-id", "value",
    "value-required"}``. Raises :class:`SchemaError` naming the value and the valid types, or
    naming the key whose value is not a JSON boolean where one is required.
    """
    return _parse_type(json_value, "")


def _parse_type(json_value: Any, path: str) -> IcebergType:
    """:func:`parse_type` for the type of the field at ``path`` (``""``: not known)."""
    if isinstance(json_value, IcebergType):
        return json_value
    if isinstance(json_value, str):
        text = json_value.strip().lower()
        if text in _SIMPLE:
            return _SIMPLE[text]
        m = _DECIMAL.match(text)
        if m:
            return DecimalType(int(m.group(1)), int(m.group(2)))
        m = _FIXED.match(text)
        if m:
            return FixedType(int(m.group(1)))
        m = _GEOMETRY.match(json_value.strip())
        if m:
            return GeometryType(m.group(1))
        m = _GEOGRAPHY.match(json_value.strip())
        if m:
            algorithm = (m.group(2) or "spherical").lower()
            if algorithm not in _EDGE_ALGORITHMS:
                raise SchemaError(
                    f"unknown edge-interpolation algorithm {m.group(2)!r} in {json_value!r}; "
                    f"expected one of {', '.join(_EDGE_ALGORITHMS)}"
                )
            return GeographyType(m.group(1), algorithm)
        raise SchemaError(f"unknown Iceberg type {json_value!r}; valid types: {VALID_TYPE_NAMES}")
    if isinstance(json_value, Mapping):
        kind = json_value.get("type")
        inner = f"{path}." if path else ""
        try:
            if kind == "struct":
                return StructType(
                    tuple(_parse_field(f, inner) for f in json_value.get("fields", ()))
                )
            if kind == "list":
                return ListType(
                    _as_int(json_value["element-id"], "element-id"),
                    _parse_type(json_value["element"], inner + "element"),
                    _as_bool(json_value, "element-required", True, path),
                )
            if kind == "map":
                return MapType(
                    _as_int(json_value["key-id"], "key-id"),
                    _parse_type(json_value["key"], inner + "key"),
                    _as_int(json_value["value-id"], "value-id"),
                    _parse_type(json_value["value"], inner + "value"),
                    _as_bool(json_value, "value-required", True, path),
                )
        except KeyError as exc:
            raise SchemaError(
                f"nested type {dict(json_value)!r} lacks the key {exc.args[0]!r}"
            ) from None
        raise SchemaError(f"unknown Iceberg type {json_value!r}; valid types: {VALID_TYPE_NAMES}")
    raise SchemaError(
        f"an Iceberg type must be a string or an object, got {type(json_value).__name__}: "
        f"{json_value!r}; valid types: {VALID_TYPE_NAMES}"
    )


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{what} must be an integer, got {value!r}")
    return value


def _as_bool(obj: Mapping[str, Any], key: str, default: bool, path: str) -> bool:
    """``obj[key]`` (``default`` when absent), which must be a JSON boolean: the string
    ``"false"`` is truthy in Python, so no string, number or null is read as one."""
    value = obj.get(key, default)
    if not isinstance(value, bool):
        where = f"field {path!r}" if path else f"type {dict(obj)!r}"
        raise SchemaError(
            f"{where}: {key!r} must be a JSON boolean (true or false), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def parse_field(value: Any) -> NestedField:
    """Read a field from its JSON/dict form ``{"id", "name", "type", "required", "doc"}``.

    A :class:`NestedField` passes through. ``required`` defaults to ``False`` (the spec's
    optional), matching the JSON form written by every Iceberg implementation. Raises
    :class:`SchemaError` naming the field for a missing key, a bad type, or a ``required``,
    ``element-required`` or ``value-required`` that is not a JSON boolean.
    """
    return _parse_field(value, "")


def _parse_field(value: Any, prefix: str) -> NestedField:
    if isinstance(value, NestedField):
        return value
    if not isinstance(value, Mapping):
        raise SchemaError(
            f"a field must be a dict or NestedField, got {type(value).__name__}: {value!r}"
        )
    for key in ("id", "name", "type"):
        if key not in value:
            raise SchemaError(f"field {dict(value)!r} lacks the key {key!r}")
    name = value["name"]
    if not isinstance(name, str) or name == "":
        raise SchemaError(f"field name must be a non-empty string, got {name!r}")
    path = prefix + name
    required = _as_bool(value, "required", False, path)
    doc = value.get("doc")
    return NestedField(
        _as_int(value["id"], f"field {path!r} id"),
        name,
        _parse_type(value["type"], path),
        required,
        doc,
        value.get("initial-default"),
        value.get("write-default"),
    )


def type_to_json(t: IcebergType) -> Any:
    """The spec JSON form of ``t``: a string for a primitive, an object for a nested type."""
    if isinstance(t, StructType):
        return {"type": "struct", "fields": [field_to_json(f) for f in t.fields]}
    if isinstance(t, ListType):
        return {
            "type": "list",
            "element-id": t.element_id,
            "element": type_to_json(t.element_type),
            "element-required": t.element_required,
        }
    if isinstance(t, MapType):
        return {
            "type": "map",
            "key-id": t.key_id,
            "key": type_to_json(t.key_type),
            "value-id": t.value_id,
            "value": type_to_json(t.value_type),
            "value-required": t.value_required,
        }
    return str(t)


def field_to_json(f: NestedField) -> dict[str, Any]:
    """The spec JSON form of a field."""
    out: dict[str, Any] = {
        "id": f.field_id,
        "name": f.name,
        "required": f.required,
        "type": type_to_json(f.field_type),
    }
    if f.doc is not None:
        out["doc"] = f.doc
    if f.initial_default is not None:
        out["initial-default"] = f.initial_default
    if f.write_default is not None:
        out["write-default"] = f.write_default
    return out


#: The format version 3 types datashard writes into data files.
WRITTEN_V3_TYPES = (TimestampNsType, TimestamptzNsType)


def v3_types_in(
    t: IcebergType,
    path: str = "",
    types: tuple[type, ...] = V3_TYPES,
    skip: frozenset[int] = frozenset(),
) -> list[str]:
    """``"<column>: <type>"`` of each field in ``t`` (a schema struct or any type) whose type
    format version 3 added (or is one of ``types``), nested fields by their dotted path;
    fields whose id is in ``skip`` are left out (not their children)."""
    out: list[str] = []
    if isinstance(t, StructType):
        for f in t.fields:
            name = f"{path}.{f.name}" if path else f.name
            if isinstance(f.field_type, types) and f.field_id not in skip:
                out.append(f"{name}: {f.field_type}")
            out.extend(v3_types_in(f.field_type, name, types, skip))
    elif isinstance(t, ListType):
        for child in (t.element_field,):
            out.extend(v3_types_in(StructType((child,)), path, types, skip))
    elif isinstance(t, MapType):
        out.extend(v3_types_in(StructType((t.key_field, t.value_field)), path, types, skip))
    return out


def unwritten_types_in(t: IcebergType, skip: frozenset[int] = frozenset()) -> list[str]:
    """Like :func:`v3_types_in`, for the version 3 types datashard does not write (all but
    :data:`WRITTEN_V3_TYPES`: ``unknown``, ``variant``, ``geometry``, ``geography``)."""
    unwritten = tuple(c for c in V3_TYPES if c not in WRITTEN_V3_TYPES)
    return v3_types_in(t, "", unwritten, skip)


# ---------------------------------------------------------------------------------------------
# Arrow


def to_arrow_field(f: NestedField) -> pa.Field:
    """The Arrow field for ``f``, with ``PARQUET:field_id`` metadata (nested fields too).

    Raises :class:`UnsupportedFeatureError` naming the column for a ``variant``."""
    if isinstance(f.field_type, VariantType):
        raise UnsupportedFeatureError(
            f"column {f.name!r} (field id {f.field_id}) has type variant (format version 3), "
            "which datashard does not read; select the other columns"
        )
    meta = {FIELD_ID_KEY: str(f.field_id).encode()}
    if f.doc:
        meta[b"doc"] = f.doc.encode()
    return pa.field(f.name, to_arrow_type(f.field_type), nullable=not f.required, metadata=meta)


def to_arrow_type(t: IcebergType) -> pa.DataType:
    """The Arrow type datashard reads and writes for ``t``."""
    if isinstance(t, StructType):
        return pa.struct([to_arrow_field(f) for f in t.fields])
    if isinstance(t, ListType):
        return pa.list_(to_arrow_field(t.element_field))
    if isinstance(t, MapType):
        return pa.map_(to_arrow_field(t.key_field), to_arrow_field(t.value_field))
    simple = _TO_ARROW.get(type(t))
    if simple is not None:
        return simple()
    if isinstance(t, DecimalType):
        return pa.decimal128(t.precision, t.scale)
    if isinstance(t, FixedType):
        return pa.binary(t.length)
    if isinstance(t, (GeometryType, GeographyType)):
        return pa.binary()  # WKB, as the spec stores it
    if isinstance(t, VariantType):
        # the unshredded storage (Parquet's VARIANT group); :func:`to_arrow_field` refuses to
        # read a variant column, so this only lets a scan of the other columns be planned
        return pa.struct([pa.field("metadata", pa.binary(), False), ("value", pa.binary())])
    raise SchemaError(f"no Arrow type for Iceberg type {t!r}")


_TO_ARROW: dict[type, Callable[[], pa.DataType]] = {
    BooleanType: pa.bool_,
    IntType: pa.int32,
    LongType: pa.int64,
    FloatType: pa.float32,
    DoubleType: pa.float64,
    DateType: pa.date32,
    TimeType: lambda: pa.time64("us"),
    TimestampType: lambda: pa.timestamp("us"),
    TimestamptzType: lambda: pa.timestamp("us", tz="UTC"),
    TimestampNsType: lambda: pa.timestamp("ns"),
    TimestamptzNsType: lambda: pa.timestamp("ns", tz="UTC"),
    UnknownType: pa.null,
    StringType: pa.string,
    UUIDType: pa.uuid,
    BinaryType: pa.binary,
}

_UTC_NAMES = frozenset({"UTC", "utc", "+00:00", "Etc/UTC", "Z", "GMT", "Etc/GMT", "UCT"})

#: Callback that hands out a fresh field id for an Arrow field that carries none.
IdAllocator = Callable[[], int]


def field_id_of(field: pa.Field) -> int | None:
    """The ``PARQUET:field_id`` of an Arrow field, or ``None`` when it has none."""
    if field.metadata and FIELD_ID_KEY in field.metadata:
        raw = field.metadata[FIELD_ID_KEY]
        try:
            return int(raw)
        except ValueError:
            raise SchemaError(
                f"Arrow field {field.name!r} has a non-integer PARQUET:field_id {raw!r}"
            ) from None
    return None


def from_arrow_field(field: pa.Field, next_id: IdAllocator) -> NestedField:
    """The Iceberg field for an Arrow field; ids from ``PARQUET:field_id`` else ``next_id()``."""
    fid = field_id_of(field)
    meta = field.metadata or {}
    doc = meta[b"doc"].decode() if b"doc" in meta else None
    return NestedField(
        fid if fid is not None else next_id(),
        field.name,
        from_arrow_type(field.type, next_id, field.name),
        not field.nullable,
        doc,
    )


def from_arrow_type(
    pa_type: pa.DataType, next_id: IdAllocator | None = None, name: str = "<type>"
) -> IcebergType:
    """The Iceberg type for an Arrow type.

    Nested children take their ids from ``PARQUET:field_id`` metadata, else from ``next_id``
    (required then). Integers up to 32 bits (and uint8/uint16) map to ``int``, 64-bit and uint32
    to ``long``; float16 widens to ``float``; any timestamp unit maps to ``timestamp``, or to
    ``timestamptz`` when its zone is UTC. Raises :class:`SchemaError` naming ``name`` for a
    type Iceberg cannot hold (uint64, a non-UTC zone, null, dictionary ...).
    """

    def alloc() -> int:
        if next_id is None:
            raise SchemaError(
                f"Arrow field {name!r} has a nested child without PARQUET:field_id metadata; "
                "build the schema with Schema.from_arrow to assign ids"
            )
        return next_id()

    t = pa_type
    if isinstance(t, pa.BaseExtensionType):
        if isinstance(t, pa.UuidType):
            return UUIDType()
        t = t.storage_type
    if pa.types.is_struct(t):
        return StructType(tuple(from_arrow_field(t.field(i), alloc) for i in range(t.num_fields)))
    if pa.types.is_map(t):
        k = from_arrow_field(t.key_field, alloc)
        v = from_arrow_field(t.item_field, alloc)
        return MapType(k.field_id, k.field_type, v.field_id, v.field_type, v.required)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or (pa.types.is_fixed_size_list(t))
    ):
        e = from_arrow_field(t.value_field, alloc)
        return ListType(e.field_id, e.field_type, e.required)
    if pa.types.is_boolean(t):
        return BooleanType()
    if pa.types.is_integer(t):
        signed = pa.types.is_signed_integer(t)
        if t.bit_width <= 16 or (signed and t.bit_width == 32):
            return IntType()
        if t.bit_width == 32 or signed:
            return LongType()
    elif pa.types.is_float16(t) or pa.types.is_float32(t):
        return FloatType()
    elif pa.types.is_float64(t):
        return DoubleType()
    elif pa.types.is_decimal(t) and t.precision <= 38:
        return DecimalType(t.precision, t.scale)
    elif pa.types.is_date(t):
        return DateType()
    elif pa.types.is_time(t):
        return TimeType()
    elif pa.types.is_timestamp(t):
        if t.tz is None:
            return TimestampType()
        if t.tz in _UTC_NAMES:
            return TimestamptzType()
        raise SchemaError(
            f"Arrow field {name!r} has type {t}; Iceberg timestamptz is stored as UTC: convert "
            "the column to tz='UTC' first"
        )
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return StringType()
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return BinaryType()
    elif pa.types.is_fixed_size_binary(t):
        return FixedType(t.byte_width)
    elif pa.types.is_dictionary(t):
        return from_arrow_type(t.value_type, next_id, name)
    raise SchemaError(f"Arrow field {name!r} has type {pa_type}, which Iceberg v2 cannot hold")


__all__ = [
    "FIELD_ID_KEY",
    "BinaryType",
    "BooleanType",
    "DateType",
    "DecimalType",
    "DoubleType",
    "FixedType",
    "FloatType",
    "GeographyType",
    "GeometryType",
    "IcebergType",
    "IdAllocator",
    "IntType",
    "ListType",
    "LongType",
    "MapType",
    "NestedField",
    "PrimitiveType",
    "StringType",
    "StructType",
    "TimeType",
    "TimestampType",
    "TimestamptzType",
    "TimestampNsType",
    "TimestamptzNsType",
    "UUIDType",
    "UnknownType",
    "V3_TYPES",
    "VariantType",
    "field_id_of",
    "field_to_json",
    "from_arrow_field",
    "from_arrow_type",
    "parse_field",
    "parse_type",
    "to_arrow_field",
    "to_arrow_type",
    "type_to_json",
    "unwritten_types_in",
    "v3_types_in",
]
