"""The table and upkeep commands of ``datashard``: list, describe, schema, history, files, head,
count, create, append, drop, properties, compact, expire, remove-orphans."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from datashard.errors import ValidationError

if TYPE_CHECKING:
    pass

from datashard.cli.common import (
    CliError,
    _load,
    _size,
    _table_text,
    _warehouse,
    confirm,
    emit,
    parse_age,
    parse_filter,
    parse_time,
    progress,
)


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
    if args.dry_run:  # nothing is written, so there is no count of new files to give
        line = f"would rewrite {r.rewritten_files} files ({r.rewritten_rows} rows)"
    else:
        line = f"rewrote {r.rewritten_files} files ({r.rewritten_rows} rows) into {r.added_files}"
    emit(args, data, lambda: line)


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
