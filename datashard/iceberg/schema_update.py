"""Schema evolution by field id: add, rename, drop, reorder and widen columns.

Every change makes a new schema (a new schema id, appended to the table's schemas) and never
rewrites a data file: files are read by field id, so a renamed or moved column still reads, a
dropped one is not read, an added one reads as its ``initial-default`` (or nulls), and a widened
one is cast on read (int to long, float to double, decimal precision).

::

    with table.update_schema() as update:
        update.add_column("country", "string")                      # optional: nulls before
        update.add_column("version", "long", required=True, default=1)
        update.rename_column("event", "event_name")
        update.update_column("count", "long")                      # int -> long
        update.move_first("event_name")
        update.drop_column("legacy")

Refused with ``SchemaError`` naming the column and the types, before anything is written: an
unknown column, a name already taken, a required column without a default, a narrowing or
unrelated type change, making an optional column required, dropping a partition source or an
identifier column. Changes apply to top-level columns (``doc`` of any field stays as it was).

**Defaults.** A required column added with ``default=v`` carries ``initial-default`` and
``write-default`` (Iceberg format v3 fields in a v2 table): datashard and PyIceberg 0.12 read
``v`` for rows written before the column existed, and an append that leaves the column out
writes ``v``. Readers that ignore ``initial-default`` (older v2 readers) fail on such a column in
old files; add the column as optional (the default) where such readers matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from datashard.errors import SchemaError
from datashard.iceberg.defaults import default_to_json
from datashard.iceberg.metadata import TableMetadata
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntType,
    LongType,
    NestedField,
    parse_type,
)


def can_promote(old: IcebergType, new: IcebergType) -> bool:
    """Whether a column of type ``old`` may become ``new`` (Iceberg's allowed widenings)."""
    if old == new:
        return True
    if isinstance(old, IntType) and isinstance(new, LongType):
        return True
    if isinstance(old, FloatType) and isinstance(new, DoubleType):
        return True
    if isinstance(old, DecimalType) and isinstance(new, DecimalType):
        return new.scale == old.scale and new.precision >= old.precision
    return False


# --------------------------------------------------------------------------------------------
# the builder


@dataclass
class SchemaUpdate:
    """Changes to a schema, applied together in one commit (see :meth:`Table.update_schema`).

    Each method checks what it can against the current schema at once (``SchemaError``);
    :meth:`apply` re-checks everything on the base a commit builds on.
    """

    base: Schema
    _ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    _committer: Callable[[SchemaUpdate], Schema] | None = None

    # -- recording ----------------------------------------------------------------------------

    def add_column(
        self,
        name: str,
        field_type: str | IcebergType,
        *,
        required: bool = False,
        default: Any = None,
        doc: str | None = None,
    ) -> SchemaUpdate:
        """Add a top-level column; ``required=True`` needs a ``default`` for old rows."""
        t = field_type if isinstance(field_type, IcebergType) else parse_type(field_type)
        if not t.is_primitive:
            raise SchemaError(f"add_column({name!r}): only primitive types can be added, got {t}")
        if required and default is None:
            raise SchemaError(
                f"cannot add required column {name!r} ({t}) without a default: rows written "
                "before it have no value; pass default=... or add it as optional"
            )
        json_default = None if default is None else default_to_json(t, default)
        self._record("add", (name, t, required, json_default, doc))
        return self

    def rename_column(self, name: str, new_name: str) -> SchemaUpdate:
        """Rename a top-level column (its field id, and so its data, stays)."""
        self._record("rename", (name, new_name))
        return self

    def drop_column(self, name: str) -> SchemaUpdate:
        """Drop a top-level column (its data stays in old files, unread)."""
        self._record("drop", (name,))
        return self

    def update_column(
        self,
        name: str,
        field_type: str | IcebergType | None = None,
        *,
        required: bool | None = None,
        doc: str | None = None,
    ) -> SchemaUpdate:
        """Widen a column's type (int->long, float->double, decimal precision) and/or make a
        required column optional (``required=False``)."""
        t = None
        if field_type is not None:
            t = field_type if isinstance(field_type, IcebergType) else parse_type(field_type)
        self._record("update", (name, t, required, doc))
        return self

    def move_first(self, name: str) -> SchemaUpdate:
        self._record("move", (name, "first", None))
        return self

    def move_last(self, name: str) -> SchemaUpdate:
        self._record("move", (name, "last", None))
        return self

    def move_before(self, name: str, other: str) -> SchemaUpdate:
        self._record("move", (name, "before", other))
        return self

    def move_after(self, name: str, other: str) -> SchemaUpdate:
        self._record("move", (name, "after", other))
        return self

    def _record(self, op: str, args: tuple[Any, ...]) -> None:
        self._ops.append((op, args))
        try:
            _apply_ops(self.base, self._ops, self.base.highest_field_id, ())
        except SchemaError:
            self._ops.pop()
            raise

    # -- applying -----------------------------------------------------------------------------

    def new_schema(self, md: TableMetadata) -> tuple[Schema, int]:
        """The schema these changes make of ``md``'s current schema, with a new schema id, and
        the last column id after them (pure; ``SchemaError`` if they do not apply to ``md``)."""
        current = md.current_schema()
        protected = tuple(f.source_id for spec in md.partition_specs for f in spec.fields)
        fields, last_id = _apply_ops(current, self._ops, md.last_column_id, protected)
        new_id = max(s.schema_id for s in md.schemas) + 1
        return Schema(new_id, fields, current.identifier_field_ids), max(md.last_column_id, last_id)

    def commit(self) -> Schema:
        """Commit the changes; the new current schema."""
        if self._committer is None:
            raise SchemaError("this SchemaUpdate is not bound to a table")
        return self._committer(self)

    def __enter__(self) -> SchemaUpdate:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()


def _apply_ops(
    schema: Schema,
    ops: Sequence[tuple[str, tuple[Any, ...]]],
    last_column_id: int,
    protected: Sequence[int],
) -> tuple[list[NestedField], int]:
    fields = list(schema.fields)
    identifiers = set(schema.identifier_field_ids)

    def find(name: str, what: str) -> int:
        for i, f in enumerate(fields):
            if f.name == name:
                return i
        raise SchemaError(f"{what}: no column {name!r}; the columns are {[f.name for f in fields]}")

    def free(name: str, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{what}: a column name must be a non-empty string, got {name!r}")
        if any(f.name == name for f in fields):
            raise SchemaError(f"{what}: a column named {name!r} already exists")

    for op, args in ops:
        if op == "add":
            name, t, required, default, doc = args
            free(name, f"add_column({name!r})")
            last_column_id += 1
            fields.append(NestedField(last_column_id, name, t, required, doc, default, default))
        elif op == "rename":
            name, new_name = args
            i = find(name, f"rename_column({name!r})")
            free(new_name, f"rename_column({name!r}, {new_name!r})")
            fields[i] = replace(fields[i], name=new_name)
        elif op == "drop":
            (name,) = args
            i = find(name, f"drop_column({name!r})")
            fid = fields[i].field_id
            if fid in protected:
                raise SchemaError(
                    f"cannot drop column {name!r}: a partition spec of the table uses it; "
                    "evolve the partition spec first"
                )
            if fid in identifiers:
                raise SchemaError(f"cannot drop column {name!r}: it is an identifier field")
            del fields[i]
        elif op == "update":
            name, t, required, doc = args
            i = find(name, f"update_column({name!r})")
            f = fields[i]
            if t is not None and not can_promote(f.field_type, t):
                raise SchemaError(
                    f"cannot change column {name!r} from {f.field_type} to {t}: only int -> "
                    "long, float -> double and decimal(P,S) -> decimal(P',S) with P' >= P are "
                    "allowed (old files must still read)"
                )
            if required and not f.required:
                raise SchemaError(
                    f"cannot make optional column {name!r} ({f.field_type}) required: old rows "
                    "may hold nulls"
                )
            fields[i] = replace(
                f,
                field_type=t if t is not None else f.field_type,
                required=f.required if required is None else required,
                doc=f.doc if doc is None else doc,
            )
        elif op == "move":
            name, where, other = args
            i = find(name, f"move({name!r})")
            moved = fields.pop(i)
            if where == "first":
                fields.insert(0, moved)
            elif where == "last":
                fields.append(moved)
            else:
                if other == name:
                    raise SchemaError(f"cannot move column {name!r} relative to itself")
                j = find(other, f"move_{where}({name!r}, {other!r})")
                fields.insert(j if where == "before" else j + 1, moved)
        else:  # pragma: no cover - ops are recorded by the builder only
            raise SchemaError(f"unknown schema change {op!r}")
    return fields, last_column_id


__all__ = [
    "SchemaUpdate",
    "can_promote",
]
