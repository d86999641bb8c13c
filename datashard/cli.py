"""The ``datashard`` command: tables, upkeep and storage from a shell.

``datashard [--warehouse URI] [--json] COMMAND ...``; ``python -m datashard.cli`` is the same.
The warehouse is ``--warehouse`` or, without it, the ``DATASHARD_*`` environment (as
:func:`datashard.create_table` reads it). A storage URI on the command line (``ls``, ``cp``,
``rm``, ``du``, ``--warehouse``) of the type ``DATASHARD_STORAGE_TYPE`` names takes that type's
settings from the environment too (endpoint, credentials), the URI giving bucket and prefix.

Exit codes: 0 done, 1 an error (the message names the table, key or setting; no traceback),
2 bad usage. Progress bars go to stderr, only when it is a terminal. ``--json`` makes every
read command print one JSON document on stdout.
"""

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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from datashard.errors import DataShardError, ObjectNotFoundError, ValidationError

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


def cmd_list(args: argparse.Namespace) -> None:
    from datashard.table.catalog import list_tables

    names = list_tables(_warehouse(args), prefix=args.prefix)
    emit(args, names, lambda: "\n".join(names))


def _snapshot_json(snap: Any) -> dict[str, Any] | None:
    if snap is None:
        return None
    return {
        "snapshot_id": snap.snapshot_id,
        "parent_id": snap.parent_snapshot_id,
        "timestamp": datetime.fromtimestamp(snap.timestamp_ms / 1000, timezone.utc).isoformat(),
        "operation": snap.summary.get("operation"),
        "summary": dict(snap.summary),
    }


def cmd_describe(args: argparse.Namespace) -> None:
    table = _load(args)
    md = table.metadata
    snap = table.current_snapshot()
    summary = snap.summary if snap is not None else {}
    spec = md.spec()
    schema = table.schema()
    data = {
        "name": args.name,
        "location": table.location,
        "format_version": md.format_version,
        "metadata": table.metadata_location,
        "schema": schema.to_json(),
        "partition_spec": [
            {"source": schema.column_name(f.source_id), "transform": f.transform, "name": f.name}
            for f in spec.fields
        ],
        "properties": dict(table.properties),
        "current_snapshot": _snapshot_json(snap),
        "snapshots": len(table.snapshots()),
        "records": int(summary.get("total-records", 0)),
        "data_files": int(summary.get("total-data-files", 0)),
        "delete_files": int(summary.get("total-delete-files", 0)),
        "bytes": int(summary.get("total-files-size", 0)),
    }

    def text() -> str:
        lines = [
            f"table      {args.name}",
            f"location   {data['location']}",
            f"metadata   {data['metadata']}",
            f"snapshot   {snap.snapshot_id if snap else '(none)'}",
            f"records    {data['records']}",
            f"files      {data['data_files']} data, {data['delete_files']} delete, "
            f"{_size(data['bytes'])}",
            "partition  "
            + (
                ", ".join(f"{p['transform']}({p['source']})" for p in data["partition_spec"])
                or "(unpartitioned)"
            ),
            "schema",
            _schema_text(schema),
        ]
        if data["properties"]:
            lines.append("properties")
            lines += [f"  {k} = {v}" for k, v in sorted(data["properties"].items())]
        return "\n".join(lines)

    emit(args, data, text)


def _schema_text(schema: Any) -> str:
    rows = [
        (f.field_id, f.name, str(f.field_type), "required" if f.required else "optional")
        for f in schema
    ]
    return "\n".join(
        "  " + line for line in _table_text(rows, ["id", "name", "type", ""]).split("\n")
    )


def cmd_schema(args: argparse.Namespace) -> None:
    schema = _load(args).schema()
    emit(args, schema.to_json(), lambda: _schema_text(schema))


