"""What every ``datashard`` command shares: opening warehouses and URIs, progress bars, output
(text or ``--json``), confirmation, and parsing filters, times and ages."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import fnmatch
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from datashard.errors import DataShardError, ValidationError

if TYPE_CHECKING:
    from datashard.storage.base import ObjectMeta, StorageBackend

CHUNK = 8 * 1024 * 1024
COPY_THREADS = 4
#: ranges of one object read at once by ``cp``
CHUNKS_IN_FLIGHT = 4
#: ``rm`` and ``drop`` show at most this many keys before asking.
SHOW_KEYS = 20


class CliError(DataShardError):
    """A refusal of the command itself (exit code 1)."""


# -- storage URIs --------------------------------------------------------------------------


#: Config fields a URI gives (``s3://bucket/prefix``): never taken from the environment.
_URI_FIELDS = {"bucket", "container", "prefix", "path", "root"}


def open_root(uri: str) -> Any:
    """The backend rooted at ``uri``; settings of the environment's storage type apply when
    ``uri`` is of that type (the URI wins for bucket, container and prefix)."""
    from datashard.storage.config import (
        COMMON_ENV,
        STORAGE_TYPES,
        config_from_env,
        open_backend,
        split_scheme,
        storage_type,
    )

    scheme, rest = split_scheme(uri)
    if scheme == "file" and "://" not in uri:
        uri = "file://" + os.path.abspath(rest)
    kind = storage_type()
    if kind == "local" or STORAGE_TYPES.get(kind) != scheme:
        return open_backend(uri)
    env_config = config_from_env()
    cls = type(env_config)
    variables = {**COMMON_ENV, **cls.env_variables()}
    from_env = {field for name, field in variables.items() if name in os.environ}
    options = {
        f.name: getattr(env_config, f.name)
        for f in dataclasses.fields(env_config)
        if f.init and f.name in from_env and f.name not in _URI_FIELDS
    }
    return open_backend(uri, **options)


def locate(uri: str) -> tuple[Any, str]:
    """(backend, key): the backend at the parent of ``uri`` and the last segment, or the
    backend at ``uri`` and ``""`` when ``uri`` is a bucket, container or ``/``. A glob splits
    before its first wildcard segment (``s3://b/raw/*/x.parquet``: ``s3://b/raw``,
    ``*/x.parquet``)."""
    from datashard.storage.config import split_scheme

    scheme, rest = split_scheme(uri)
    if scheme == "file":
        rest = os.path.abspath(rest if "://" not in uri else uri.split("://", 1)[1])
        prefix = "file://"
    else:
        rest = rest.rstrip("/")
        prefix = f"{scheme}://"
    wild = re.search(r"[*?\[]", rest)
    fixed = rest[: wild.start()] if wild else rest
    if "/" not in fixed.strip("/"):
        if scheme == "file":
            return open_root(prefix + "/"), rest.lstrip("/")
        if not wild:
            return open_root(prefix + rest), ""
    cut = fixed.rstrip("/").rfind("/") if not wild else fixed.rfind("/")
    parent, key = rest[:cut], rest[cut + 1 :]
    return open_root(prefix + (parent or "/")), key


def objects_at(backend: StorageBackend, key: str) -> Iterator[ObjectMeta]:
    """The object ``key``, or every object under ``key/`` (all of them for ``""``); a key
    with ``*``, ``?`` or ``[`` matches as a glob, segment by segment."""
    if any(c in key for c in "*?["):
        fixed = re.split(r"[*?\[]", key, maxsplit=1)[0]
        return (m for m in backend.list(fixed) if _glob_match(m.key, key))
    if key == "":
        return backend.list("")
    return (m for m in backend.list(key) if m.key == key or m.key.startswith(key + "/"))


def _glob_match(key: str, pattern: str) -> bool:
    """Shell-style: ``*`` and ``?`` match within one path segment."""
    keys, parts = key.split("/"), pattern.split("/")
    return len(keys) == len(parts) and all(map(fnmatch.fnmatchcase, keys, parts))


def _relative(key: str, base: str) -> str:
    """``key`` below the directory ``base`` names (its parent for an object or a glob)."""
    if any(c in base for c in "*?["):
        return key
    if key == base:
        return key.rsplit("/", 1)[-1]
    return key[len(base) + 1 :] if base else key


# -- progress ------------------------------------------------------------------------------


@contextmanager
def progress(label: str, total: float | None = None, unit: str = "") -> Iterator[Any]:
    """A rich progress bar on stderr when it is a terminal; a no-op otherwise. Yields
    ``advance(n)``."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns.append(DownloadColumn() if unit == "bytes" else MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


# -- output --------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, default=str, indent=2))
    else:
        out = text()
        if out:
            print(out)


def _table_text(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def confirm(question: str, args: argparse.Namespace) -> None:
    """Proceed when ``--yes`` was given or the user answers y; refuse (``CliError``) when
    stdin is no terminal to ask on."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Refused: stdin is not a terminal; pass --yes to confirm")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("cancelled, nothing deleted")


# -- filters -------------------------------------------------------------------------------

_OPS = {
    ast.Eq: "__eq__",
    ast.NotEq: "__ne__",
    ast.Lt: "__lt__",
    ast.LtE: "__le__",
    ast.Gt: "__gt__",
    ast.GtE: "__ge__",
}


def parse_filter(text: str) -> Any:
    """A :func:`datashard.col` expression from ``text`` such as
    ``id > 3 and (name == 'x' or name is None) and kind in ('a', 'b')``.

    Parsed, never evaluated: only column names, literals (numbers, strings, True, False,
    None), comparisons, ``in`` / ``not in`` a list, ``is None`` / ``is not None``, ``and``,
    ``or`` and ``not`` are accepted; anything else is a ``ValidationError`` naming it.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValidationError(f"--where {text!r} does not parse: {exc.msg}") from None
    return _expr(tree.body, text)


def _expr(node: ast.AST, text: str) -> Any:
    from datashard.iceberg.expressions import col

    if isinstance(node, ast.BoolOp):
        parts = [_expr(v, text) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = out & p if isinstance(node.op, ast.And) else out | p
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_expr(node.operand, text)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        op, left, right = node.ops[0], node.left, node.comparators[0]
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (_is_column(left) and isinstance(right, ast.Constant) and right.value is None):
                raise ValidationError(f"--where {text!r}: use 'column is None'")
            c = col(_column(left))
            return c.is_null() if isinstance(op, ast.Is) else c.not_null()
        if isinstance(op, (ast.In, ast.NotIn)):
            if not _is_column(left) or not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                raise ValidationError(f"--where {text!r}: use 'column in (value, ...)'")
            values = [_literal(v, text) for v in right.elts]
            c = col(_column(left))
            return c.isin(values) if isinstance(op, ast.In) else c.not_in(values)
        if type(op) in _OPS:
            if _is_column(left):
                return getattr(col(_column(left)), _OPS[type(op)])(_literal(right, text))
            if _is_column(right):  # 3 < id
                flipped = {ast.Lt: "__gt__", ast.LtE: "__ge__", ast.Gt: "__lt__", ast.GtE: "__le__"}
                name = flipped.get(type(op), _OPS[type(op)])
                return getattr(col(_column(right)), name)(_literal(left, text))
    piece = ast.get_source_segment(text, node) or type(node).__name__
    raise ValidationError(
        f"--where {text!r}: {piece!r} is not supported; expected comparisons of a column with "
        "a literal (==, !=, <, <=, >, >=, in, not in, is None, is not None) joined by and, or, not"
    )


def _is_column(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) or (
        isinstance(node, ast.Attribute) and _is_column(node.value)
    )


def _column(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_column(node.value)}.{node.attr}"
    assert isinstance(node, ast.Name)
    return node.id


def _literal(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    piece = ast.get_source_segment(text, node) or type(node).__name__
    raise ValidationError(f"--where {text!r}: {piece!r} is not a literal (number or 'string')")


def parse_time(text: str) -> datetime:
    """An ISO date/time (UTC when it names no zone) or epoch milliseconds."""
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, timezone.utc)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"--as-of {text!r} is not a time; expected ISO 8601 (2024-05-01T12:00:00) or "
            "epoch milliseconds"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m`` or ``45s``."""
    match = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if not match:
        raise ValidationError(f"--older-than {text!r}: expected a count and d, h, m or s (7d)")
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


# -- table commands ------------------------------------------------------------------------


def _warehouse(args: argparse.Namespace) -> Any:
    from datashard.table.catalog import resolve_warehouse

    return open_root(args.warehouse) if args.warehouse else resolve_warehouse(None)


def _load(args: argparse.Namespace) -> Any:
    from datashard.table.catalog import load_table

    if args.name.endswith(".metadata.json"):
        return load_table(args.name)
    return load_table(args.name, _warehouse(args))
