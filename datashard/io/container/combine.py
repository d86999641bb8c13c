"""Build a container out of existing ones without decoding their entries.

``combine(target, {"train": src_a, "test": src_b})`` makes a container whose root map holds each
source's root under a name; ``combine(target, [src_a, src_b])`` makes a root list. Each source's
bytes (entries and nested indexes) are copied by range, in ``part_size`` chunks, and its indexes
are relocated in place: every offset moves by the same amount, so only the fixed-width index
records are rewritten, never an entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datashard.errors import CorruptFileError
from datashard.io.container.encoder import ListBuilder, MapBuilder
from datashard.io.container.format import (
    FOOTER_SIZE,
    HEADER_SIZE,
    LIST_RECORD_SIZE,
    MAP_RECORD_SIZE,
    Kind,
    MapLayout,
    Ref,
)
from datashard.io.container.reader import LazyReader
from datashard.io.container.regions import ListRegion, MapRegion
from datashard.io.container.source import RangeSource, Target, read_exact
from datashard.io.container.writer import PART_SIZE, LazyWriter

Source = Target


def combine(
    target: Target | RangeSource,
    sources: Mapping[Any, Source] | Sequence[Source],
    *,
    key: str | None = None,
    spool_dir: str | None = None,
    part_size: int = PART_SIZE,
    **storage_options: Any,
) -> int:
    """Write a container at ``target`` holding every source's root; return its size in bytes.

    ``sources`` is a mapping (name -> source: the new root is a map) or a sequence (the new root
    is a list). A source is a URI or ``(backend, key)``. Raises what ``LazyReader`` raises for a
    source that is missing or corrupt; nothing is written then.
    """
    with LazyWriter(
        target, key, spool_dir=spool_dir, part_size=part_size, **storage_options
    ) as writer:
        if isinstance(sources, Mapping):
            root_map: MapBuilder = writer._root_as(MapBuilder, "combine()")
            for name, source in sources.items():
                _add_to_map(writer, root_map, name, source, part_size)
        else:
            root_list: ListBuilder = writer._root_as(ListBuilder, "combine()")
            for source in sources:
                ref = copy_container(writer, source, part_size)
                root_list.add(ref.kind, ref.off, ref.length, None)
    assert writer.size is not None
    return writer.size


def _add_to_map(
    writer: LazyWriter, root: MapBuilder, name: Any, source: Source, part_size: int
) -> None:
    enc = writer._enc
    kb = enc.pack(name, f"the name {name!r}")
    ref = copy_container(writer, source, part_size)
    if ref.kind == Kind.PACKED:
        # A map entry's value must follow its key: copy the (single) value after the key.
        writer._file.flush()
        writer._file.seek(ref.off)
        value = writer._file.read(ref.length)
        writer._file.seek(enc.pos)
        off = enc.emit(kb)
        enc.emit(value)
        root.add(kb, Kind.PACKED, off, enc.pos - off, None)
    else:
        root.add(kb, ref.kind, ref.off, ref.length, None)


def copy_container(writer: LazyWriter, source: Source, part_size: int = PART_SIZE) -> Ref:
    """Copy ``source``'s entries and indexes into ``writer``'s spool; return its relocated root."""
    with LazyReader(source) as reader:
        loc, size, footer = reader._loc, reader.size, reader.footer
        enc = writer._enc
        base = enc.pos
        body_end = size - FOOTER_SIZE
        for start in range(HEADER_SIZE, body_end, part_size):
            end = min(start + part_size, body_end)
            enc.emit(read_exact(loc, start, end, reader.uri))
    delta = base - HEADER_SIZE
    root = Ref(footer.root.kind, footer.root.off + delta, footer.root.length)
    if root.kind != Kind.PACKED:
        _relocate(writer, root, delta, base, base + body_end - HEADER_SIZE, reader.uri)
    return root


def _relocate(writer: LazyWriter, root: Ref, delta: int, lo: int, hi: int, name: str) -> None:
    """Add ``delta`` to every offset in the indexes reachable from ``root`` (already moved)."""
    f = writer._file
    f.flush()
    old_limit = hi - delta
    seen: set[int] = set()
    stack = [root]
    while stack:
        ref = stack.pop()
        if ref.off in seen or ref.off < lo or ref.end > hi:
            raise CorruptFileError(
                f"{name}: the node at offset {ref.off - delta} is reached twice or lies "
                "outside the container"
            )
        seen.add(ref.off)
        f.seek(ref.off)
        region = memoryview(bytearray(f.read(ref.length)))
        old = Ref(ref.kind, ref.off - delta, ref.length)
        records: np.ndarray[Any, Any]
        if ref.kind == Kind.MAP:
            parsed = MapRegion(region, old, old_limit, name, "")
            records = parsed.records.copy()
            lay = MapLayout.of(ref, parsed.header.count, parsed.header.keys_len, 1)
            at, size = lay.records, MAP_RECORD_SIZE
        else:
            records = ListRegion(region, old, old_limit, name, "").records.copy()
            at, size = ref.off, LIST_RECORD_SIZE
        records["off"] += np.uint64(delta)
        f.seek(at)
        f.write(records.tobytes())
        assert len(records) * size == records.nbytes
        lks = records["lk"].tolist()
        for off, lk in zip(records["off"].tolist(), lks, strict=True):
            if lk & 0xFF != Kind.PACKED:
                stack.append(Ref(Kind(lk & 0xFF), off, lk >> 8))
    f.seek(writer._enc.pos)