def cmd_history(args: argparse.Namespace) -> None:
    entries = _load(args).history()
    data = [
        {
            "snapshot_id": e.snapshot_id,
            "made_current_at": e.made_current_at.isoformat(),
            "operation": e.operation,
            "added_records": e.added_records,
            "deleted_records": e.deleted_records,
            "total_records": e.total_records,
            "added_data_files": e.added_data_files,
            "deleted_data_files": e.deleted_data_files,
            "is_current_ancestor": e.is_current_ancestor,
        }
        for e in entries
    ]
    header = ["snapshot", "time", "operation", "+rows", "-rows", "+files", "-files"]
    keys = ["snapshot_id", "made_current_at", "operation", "added_records", "deleted_records"]
    keys += ["added_data_files", "deleted_data_files"]
    emit(args, data, lambda: _table_text([[d[k] for k in keys] for d in data], header))


def cmd_files(args: argparse.Namespace) -> None:
    scan = _load(args).scan()
    data = [
        {
            "path": t.file_path,
            "records": t.record_count,
            "bytes": t.file_size_in_bytes,
            "delete_files": len(t.deletes),
        }
        for t in scan.plan_files()
    ]
    rows = [[d["path"], d["records"], d["bytes"]] for d in data]
    emit(args, data, lambda: _table_text(rows, ["path", "records", "bytes"]))


def _scan(args: argparse.Namespace) -> Any:
    table = _load(args)
    given = getattr(args, "columns", None)
    columns = [c.strip() for c in given.split(",")] if given else None
    return table.scan(
        columns=columns,
        filter=parse_filter(args.where) if args.where else None,
        snapshot_id=args.snapshot,
        as_of=parse_time(args.as_of) if args.as_of else None,
    )


def cmd_head(args: argparse.Namespace) -> None:
    import pyarrow as pa

    if args.n < 0:
        raise ValidationError(f"-n must be >= 0, got {args.n}")
    scan = _scan(args)
    batches: list[pa.RecordBatch] = []
    got = 0
    with progress("reading"):
        for batch in scan.to_batches():
            if got >= args.n:
                break
            batches.append(batch.slice(0, args.n - got))
            got += batches[-1].num_rows
    schema = batches[0].schema if batches else scan.to_arrow_batch_reader().schema
    rows = pa.Table.from_batches(batches, schema=schema)
    data = rows.to_pylist()
    emit(args, data, lambda: _table_text([list(r.values()) for r in data], rows.column_names))


def cmd_count(args: argparse.Namespace) -> None:
    with progress("counting"):
        n = _scan(args).count()
    emit(args, {"count": n}, lambda: str(n))


def _read_file(path: str) -> Any:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise CliError(f"no file {path!r}")
    if path.endswith(".csv"):
        return pcsv.read_csv(path)
    if path.endswith(".parquet"):
        return pq.read_table(path)
    raise CliError(f"{path!r}: expected a .parquet or .csv file")


def cmd_create(args: argparse.Namespace) -> None:
    from datashard.table.catalog import create_table

    data = _read_file(args.source)
    table = create_table(args.name, data.schema, _warehouse(args), exist_ok=args.exist_ok)
    if args.append and data.num_rows:
        with progress("appending"):
            table.append(data)
    print(f"created {args.name} at {table.location} ({table.count()} rows)", file=sys.stderr)


def cmd_append(args: argparse.Namespace) -> None:
    table = _load(args)
    rows = 0
    with progress("appending", total=len(args.files)) as advance, table.transaction() as tx:
        for path in args.files:
            data = _read_file(path)
            tx.append(data)
            rows += data.num_rows
            advance(1)
    print(f"appended {rows} rows from {len(args.files)} files to {args.name}", file=sys.stderr)


def cmd_drop(args: argparse.Namespace) -> None:
    from datashard.table.catalog import drop_table, validate_table_name

    validate_table_name(args.name)
    backend = _warehouse(args)
    what = "and the files it references outside its location " if args.purge else ""
    confirm(
        f"Drop table {args.name!r} at {backend.uri_for(args.name)}: delete every object "
        f"under it {what}?",
        args,
    )
    with progress("dropping"):
        drop_table(args.name, backend, purge=args.purge)
    print(f"dropped {args.name}", file=sys.stderr)


