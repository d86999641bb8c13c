"""The table schema: Iceberg fields with ids, built from dicts, typed fields or a pyarrow schema.

A :class:`Schema` is immutable. Besides the Iceberg JSON and Arrow conversions it validates the
data an append brings: :meth:`Schema.records_to_arrow` for Python dicts and
:meth:`Schema.coerce_arrow` for Arrow tables (pandas via ``pa.Table.from_pandas``). Both raise
:class:`~datashard.errors.ValidationError` naming the row, the field, the expected Iceberg type
and the actual Python or Arrow type; the row checks themselves live in
:mod:`datashard.iceberg.records`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import count
from typing import Any

import pyarrow as pa

from datashard.errors import SchemaError, ValidationError
from datashard.iceberg.types import (
    IcebergType,
    ListType,
    MapType,
    NestedField,
    StructType,
    field_id_of,
    field_to_json,
    from_arrow_field,
    parse_field,
    to_arrow_field,
)


class Schema:
    """An Iceberg schema: a struct of id-carrying fields plus a schema id.

    ``fields`` may hold :class:`NestedField` objects or dicts such as
    ``{"id": 1, "name": "user_id", "type": "long", "required": True}``, with nested types in
    their JSON form. Raises :class:`SchemaError` for a malformed field, an unknown type, a
    duplicate field id anywhere in the tree or a duplicate name within one struct.
    """

    __slots__ = (
        "schema_id",
        "fields",
        "identifier_field_ids",
        "_by_id",
        "_by_name",
        "_parents",
        "_arrow",
    )

    schema_id: int
    fields: tuple[NestedField, ...]
    identifier_field_ids: tuple[int, ...]
    _by_id: dict[int, NestedField]
    _by_name: dict[str, int]
    _parents: dict[int, int]
    _arrow: pa.Schema | None

    def __init__(
        self,
        schema_id: int = 0,
        fields: Sequence[Mapping[str, Any] | NestedField] = (),
        identifier_field_ids: Sequence[int] = (),
    ) -> None:
        if isinstance(schema_id, bool) or not isinstance(schema_id, int):
            raise SchemaError(f"schema_id must be an int, got {schema_id!r}")
        if isinstance(fields, (str, bytes, Mapping)):
            raise SchemaError(f"fields must be a sequence of fields, got {type(fields).__name__}")
        parsed = tuple(parse_field(f) for f in fields)
        object.__setattr__(self, "schema_id", schema_id)
        object.__setattr__(self, "fields", parsed)
        object.__setattr__(self, "identifier_field_ids", tuple(identifier_field_ids))
        by_id: dict[int, NestedField] = {}
        by_name: dict[str, int] = {}
        parents: dict[int, int] = {}
        _index(parsed, "", None, by_id, by_name, parents)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_parents", parents)
        object.__setattr__(self, "_arrow", None)
        for fid in self.identifier_field_ids:
            f = by_id.get(fid)
            if f is None or not f.required or not f.field_type.is_primitive:
                raise SchemaError(
                    f"identifier field id {fid} must name a required primitive field of the schema"
                )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Schema is immutable; cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schema):
            return NotImplemented
        return (self.schema_id, self.fields, self.identifier_field_ids) == (
            other.schema_id,
            other.fields,
            other.identifier_field_ids,
        )

    def __hash__(self) -> int:
        return hash((self.schema_id, self.fields, self.identifier_field_ids))

    def __repr__(self) -> str:
        inner = ", ".join(str(f) for f in self.fields)
        return f"Schema(schema_id={self.schema_id}, fields=[{inner}])"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Schema, (self.schema_id, self.fields, self.identifier_field_ids))

    def __iter__(self) -> Iterator[NestedField]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    # -- lookups ---------------------------------------------------------------------------

    def as_struct(self) -> StructType:
        """The schema's fields as a :class:`StructType`."""
        return StructType(self.fields)

    @property
    def column_names(self) -> list[str]:
        """Top-level field names, in schema order."""
        return [f.name for f in self.fields]

    @property
    def highest_field_id(self) -> int:
        """The largest field id in the schema, nested fields included (0 when empty)."""
        return max(self._by_id, default=0)

    @property
    def field_ids(self) -> frozenset[int]:
        """Every field id in the schema, nested ones included."""
        return frozenset(self._by_id)

    def find_field(self, name_or_id: str | int) -> NestedField:
        """The field with that id, or that (dotted, for nested) name.

        Nested names use ``.``: ``"address.city"``, ``"tags.element"``, ``"attrs.key"``,
        ``"attrs.value"``. Raises :class:`SchemaError` naming what was asked and what exists.
        """
        if isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
            f = self._by_id.get(name_or_id)
            if f is None:
                raise SchemaError(
                    f"no field with id {name_or_id} in schema {self.schema_id}; "
                    f"ids are {sorted(self._by_id)}"
                )
            return f
        fid = self._by_name.get(str(name_or_id))
        if fid is None:
            raise SchemaError(
                f"no field named {name_or_id!r} in schema {self.schema_id}; "
                f"columns are {sorted(self._by_name)}"
            )
        return self._by_id[fid]

    def field_by_path(self, path: str) -> NestedField:
        """The field at a dotted path (``"address.city"``); same as ``find_field(path)``."""
        return self.find_field(path)

    def find_type(self, name_or_id: str | int) -> IcebergType:
        """The type of :meth:`find_field`'s field."""
        return self.find_field(name_or_id).field_type

    def column_name(self, field_id: int) -> str:
        """The full dotted name of the field with that id."""
        for name, fid in self._by_name.items():
            if fid == field_id:
                return name
        raise SchemaError(f"no field with id {field_id} in schema {self.schema_id}")

    def parent_id(self, field_id: int) -> int | None:
        """The id of the struct/list/map field holding ``field_id``; ``None`` at top level."""
        return self._parents.get(field_id)

    def is_in_repeated(self, field_id: int) -> bool:
        """True when the field sits inside a list or a map (it has no single value per row)."""
        fid: int | None = self._parents.get(field_id)
        while fid is not None:
            if isinstance(self._by_id[fid].field_type, (ListType, MapType)):
                return True
            fid = self._parents.get(fid)
        return False

    def with_schema_id(self, schema_id: int) -> Schema:
        """A copy of this schema under another schema id."""
        return Schema(schema_id, self.fields, self.identifier_field_ids)

    # -- Iceberg JSON ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The spec JSON object (``type``, ``schema-id``, ``identifier-field-ids``, ``fields``)."""
        out: dict[str, Any] = {"type": "struct", "schema-id": self.schema_id}
        if self.identifier_field_ids:
            out["identifier-field-ids"] = list(self.identifier_field_ids)
        out["fields"] = [field_to_json(f) for f in self.fields]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        """Read the spec JSON object; raises :class:`SchemaError` when it is malformed."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"a schema must be a JSON object, got {type(data).__name__}")
        if data.get("type", "struct") != "struct":
            raise SchemaError(f"a schema must have type 'struct', got {data.get('type')!r}")
        fields = data.get("fields")
        if not isinstance(fields, list):
            raise SchemaError(f"a schema needs a 'fields' list, got {fields!r}")
        return cls(
            int(data.get("schema-id", 0)),
            fields,
            tuple(data.get("identifier-field-ids", ()) or ()),
        )

    # -- Arrow -----------------------------------------------------------------------------

    def to_arrow(self) -> pa.Schema:
        """The Arrow schema; every field (nested too) carries ``PARQUET:field_id`` metadata."""
        if self._arrow is None:
            object.__setattr__(self, "_arrow", pa.schema([to_arrow_field(f) for f in self.fields]))
        assert self._arrow is not None
        return self._arrow

    @classmethod
    def from_arrow(cls, pa_schema: pa.Schema, schema_id: int = 0) -> Schema:
        """A schema from an Arrow schema.

        Field ids come from ``PARQUET:field_id`` metadata where present; fields without one get
        fresh ids above the highest id present. Nullable Arrow fields become optional.
        """
        present: list[int] = []
        for f in pa_schema:
            _collect_ids(f, present)
        counter = count(max(present, default=0) + 1)
        fields = [
            from_arrow_field(f, lambda: next(counter))
            for f in pa_schema
            if not f.name.startswith("__index_level_")
        ]
        return cls(schema_id, fields)

    def empty_table(self) -> pa.Table:
        """A table with this schema and no rows."""
        return self.to_arrow().empty_table()

    # -- validation of appended data ---------------------------------------------------------

    def records_to_arrow(self, records: Sequence[Mapping[str, Any]]) -> pa.Table:
        """Validate Python dicts against this schema and build the Arrow table.

        Raises :class:`ValidationError` naming the row index, field, expected Iceberg type and
        actual Python type for a wrong type, a missing required field, an unknown field, or a
        ``None`` in a required field. An empty sequence gives an empty table (see
        :func:`check_not_empty`).
        """
        from datashard.iceberg.records import records_to_arrow

        return records_to_arrow(self, records)

    def coerce_arrow(self, table: pa.Table) -> pa.Table:
        """Check an Arrow table against this schema and return it in this schema's Arrow form.

        Columns may come in any order; missing optional columns become nulls; safe widenings
        (int8/16/32 to long, float to double, string/binary/large variants, dictionary
        encoding, timestamp units that convert without loss, decimal precision growth) are
        cast. Raises :class:`ValidationError` naming the field, expected and actual type, and
        the row for a null in a required column.
        """
        from datashard.iceberg.records import coerce_arrow

        return coerce_arrow(self, table)


def check_not_empty(num_rows: int, what: str = "append") -> None:
    """Raise :class:`ValidationError` when ``num_rows`` is 0: an empty ``what`` is refused."""
    if num_rows == 0:
        raise ValidationError(
            f"{what} of 0 rows: nothing to write; pass at least one row (no snapshot was created)"
        )


def _index(
    fields: Sequence[NestedField],
    prefix: str,
    parent: int | None,
    by_id: dict[int, NestedField],
    by_name: dict[str, int],
    parents: dict[int, int],
) -> None:
    names: set[str] = set()
    for f in fields:
        if f.name in names:
            where = f"struct {prefix[:-1]!r}" if prefix else "the schema"
            raise SchemaError(f"duplicate field name {f.name!r} in {where}")
        names.add(f.name)
        _add(f, prefix + f.name, parent, by_id, by_name, parents)


def _add(
    f: NestedField,
    name: str,
    parent: int | None,
    by_id: dict[int, NestedField],
    by_name: dict[str, int],
    parents: dict[int, int],
) -> None:
    if f.field_id in by_id:
        raise SchemaError(
            f"duplicate field id {f.field_id}: used by {by_id[f.field_id].name!r} and {name!r}"
        )
    if f.field_id < 0:
        raise SchemaError(f"field {name!r} has a negative id {f.field_id}")
    by_id[f.field_id] = f
    by_name[name] = f.field_id
    if parent is not None:
        parents[f.field_id] = parent
    t = f.field_type
    if isinstance(t, StructType):
        _index(t.fields, name + ".", f.field_id, by_id, by_name, parents)
    elif isinstance(t, ListType):
        _add(t.element_field, name + ".element", f.field_id, by_id, by_name, parents)
    elif isinstance(t, MapType):
        _add(t.key_field, name + ".key", f.field_id, by_id, by_name, parents)
        _add(t.value_field, name + ".value", f.field_id, by_id, by_name, parents)


def _collect_ids(field: pa.Field, out: list[int]) -> None:
    fid = field_id_of(field)
    if fid is not None:
        out.append(fid)
    t = field.type
    if isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            _collect_ids(t.field(i), out)
    elif pa.types.is_map(t):
        _collect_ids(t.key_field, out)
        _collect_ids(t.item_field, out)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        _collect_ids(t.value_field, out)


__all__ = ["Schema", "check_not_empty"]
