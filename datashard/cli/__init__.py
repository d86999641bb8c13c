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
import re
import sys
from collections.abc import Callable, Sequence

from datashard.cli.storage import (
    cmd_cp,
    cmd_du,
    cmd_ls,
    cmd_rm,
)
from datashard.cli.tables import (
    cmd_append,
    cmd_compact,
    cmd_count,
    cmd_create,
    cmd_describe,
    cmd_drop,
    cmd_expire,
    cmd_files,
    cmd_head,
    cmd_history,
    cmd_list,
    cmd_properties,
    cmd_remove_orphans,
    cmd_schema,
)
from datashard.errors import DataShardError


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


__all__ = ["build_parser", "main"]