def cmd_properties(args: argparse.Namespace) -> None:
    table = _load(args)
    action, items = args.action, args.items
    if action in (None, "get"):
        props = dict(table.properties)
        if action == "get":
            if len(items) != 1:
                raise CliError("properties NAME get takes one KEY")
            if items[0] not in props:
                raise CliError(f"table {args.name!r} has no property {items[0]!r}")
            emit(args, {items[0]: props[items[0]]}, lambda: props[items[0]])
            return
        emit(args, props, lambda: "\n".join(f"{k} = {v}" for k, v in sorted(props.items())))
    elif action == "set":
        updates = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CliError(f"properties set takes KEY=VALUE, got {item!r}")
            updates[key] = value
        if not updates:
            raise CliError("properties NAME set takes KEY=VALUE ...")
        table.set_properties(updates)
        print(f"set {', '.join(sorted(updates))} on {args.name}", file=sys.stderr)
    else:
        if not items:
            raise CliError("properties NAME remove takes KEY ...")
        table.remove_properties(*items)
        print(f"removed {', '.join(items)} from {args.name}", file=sys.stderr)


def cmd_compact(args: argparse.Namespace) -> None:
    table = _load(args)
    with progress("compacting"):
        r = table.compact(args.target_file_size, dry_run=args.dry_run)
    data = dataclasses.asdict(r) | {"dry_run": args.dry_run}
    verb = "would rewrite" if args.dry_run else "rewrote"
    emit(
        args,
        data,
        lambda: f"{verb} {r.rewritten_files} files ({r.rewritten_rows} rows) into {r.added_files}",
    )


def cmd_expire(args: argparse.Namespace) -> None:
    table = _load(args)
    older = parse_age(args.older_than) if args.older_than else None
    with progress("expiring"):
        r = table.expire_snapshots(older, args.retain_last, dry_run=args.dry_run)
    data = {
        "expired_snapshot_ids": list(r.expired_snapshot_ids),
        "deleted_files": list(r.deleted_files),
        "dry_run": args.dry_run,
    }
    verb = "would expire" if args.dry_run else "expired"
    emit(
        args,
        data,
        lambda: (
            f"{verb} {len(r.expired_snapshot_ids)} snapshots, "
            f"{'would delete' if args.dry_run else 'deleted'} {len(r.deleted_files)} files"
        ),
    )


