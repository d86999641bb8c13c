"""A lazy polars frame over a scan: ``Scan.to_polars(lazy=True)``.

The frame is a polars IO source (``polars.io.plugins.register_io_source``): nothing is read
until it is collected, and then only through datashard's read path. What polars pushes down is
used:

- the columns the query needs (projection): only those are read;
- the filter (predicate): the parts datashard can express (comparisons of a column with a
  literal, ``is_null``, ``is_not_null``, ``is_between``, joined by ``&``, ``|``, ``~``; not
  comparisons of float columns, whose NaN polars orders differently) become the scan's
  filter, so files and row groups that cannot match are skipped and their bytes never
  fetched; the whole polars predicate is then applied to every batch, so the rows are exactly
  the ones polars would keep;
- a row limit (``head``): reading stops once it is reached.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from datashard.errors import DataShardError
from datashard.iceberg.expressions import Column, Expr, col
from datashard.iceberg.types import DoubleType, FloatType
from datashard.table.scan import Scan, optional_import

if TYPE_CHECKING:
    import polars as pl

_COMPARE = {"Eq": "==", "NotEq": "!=", "Lt": "<", "LtEq": "<=", "Gt": ">", "GtEq": ">="}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
#: literal kinds in polars' JSON form: "Dyn" ones as written, "Scalar" ones after type coercion
_LITERALS = frozenset(
    ["Int", "Float", "String", "Boolean", "Float32", "Float64"]
    + [f"{sign}Int{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)]
)
_OPERATORS: dict[str, Callable[[Column, Any], Expr]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def lazy_frame(scan: Scan) -> pl.LazyFrame:
    """``scan``'s rows as a ``polars.LazyFrame`` read through datashard when collected.
    ``ImportError`` naming the package when polars is not installed."""
    polars = optional_import("polars", "to_polars")
    from polars.io.plugins import register_io_source

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        narrowed = pushed_scan(scan, with_columns, predicate)
        return _frames(narrowed, with_columns, predicate, n_rows, batch_size)

    empty = polars.from_arrow(scan.to_arrow_batch_reader().schema.empty_table())
    frame: pl.LazyFrame = register_io_source(
        source,
        schema=empty.schema,
        explain_name="datashard",
        explain_detail=f"snapshot {scan.snapshot.snapshot_id if scan.snapshot else None}",
    )
    return frame


def pushed_scan(scan: Scan, with_columns: list[str] | None, predicate: pl.Expr | None) -> Scan:
    """The scan a collect reads: ``scan`` narrowed to ``with_columns`` plus the predicate's
    columns, with the part of ``predicate`` datashard can express and-ed to its filter."""
    columns = list(scan.columns) if with_columns is None else list(with_columns)
    if predicate is not None:
        for name in predicate.meta.root_names():
            if name not in columns:
                columns.append(name)
    if not columns:  # polars wants only a row count: read the narrowest column there is
        columns = list(scan.columns[:1])
    narrowed = scan.select(*columns)
    if predicate is None:
        return narrowed
    # Float columns are left to polars: it orders NaN above every number (``NaN > 1`` keeps the
    # row), where a datashard filter, like Iceberg's, keeps no NaN in a comparison.
    pushable = {
        f.name for f in scan.schema.fields if not isinstance(f.field_type, (FloatType, DoubleType))
    }
    for part in _conjuncts(_tree(predicate)):
        expr = _exact(part, pushable)
        if expr is None:
            continue
        try:
            narrowed = narrowed.where(expr)
        except DataShardError:
            continue  # e.g. a literal of another type than the column: polars filters it
    return narrowed


def _frames(
    scan: Scan,
    with_columns: list[str] | None,
    predicate: pl.Expr | None,
    n_rows: int | None,
    batch_size: int | None,
) -> Iterator[pl.DataFrame]:
    polars = optional_import("polars", "to_polars")
    left = n_rows
    if left is not None and left <= 0:
        return
    for batch in scan.to_batches(batch_size):
        frame = polars.from_arrow(batch)
        assert isinstance(frame, polars.DataFrame)
        if predicate is not None:
            frame = frame.filter(predicate)
        if with_columns is not None:
            frame = frame.select(with_columns)
        if left is not None:
            frame = frame.head(left)
            left -= frame.height
        yield frame
        if left is not None and left <= 0:
            return


def _tree(predicate: pl.Expr) -> Any:
    """The polars expression as its JSON tree (``{}`` when it cannot be serialized)."""
    try:
        return json.loads(predicate.meta.serialize(format="json"))
    except Exception:  # noqa: BLE001 - an expression polars cannot serialize is not pushed
        return {}


def _conjuncts(node: Any) -> list[Any]:
    """The parts of a chain of ``&``: each may be pushed on its own (dropping one only widens
    what is read; polars filters the rows anyway)."""
    binary = node.get("BinaryExpr") if isinstance(node, dict) else None
    if binary is not None and binary.get("op") in ("And", "LogicalAnd"):
        return _conjuncts(binary["left"]) + _conjuncts(binary["right"])
    return [node]


def _exact(node: Any, pushable: set[str]) -> Expr | None:
    """The datashard filter that keeps exactly the rows ``node`` keeps, or ``None``. Only
    comparisons of the ``pushable`` columns are translated."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    ((kind, body),) = node.items()
    if kind == "BinaryExpr":
        op = body.get("op")
        if op in ("And", "LogicalAnd", "Or", "LogicalOr"):
            left, right = _exact(body["left"], pushable), _exact(body["right"], pushable)
            if left is None or right is None:
                return None
            return left & right if op in ("And", "LogicalAnd") else left | right
        if op in _COMPARE:
            return _comparison(body["left"], _COMPARE[op], body["right"], pushable)
        return None
    if kind == "Function":
        function, inputs = body.get("function"), body.get("input", [])
        boolean = function.get("Boolean") if isinstance(function, dict) else None
        if boolean == "Not" and len(inputs) == 1:
            inner = _exact(inputs[0], pushable)
            return None if inner is None else ~inner
        if boolean in ("IsNull", "IsNotNull") and len(inputs) == 1:
            name = _column(inputs[0])
            if name is None:
                return None
            return col(name).is_null() if boolean == "IsNull" else col(name).not_null()
        if isinstance(boolean, dict) and "IsBetween" in boolean and len(inputs) == 3:
            closed = boolean["IsBetween"].get("closed")
            low_op = ">=" if closed in ("Both", "Left") else ">"
            high_op = "<=" if closed in ("Both", "Right") else "<"
            low = _comparison(inputs[0], low_op, inputs[1], pushable)
            high = _comparison(inputs[0], high_op, inputs[2], pushable)
            return None if low is None or high is None else low & high
    return None


def _comparison(left: Any, op: str, right: Any, pushable: set[str]) -> Expr | None:
    name, value = _column(left), _literal(right)
    if name is None or value is _NONE:
        name, value, op = _column(right), _literal(left), _FLIPPED[op]
    if name is None or name not in pushable or value is _NONE or value is None:
        return None
    return _OPERATORS[op](col(name), value)


def _column(node: Any) -> str | None:
    if isinstance(node, dict) and isinstance(node.get("Column"), str):
        return str(node["Column"])
    return None


_NONE = object()


def _literal(node: Any) -> Any:
    """The Python value of a plain literal (int, float, str, bool), else ``_NONE``."""
    literal = node.get("Literal") if isinstance(node, dict) else None
    if not isinstance(literal, dict) or len(literal) != 1:
        return _NONE
    ((_, inner),) = literal.items()  # "Dyn" (a Python literal) or "Scalar" (a typed one)
    if not isinstance(inner, dict) or len(inner) != 1:
        return _NONE
    ((kind, value),) = inner.items()
    if kind not in _LITERALS or isinstance(value, (dict, list)):
        return _NONE
    return value


__all__ = ["lazy_frame", "pushed_scan"]
