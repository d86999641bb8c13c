"""Row filters: built with ``col("x") > 5``, bound to a schema, used twice.

1. Before any data file is opened, a bound filter is checked against the file's manifest
   statistics (lower/upper bounds, null counts, value counts): :func:`might_match` answers
   "could any row of this file match?" and is conservative: ``False`` only when provably none can.
2. On the rows read, :func:`to_arrow_expression` gives the same filter as a pyarrow compute
   expression.

Building::

    col("user_id") == 7
    (col("ts") >= 10) & (col("event").isin(["login", "logout"]))
    ~col("note").is_null() | (col("x") != 3)

A tuple ``("x", ">", 5)`` and a list of tuples (all must hold) are accepted too.

Null semantics are SQL's: a comparison, ``in`` or ``not in`` against a null value is not a
match (use ``is_null()``), and ``~`` of an unknown stays unknown.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from datashard.errors import ValidationError
from datashard.iceberg.conversions import decimal_unscaled, to_python
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IntType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    to_arrow_type,
)

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "not null"]

_COMPARISONS: tuple[Op, ...] = ("==", "!=", "<", "<=", ">", ">=")
_SETS: tuple[Op, ...] = ("in", "not in")
_UNARY: tuple[Op, ...] = ("is null", "not null")
_ALIASES: Mapping[str, Op] = {
    "=": "==",
    "==": "==",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "in": "in",
    "not in": "not in",
    "not_in": "not in",
    "is null": "is null",
    "is_null": "is null",
    "not null": "not null",
    "not_null": "not null",
    "is not null": "not null",
}
_NEGATED: Mapping[Op, Op] = {
    "==": "!=",
    "!=": "==",
    "<": ">=",
    ">=": "<",
    ">": "<=",
    "<=": ">",
    "in": "not in",
    "not in": "in",
    "is null": "not null",
    "not null": "is null",
}


# --------------------------------------------------------------------------------------------
# unbound expressions


class Expr:
    """A filter over named columns; combine with ``&``, ``|`` and ``~``."""

    def __and__(self, other: Expr) -> Expr:
        return And(self, _check_expr(other))

    def __or__(self, other: Expr) -> Expr:
        return Or(self, _check_expr(other))

    def __invert__(self) -> Expr:
        return Not(self)

    def __bool__(self) -> bool:
        raise TypeError(
            "a filter has no truth value: combine filters with & | ~, not 'and'/'or'/'not', "
            "and write 1 < col('x') < 5 as (col('x') > 1) & (col('x') < 5)"
        )


@dataclass(frozen=True, eq=False)
class AlwaysTrue(Expr):
    """Matches every row."""


@dataclass(frozen=True, eq=False)
class Predicate(Expr):
    """``column <op> values``: one value for a comparison, many for ``in``, none for nulls."""

    column: str
    op: Op
    values: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        if self.op in _UNARY:
            return f"{self.column} {self.op}"
        shown = self.values[0] if self.op in _COMPARISONS else list(self.values)
        return f"{self.column} {self.op} {shown!r}"


@dataclass(frozen=True, eq=False)
class And(Expr):
    left: Expr
    right: Expr


@dataclass(frozen=True, eq=False)
class Or(Expr):
    left: Expr
    right: Expr


@dataclass(frozen=True, eq=False)
class Not(Expr):
    child: Expr


class Column:
    """A column reference: ``col("x") > 5`` makes a :class:`Predicate`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"a column name must be a non-empty str, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"col({self.name!r})"

    def __hash__(self) -> int:
        return hash(("col", self.name))

    def _cmp(self, op: Op, value: Any) -> Predicate:
        if value is None:
            raise ValidationError(
                f"column {self.name!r}: cannot compare with None; use col({self.name!r})."
                + ("is_null()" if op == "==" else "not_null()")
            )
        return Predicate(self.name, op, (value,))

    def __eq__(self, value: object) -> Predicate:  # type: ignore[override]
        return self._cmp("==", value)

    def __ne__(self, value: object) -> Predicate:  # type: ignore[override]
        return self._cmp("!=", value)

    def __lt__(self, value: Any) -> Predicate:
        return self._cmp("<", value)

    def __le__(self, value: Any) -> Predicate:
        return self._cmp("<=", value)

    def __gt__(self, value: Any) -> Predicate:
        return self._cmp(">", value)

    def __ge__(self, value: Any) -> Predicate:
        return self._cmp(">=", value)

    def isin(self, values: Iterable[Any]) -> Predicate:
        """Matches rows whose value is one of ``values``."""
        return Predicate(self.name, "in", _set_values(self.name, values))

    def not_in(self, values: Iterable[Any]) -> Predicate:
        """Matches rows whose value is not null and none of ``values``."""
        return Predicate(self.name, "not in", _set_values(self.name, values))

    notin = not_in

    def is_null(self) -> Predicate:
        return Predicate(self.name, "is null")

    def not_null(self) -> Predicate:
        return Predicate(self.name, "not null")

    is_not_null = not_null