def cmd_remove_orphans(args: argparse.Namespace) -> None:
    table = _load(args)
    older = parse_age(args.older_than) if args.older_than else None
    with progress("removing orphans"):
        uris = table.remove_orphan_files(older, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    emit(
        args,
        {"files": uris, "dry_run": args.dry_run},
        lambda: "\n".join([*uris, f"{verb} {len(uris)} orphan files"]),
    )


# -- storage commands ----------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> None:
    backend, key = locate(args.uri)
    pattern = re.compile(args.regex) if args.regex else None
    entries: dict[str, list[int]] = {}  # name -> [objects, bytes]
    listed = []
    with progress("listing") as advance:
        for m in objects_at(backend, key):
            uri = backend.uri_for(m.key)
            if pattern and not pattern.search(uri):
                continue
            advance(1)
            listed.append({"uri": uri, "size": m.size, "last_modified": m.last_modified})
            rel = _relative(m.key, key)
            name = rel if args.recursive or "/" not in rel else rel.split("/", 1)[0] + "/"
            counts = entries.setdefault(name, [0, 0])
            counts[0] += 1
            counts[1] += m.size
    total = sum(d["size"] for d in listed)
    if args.count:
        data: Any = {"objects": len(listed), "bytes": total}
        emit(args, data, lambda: f"{len(listed)} objects, {total} bytes ({_size(total)})")
        return
    if args.recursive:
        emit(args, listed, lambda: "\n".join(f"{d['size']:>12}  {d['uri']}" for d in listed))
        return
    data = [{"name": n, "objects": c, "bytes": b} for n, (c, b) in entries.items()]
    emit(args, data, lambda: "\n".join(f"{d['bytes']:>12}  {d['name']}" for d in data))


def cmd_du(args: argparse.Namespace) -> None:
    backend, key = locate(args.uri)
    children: dict[str, list[int]] = {}
    with progress("measuring") as advance:
        for m in objects_at(backend, key):
            rel = _relative(m.key, key)
            c = children.setdefault(rel.split("/", 1)[0] + ("/" if "/" in rel else ""), [0, 0])
            c[0] += 1
            c[1] += m.size
            advance(1)
    objects = sum(c[0] for c in children.values())
    total = sum(c[1] for c in children.values())
    data = {
        "uri": args.uri,
        "objects": objects,
        "bytes": total,
        "children": [{"name": n, "objects": c, "bytes": b} for n, (c, b) in children.items()],
    }
    lines = [f"{_size(b):>10}  {c:>8}  {n}" for n, (c, b) in sorted(children.items())]
    emit(args, data, lambda: "\n".join([*lines, f"{_size(total):>10}  {objects:>8}  total"]))


def _chunks(
    backend: StorageBackend, key: str, size: int, advance: Callable[[int], None]
) -> Iterator[bytes]:
    """The object's bytes as 8 MiB chunks, fetched :data:`CHUNKS_IN_FLIGHT` ranges at a time
    (the backend runs them concurrently); at most that many chunks are held."""
    if size == 0:
        yield b""
        return
    ranges = [(s, min(s + CHUNK, size)) for s in range(0, size, CHUNK)]
    for i in range(0, len(ranges), CHUNKS_IN_FLIGHT):
        group = ranges[i : i + CHUNKS_IN_FLIGHT]
        for (start, end), data in zip(group, backend.read_ranges(key, group), strict=True):
            if len(data) != end - start:
                raise ObjectNotFoundError(
                    f"{backend.uri_for(key)} changed size while it was copied "
                    f"(got {len(data)} bytes at {start}, expected {end - start})"
                )
            advance(len(data))
            yield data


def cmd_cp(args: argparse.Namespace) -> None:
    src, skey = locate(args.src)
    sources = list(objects_at(src, skey))
    if not sources:
        raise ObjectNotFoundError(f"no object at {args.src}")
    single = len(sources) == 1 and sources[0].key == skey
    dst_dir = args.dst.endswith("/") or not single or os.path.isdir(args.dst)
    dst, dkey = locate(args.dst.rstrip("/")) if args.dst.rstrip("/") else locate(args.dst)

    def target(m: Any) -> str:
        if not dst_dir:
            return dkey
        rel = _relative(m.key, skey)
        return f"{dkey}/{rel}" if dkey else rel

    plan = [(m, target(m)) for m in sources]
    total = sum(m.size for m, _ in plan)
    copied = skipped = 0
    with progress("copying", total=total, unit="bytes") as advance:

        def one(item: tuple[Any, str]) -> bool:
            m, key = item
            if args.resume:
                try:
                    if dst.head(key).size == m.size:
                        advance(m.size)
                        return False
                except ObjectNotFoundError:
                    pass
            dst.write(key, _chunks(src, m.key, m.size, advance))
            return True

        with ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
            for done in pool.map(one, plan):
                copied += done
                skipped += not done
    data = {"copied": copied, "skipped": skipped, "bytes": total}
    note = f", skipped {skipped} already there" if skipped else ""
    emit(args, data, lambda: f"copied {copied} objects ({_size(total)}){note}")


def cmd_rm(args: argparse.Namespace) -> None:
    backend, key = locate(args.uri)
    pattern = re.compile(args.regex) if args.regex else None
    doomed = [
        m
        for m in objects_at(backend, key)
        if pattern is None or pattern.search(backend.uri_for(m.key))
    ]
    if not doomed:
        raise ObjectNotFoundError(f"nothing to delete at {args.uri}")
    total = sum(m.size for m in doomed)
    for m in doomed[:SHOW_KEYS]:
        print(f"  {backend.uri_for(m.key)}", file=sys.stderr)
    if len(doomed) > SHOW_KEYS:
        print(f"  ... and {len(doomed) - SHOW_KEYS} more", file=sys.stderr)
    confirm(f"Delete {len(doomed)} objects ({_size(total)})?", args)
    batch = 1000
    with progress("deleting", total=len(doomed)) as advance:
        for i in range(0, len(doomed), batch):
            part = doomed[i : i + batch]
            backend.delete_many([m.key for m in part])
            advance(len(part))
    emit(
        args,
        {"deleted": len(doomed), "bytes": total},
        lambda: f"deleted {len(doomed)} objects ({_size(total)})",
    )


# -- the parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--warehouse",
        default=argparse.SUPPRESS,
        metavar="URI",
        help="the warehouse (default: the DATASHARD_* environment)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON on stdout"
    )
    parser = argparse.ArgumentParser(
        prog="datashard", description="datashard tables and storage from the shell."
    )
    parser.add_argument(
        "--warehouse",
        metavar="URI",
        default=None,
        help="the warehouse (default: the DATASHARD_* environment)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], None], help: str, table: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        if table:
            p.add_argument("name", help="table name (or a .metadata.json URI to read)")
        p.set_defaults(func=func)
        return p

    p = add("list", cmd_list, "names of the tables in the warehouse", table=False)
    p.add_argument("--prefix", help="only names starting with this")
    add("describe", cmd_describe, "schema, partitioning, properties, snapshot, size")
    add("schema", cmd_schema, "the table's schema")
    add("history", cmd_history, "when each snapshot became current and what it changed")
    add("files", cmd_files, "the data files of the current snapshot")
    for name, func, text in [("head", cmd_head, "the first rows"), ("count", cmd_count, "rows")]:
        p = add(name, func, text)
        if name == "head":
            p.add_argument("-n", type=int, default=10, help="rows (default 10)")
            p.add_argument("--columns", help="comma-separated columns")
        p.add_argument("--where", help="filter, e.g. \"id > 3 and name == 'x'\"")
        p.add_argument("--snapshot", type=int, help="read this snapshot id")
        p.add_argument("--as-of", help="read the snapshot current at this time (ISO or ms)")
    p = add("create", cmd_create, "create a table with the schema of a Parquet or CSV file")
    p.add_argument("--from", dest="source", required=True, metavar="FILE")
    p.add_argument("--append", action="store_true", help="also append the file's rows")
    p.add_argument("--exist-ok", action="store_true", help="a table with that schema is fine")
    p = add("append", cmd_append, "append Parquet or CSV files in one commit")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = add("drop", cmd_drop, "delete a table")
    p.add_argument(
        "--purge",
        action="store_true",
        help="also delete referenced files outside the table's location",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p = add("properties", cmd_properties, "show, get, set or remove table properties")
    p.add_argument("action", nargs="?", choices=["get", "set", "remove"])
    p.add_argument("items", nargs="*", metavar="KEY[=VALUE]")
    p = add("compact", cmd_compact, "rewrite small data files into bigger ones")
    p.add_argument("--target-file-size", type=int, metavar="BYTES")
    p.add_argument("--dry-run", action="store_true")
    p = add("expire", cmd_expire, "expire old snapshots and delete the files only they used")
    p.add_argument("--older-than", metavar="AGE", help="e.g. 7d (default: the table policy)")
    p.add_argument("--retain-last", type=int, metavar="N")
    p.add_argument("--dry-run", action="store_true")
    p = add("remove-orphans", cmd_remove_orphans, "delete files no snapshot references")
    p.add_argument("--older-than", metavar="AGE", help="grace period, e.g. 3d (the default)")
    p.add_argument("--dry-run", action="store_true")

    p = add("ls", cmd_ls, "list objects", table=False)
    p.add_argument("uri")
    p.add_argument("--recursive", "-r", action="store_true")
    p.add_argument("--regex", help="only URIs this regular expression finds")
    p.add_argument("--count", action="store_true", help="only the count and total size")
    p = add("cp", cmd_cp, "copy objects: local <-> store, store -> store, globs", table=False)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip objects already at the destination with the same size",
    )
    p = add("rm", cmd_rm, "delete an object or everything under a prefix", table=False)
    p.add_argument("uri")
    p.add_argument("--regex", help="only URIs this regular expression finds")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p = add("du", cmd_du, "objects and bytes under a URI", table=False)
    p.add_argument("uri")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        args.func(args)
    except (DataShardError, OSError, re.error) as exc:
        print(f"datashard {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not type(exc).__module__.startswith("pyarrow"):
            raise
        print(f"datashard {args.command}: error: {exc}", file=sys.stderr)  # a file pyarrow refused
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
