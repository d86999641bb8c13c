"""The storage commands of ``datashard``: ls, du, cp, rm."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from datashard.errors import ObjectNotFoundError

if TYPE_CHECKING:
    from datashard.storage.base import StorageBackend

from datashard.cli.common import (
    CHUNK,
    CHUNKS_IN_FLIGHT,
    COPY_THREADS,
    SHOW_KEYS,
    _relative,
    _size,
    confirm,
    emit,
    locate,
    objects_at,
    progress,
)


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