def col(name: str) -> Column:
    """A reference to the column ``name`` (a top-level field of the table schema)."""
    return Column(name)


def _set_values(name: str, values: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValidationError(
            f"column {name!r}: isin/not_in takes a list of values, got {type(values).__name__}"
        )
    out = tuple(values)
    if any(v is None for v in out):
        raise ValidationError(f"column {name!r}: a value list cannot hold None; use is_null()")
    return out


def _check_expr(value: object) -> Expr:
    if not isinstance(value, Expr):
        raise TypeError(f"expected a filter expression, got {type(value).__name__}: {value!r}")
    return value


FilterLike = Expr | tuple[Any, ...] | Sequence[tuple[Any, ...]] | None


def to_expr(value: FilterLike) -> Expr:
    """Accept an :class:`Expr`, ``None`` (everything), ``("x", ">", 5)`` or a list of tuples
    (all must hold); ``ValidationError`` for anything else."""
    if value is None:
        return AlwaysTrue()
    if isinstance(value, Expr):
        return value
    if isinstance(value, tuple):
        return _from_tuple(value)
    if isinstance(value, list):
        out: Expr = AlwaysTrue()
        for item in value:
            if not isinstance(item, tuple):
                raise ValidationError(
                    f"a filter list holds tuples like ('x', '>', 5), got {item!r}"
                )
            part = _from_tuple(item)
            out = part if isinstance(out, AlwaysTrue) else And(out, part)
        return out
    raise ValidationError(
        f"filter must be an expression (col('x') > 5), a tuple ('x', '>', 5) or a list of "
        f"tuples, got {type(value).__name__}: {value!r}"
    )


def _from_tuple(item: tuple[Any, ...]) -> Expr:
    if len(item) not in (2, 3) or not isinstance(item[0], str) or not isinstance(item[1], str):
        raise ValidationError(
            f"a filter tuple is (column, op, value) or (column, op), got {item!r}"
        )
    op = _ALIASES.get(item[1].strip().lower())
    if op is None:
        raise ValidationError(
            f"unknown filter operator {item[1]!r} in {item!r}; expected one of: "
            + ", ".join(sorted(set(_ALIASES.values())))
        )
    c = col(item[0])
    if op in _UNARY:
        if len(item) != 2 and item[2] is not None:
            raise ValidationError(f"operator {op!r} takes no value, got {item!r}")
        return c.is_null() if op == "is null" else c.not_null()
    if len(item) != 3:
        raise ValidationError(f"operator {op!r} needs a value, got {item!r}")
    if op in _SETS:
        return c.isin(item[2]) if op == "in" else c.not_in(item[2])
    return c._cmp(op, item[2])


def referenced_columns(expr: Expr) -> set[str]:
    """The names of the columns ``expr`` reads."""
    if isinstance(expr, Predicate):
        return {expr.column}
    if isinstance(expr, (And, Or)):
        return referenced_columns(expr.left) | referenced_columns(expr.right)
    if isinstance(expr, Not):
        return referenced_columns(expr.child)
    return set()


# --------------------------------------------------------------------------------------------
# binding


@dataclass(frozen=True)
class BoundPredicate:
    """A predicate resolved to a field id and a type; ``values`` are coerced to that type."""

    field_id: int
    name: str
    iceberg_type: Any
    arrow_type: pa.DataType
    op: Op
    values: tuple[Any, ...]


@dataclass(frozen=True)
class BoundAnd:
    left: Bound
    right: Bound


@dataclass(frozen=True)
class BoundOr:
    left: Bound
    right: Bound


@dataclass(frozen=True)
class BoundTrue:
    pass


@dataclass(frozen=True)
class BoundFalse:
    pass


Bound = BoundPredicate | BoundAnd | BoundOr | BoundTrue | BoundFalse


def bind(
    expr: Expr,
    fields: Mapping[str, NestedField],
    arrow_types: Mapping[str, pa.DataType],
) -> Bound:
    """Resolve ``expr`` against top-level ``fields`` (name -> field) with ``~`` pushed down.

    Raises ``ValidationError`` for an unknown column (naming the columns there are) or a value
    that does not fit the column's type (naming both types).
    """
    return _bind(expr, fields, arrow_types, negate=False)


def bind_schema(filter: FilterLike, schema: Schema) -> Bound:
    """``filter`` bound to the top-level columns of ``schema`` (see :func:`bind`)."""
    fields = {f.name: f for f in schema.fields}
    arrow_types = {f.name: to_arrow_type(f.field_type) for f in schema.fields}
    return bind(to_expr(filter), fields, arrow_types)


def _bind(
    expr: Expr,
    fields: Mapping[str, NestedField],
    arrow_types: Mapping[str, pa.DataType],
    negate: bool,
) -> Bound:
    if isinstance(expr, AlwaysTrue):
        return BoundFalse() if negate else BoundTrue()
    if isinstance(expr, Not):
        return _bind(expr.child, fields, arrow_types, not negate)
    if isinstance(expr, (And, Or)):
        left = _bind(expr.left, fields, arrow_types, negate)
        right = _bind(expr.right, fields, arrow_types, negate)
        conj = isinstance(expr, And) != negate  # De Morgan
        return _and(left, right) if conj else _or(left, right)
    if isinstance(expr, Predicate):
        field = fields.get(expr.column)
        if field is None:
            raise ValidationError(
                f"unknown column {expr.column!r} in filter {expr!r}; the table has: "
                + ", ".join(fields)
            )
        arrow_type = arrow_types[expr.column]
        op = _NEGATED[expr.op] if negate else expr.op
        values = tuple(_coerce_literal(expr, field, arrow_type, v) for v in expr.values)
        return BoundPredicate(field.field_id, field.name, field.field_type, arrow_type, op, values)
    raise TypeError(f"not a filter expression: {expr!r}")


def _and(a: Bound, b: Bound) -> Bound:
    if isinstance(a, BoundFalse) or isinstance(b, BoundFalse):
        return BoundFalse()
    if isinstance(a, BoundTrue):
        return b
    if isinstance(b, BoundTrue):
        return a
    return BoundAnd(a, b)


def _or(a: Bound, b: Bound) -> Bound:
    if isinstance(a, BoundTrue) or isinstance(b, BoundTrue):
        return BoundTrue()
    if isinstance(a, BoundFalse):
        return b
    if isinstance(b, BoundFalse):
        return a
    return BoundOr(a, b)


def _coerce_literal(
    expr: Predicate, field: NestedField, arrow_type: pa.DataType, value: Any
) -> Any:
    """The literal as a Python value pyarrow accepts for ``arrow_type``."""
    plain = _plain_literal(field.field_type, value)
    if plain is not _NO_PLAIN:
        return plain
    try:
        return pa.scalar(value, type=arrow_type).as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(
            f"filter {expr!r}: value {value!r} ({type(value).__name__}) does not fit column "
            f"{field.name!r} of type {field.field_type} (arrow {arrow_type})"
        ) from exc


_NO_PLAIN = object()
_INT_RANGE = {IntType: (-(2**31), 2**31 - 1), LongType: (-(2**63), 2**63 - 1)}


def _plain_literal(t: Any, v: Any) -> Any:
    """What ``pa.scalar(v, type).as_py()`` gives for the common literal types, in plain Python
    (pyarrow imports pandas to look at any Python value it converts; a scan's planning must
    not); ``_NO_PLAIN`` for anything else, which pyarrow then converts."""
    kind = type(v)
    if isinstance(t, BooleanType) and kind is bool:
        return v
    if type(t) in _INT_RANGE and kind is int:
        low, high = _INT_RANGE[type(t)]
        return v if low <= v <= high else _NO_PLAIN
    if isinstance(t, DoubleType) and kind in (int, float):
        return float(v)
    if (isinstance(t, StringType) and kind is str) or (isinstance(t, BinaryType) and kind is bytes):
        return v
    if isinstance(t, DateType) and kind is dt.date:
        return v
    if isinstance(t, TimestampType) and kind is dt.datetime and v.tzinfo is None:
        return v
    if isinstance(t, TimestamptzType) and kind is dt.datetime and v.tzinfo is not None:
        return v.astimezone(dt.timezone.utc)
    if isinstance(t, DecimalType) and kind is Decimal:
        unscaled = decimal_unscaled(v, t.scale)
        if unscaled is None or len(str(abs(unscaled))) > t.precision:
            return _NO_PLAIN
        digits = tuple(int(c) for c in str(abs(unscaled)))
        return Decimal((1 if unscaled < 0 else 0, digits, -t.scale))
    return _NO_PLAIN


def _python_value(t: Any, physical: Any, arrow_type: pa.DataType) -> Any:
    """A decoded bound (days, microseconds ...) as the literal's form (date, datetime ...)."""
    if isinstance(t, (DateType, TimeType, TimestampType, TimestamptzType)):
        return to_python(t, physical)
    if isinstance(t, (BooleanType, IntType, LongType, FloatType, DoubleType, StringType)):
        return physical
    if isinstance(t, (BinaryType, DecimalType)):
        return physical
    return pa.scalar(physical, type=arrow_type).as_py()


# --------------------------------------------------------------------------------------------
# pruning by manifest statistics


class FileStats(Protocol):
    """What a manifest says about one data file (the ``DataFile`` fields we need)."""

    @property
    def record_count(self) -> int: ...
    @property
    def value_counts(self) -> Mapping[int, int] | None: ...
    @property
    def null_value_counts(self) -> Mapping[int, int] | None: ...
    @property
    def lower_bounds(self) -> Mapping[int, bytes] | None: ...
    @property
    def upper_bounds(self) -> Mapping[int, bytes] | None: ...


#: ``decode(type, bytes)``: a bound's single-value serialization as a Python value.
BoundDecoder = Callable[[Any, bytes], Any]


def might_match(bound: Bound, stats: FileStats, decode: BoundDecoder) -> bool:
    """Whether any row of the file with ``stats`` could match; ``False`` only when provably not.

    ``decode(type, bytes)`` turns a bound's single-value serialization into a Python value
    comparable with the bound literal (as pyarrow's ``as_py`` gives it).
    """
    if isinstance(bound, BoundTrue):
        return True
    if isinstance(bound, BoundFalse):
        return False
    if isinstance(bound, BoundAnd):
        return might_match(bound.left, stats, decode) and might_match(bound.right, stats, decode)
    if isinstance(bound, BoundOr):
        return might_match(bound.left, stats, decode) or might_match(bound.right, stats, decode)
    if stats.record_count == 0:
        return False
    try:
        return _predicate_might_match(bound, stats, decode)
    except Exception:  # an undecodable or incomparable bound proves nothing: read the file
        return True


def _count(counts: Mapping[int, int] | None, field_id: int) -> int | None:
    if not counts:
        return None
    return counts.get(field_id)


def _predicate_might_match(p: BoundPredicate, stats: FileStats, decode: BoundDecoder) -> bool:
    fid = p.field_id
    nulls = _count(stats.null_value_counts, fid)
    values = _count(stats.value_counts, fid)
    all_null = nulls is not None and values is not None and nulls >= values
    if p.op == "is null":
        return nulls is None or nulls > 0
    if p.op == "not null":
        return not all_null
    if all_null:
        return False  # every other operator needs a non-null value
    if p.op in ("!=", "not in"):
        return True
    if any(isinstance(v, float) and math.isnan(v) for v in p.values):
        return True
    lower = _bound(stats.lower_bounds, p, decode)
    upper = _bound(stats.upper_bounds, p, decode)
    if p.op == "in":
        return any(_in_range(v, lower, upper) for v in p.values)
    v = p.values[0]
    if p.op == "==":
        return _in_range(v, lower, upper)
    if p.op == "<":
        return lower is None or lower < v
    if p.op == "<=":
        return lower is None or lower <= v
    if p.op == ">":
        return upper is None or upper > v
    if p.op == ">=":
        return upper is None or upper >= v
    return True


def _bound(bounds: Mapping[int, bytes] | None, p: BoundPredicate, decode: BoundDecoder) -> Any:
    if not bounds or p.field_id not in bounds:
        return None
    value = decode(p.iceberg_type, bounds[p.field_id])
    if isinstance(value, float) and math.isnan(value):
        return None
    # the codec's representation (days, micros ...) as the literal's (date, datetime ...)
    return _python_value(p.iceberg_type, value, p.arrow_type)


def _in_range(v: Any, lower: Any, upper: Any) -> bool:
    if lower is not None and v < lower:
        return False
    if upper is not None and v > upper:
        return False
    return True


# --------------------------------------------------------------------------------------------
# rows


def must_match(bound: Bound, stats: FileStats, decode: BoundDecoder) -> bool:
    """Whether the statistics prove that EVERY row of the file matches ``bound`` (strict:
    ``False`` when they cannot tell); the counterpart of :func:`might_match`."""
    if isinstance(bound, BoundTrue):
        return True
    if isinstance(bound, BoundAnd):
        return must_match(bound.left, stats, decode) and must_match(bound.right, stats, decode)
    if isinstance(bound, BoundOr):
        return must_match(bound.left, stats, decode) or must_match(bound.right, stats, decode)
    if not isinstance(bound, BoundPredicate):
        return False
    try:
        return _predicate_must_match(bound, stats, decode)
    except Exception:  # an undecodable or incomparable bound proves nothing
        return False


def _predicate_must_match(p: BoundPredicate, stats: FileStats, decode: BoundDecoder) -> bool:
    fid = p.field_id
    nulls = _count(stats.null_value_counts, fid)
    values = _count(stats.value_counts, fid)
    if p.op == "is null":
        return nulls is not None and values is not None and nulls == values
    if nulls != 0:
        return False  # unknown, or a null row that matches no comparison
    if p.op == "not null":
        return True
    if isinstance(p.iceberg_type, (StringType, BinaryType, FixedType)):
        return False  # bounds may be truncated: they cannot prove every value
    nans = getattr(stats, "nan_value_counts", None)
    if isinstance(p.iceberg_type, (FloatType, DoubleType)) and _count(nans, fid) != 0:
        return False
    raw_lo = (stats.lower_bounds or {}).get(fid)
    raw_hi = (stats.upper_bounds or {}).get(fid)
    if raw_lo is None or raw_hi is None:
        return False
    lo = _python_value(p.iceberg_type, decode(p.iceberg_type, raw_lo), p.arrow_type)
    hi = _python_value(p.iceberg_type, decode(p.iceberg_type, raw_hi), p.arrow_type)
    v = p.values[0] if p.values else None
    if p.op == "==":
        return bool(lo == hi == v)
    if p.op == "!=":
        return bool(v < lo or v > hi)
    if p.op == "<":
        return bool(hi < v)
    if p.op == "<=":
        return bool(hi <= v)
    if p.op == ">":
        return bool(lo > v)
    if p.op == ">=":
        return bool(lo >= v)
    if p.op == "in":
        return bool(lo == hi and lo in p.values)
    if p.op == "not in":
        return all(x < lo or x > hi for x in p.values)
    return False


def to_arrow_expression(bound: Bound) -> pc.Expression:
    """The filter as a pyarrow compute expression over columns named by the current schema."""
    if isinstance(bound, BoundTrue):
        return pc.scalar(True)
    if isinstance(bound, BoundFalse):
        return pc.scalar(False)
    if isinstance(bound, BoundAnd):
        return to_arrow_expression(bound.left) & to_arrow_expression(bound.right)
    if isinstance(bound, BoundOr):
        return to_arrow_expression(bound.left) | to_arrow_expression(bound.right)
    field = pc.field(bound.name)
    if bound.op == "is null":
        return field.is_null()
    if bound.op == "not null":
        return field.is_valid()
    if bound.op in _SETS:
        value_set = pa.array(list(bound.values), type=bound.arrow_type)
        member = field.isin(value_set)
        # SQL: a null is in no set and outside no set.
        return member if bound.op == "in" else (~member & field.is_valid())
    scalar = pc.scalar(pa.scalar(bound.values[0], type=bound.arrow_type))
    ops = {
        "==": field == scalar,
        "!=": field != scalar,
        "<": field < scalar,
        "<=": field <= scalar,
        ">": field > scalar,
        ">=": field >= scalar,
    }
    return ops[bound.op]


__all__ = [
    "AlwaysTrue",
    "And",
    "Bound",
    "BoundPredicate",
    "Column",
    "Expr",
    "FilterLike",
    "Not",
    "Or",
    "Predicate",
    "bind",
    "bind_schema",
    "col",
    "might_match",
    "must_match",
    "referenced_columns",
    "to_arrow_expression",
    "to_expr",
]
