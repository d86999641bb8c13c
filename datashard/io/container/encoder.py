"""Turning Python values into container bytes: msgpack entries, lazy nodes and their indexes.

The encoder appends to a binary sink (the writer's spool file) and keeps only the fixed-width
index records of lazy maps and lists in memory; it writes those node regions at the end
(:meth:`Encoder.finish`), children before parents, so every offset is known when written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import IO, Any

import msgpack
import numpy as np

from datashard.errors import ContainerError
from datashard.io.container.format import (
    FENCE_EVERY,
    LIST_TAG,
    MAP_TAG,
    NODE_HEADER,
    Kind,
    Ref,
    bin_header,
    key_hash,
)

#: Values at least this long that are ``bytes`` are written without a copy.
_ZERO_COPY_MIN = 64 * 1024

_MAP_DTYPE = np.dtype(
    [("hash", "<u8"), ("off", "<u8"), ("lk", "<u8"), ("koff", "<u4"), ("klen", "<u4")]
)
_LIST_DTYPE = np.dtype([("off", "<u8"), ("lk", "<u8")])

_END = object()


def exceeds(obj: Any, limit: int) -> bool:
    """Whether ``obj`` packs to more than about ``limit`` bytes; stops counting once it does."""
    total = 0
    stack: list[Iterator[Any]] = [iter((obj,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            continue
        if isinstance(item, (bytes, str, bytearray, memoryview)):
            total += len(item) + 5
        elif isinstance(item, dict):
            total += 5
            stack.append(itertools.chain.from_iterable(item.items()))
        elif isinstance(item, (list, tuple)):
            total += 5
            stack.append(iter(item))
        else:
            total += 9
        if total > limit:
            return True
    return False


class MapBuilder:
    """The index of one lazy map, in insertion order; a repeated key replaces its value."""

    kind = Kind.MAP

    def __init__(self) -> None:
        self.positions: dict[bytes, int] = {}
        self.keys: list[bytes] = []
        self.kinds: list[int] = []
        self.offs: list[int] = []
        self.lens: list[int] = []
        self.children: list[Node | None] = []
        self.ref: Ref | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, kb: bytes, kind: int, off: int, length: int, child: Node | None) -> None:
        pos = self.positions.get(kb)
        if pos is None:
            self.positions[kb] = len(self.keys)
            self.keys.append(kb)
            self.kinds.append(kind)
            self.offs.append(off)
            self.lens.append(length)
            self.children.append(child)
        else:
            self.kinds[pos], self.offs[pos], self.lens[pos] = kind, off, length
            self.children[pos] = child

    def region(self) -> bytes:
        n = len(self.keys)
        self._resolve_children()
        hashes = np.fromiter((key_hash(k) for k in self.keys), dtype=np.uint64, count=n)
        klens = np.fromiter((len(k) for k in self.keys), dtype=np.uint32, count=n)
        koffs = np.zeros(n, dtype=np.uint64)
        if n:
            np.cumsum(klens[:-1], out=koffs[1:])
        keys_len = int(klens.sum()) if n else 0
        if keys_len >= 1 << 32:
            raise ContainerError(f"a map's keys take {keys_len} bytes; at most 4 GiB - 1 fit")
        order = np.argsort(hashes, kind="stable")
        records = np.empty(n, dtype=_MAP_DTYPE)
        records["hash"] = hashes[order]
        records["off"] = np.asarray(self.offs, dtype=np.uint64)[order]
        lk = (np.asarray(self.lens, dtype=np.uint64) << np.uint64(8)) | np.asarray(
            self.kinds, dtype=np.uint64
        )
        records["lk"] = lk[order]
        records["koff"] = koffs[order]
        records["klen"] = klens[order]
        rank = np.empty(n, dtype="<u4")
        rank[order] = np.arange(n, dtype="<u4")
        fences = records["hash"][::FENCE_EVERY].astype("<u8")
        header = NODE_HEADER.pack(MAP_TAG, FENCE_EVERY, n, keys_len, 0)
        return b"".join(
            [b"".join(self.keys), rank.tobytes(), records.tobytes(), fences.tobytes(), header]
        )

    def _resolve_children(self) -> None:
        for i, child in enumerate(self.children):
            if child is not None:
                if child.ref is None:
                    raise AssertionError("a child node was not written before its parent")
                self.kinds[i], self.offs[i] = child.kind, child.ref.off
                self.lens[i] = child.ref.length
                self.children[i] = None


class ListBuilder:
    """The index of one lazy list."""

    kind = Kind.LIST

    def __init__(self) -> None:
        self.kinds: list[int] = []
        self.offs: list[int] = []
        self.lens: list[int] = []
        self.children: list[Node | None] = []
        self.ref: Ref | None = None

    def __len__(self) -> int:
        return len(self.kinds)

    def add(self, kind: int, off: int, length: int, child: Node | None) -> None:
        self.kinds.append(kind)
        self.offs.append(off)
        self.lens.append(length)
        self.children.append(child)

    def region(self) -> bytes:
        n = len(self.kinds)
        for i, child in enumerate(self.children):
            if child is not None:
                if child.ref is None:
                    raise AssertionError("a child node was not written before its parent")
                self.kinds[i], self.offs[i] = child.kind, child.ref.off
                self.lens[i] = child.ref.length
                self.children[i] = None
        records = np.empty(n, dtype=_LIST_DTYPE)
        records["off"] = np.asarray(self.offs, dtype=np.uint64)
        records["lk"] = (np.asarray(self.lens, dtype=np.uint64) << np.uint64(8)) | np.asarray(
            self.kinds, dtype=np.uint64
        )
        return records.tobytes() + NODE_HEADER.pack(LIST_TAG, 0, n, 0, 0)


Node = MapBuilder | ListBuilder


class Encoder:
    """Appends msgpack entries to ``sink`` (positioned at ``pos``) and builds lazy nodes.

    A ``dict``, ``list`` or ``tuple`` that packs to more than ``threshold`` bytes becomes a lazy
    node; everything else is one msgpack value. Raises ``ContainerError`` for a value msgpack
    cannot encode (its error is the ``__cause__``).
    """

    def __init__(self, sink: IO[bytes], pos: int, threshold: int) -> None:
        self.sink = sink
        self.pos = pos
        self.threshold = threshold
        self.done: list[Node] = []
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def emit(self, data: bytes | bytearray | memoryview) -> int:
        off = self.pos
        self.sink.write(data)
        self.pos += len(data)
        return off

    def pack(self, value: Any, what: str) -> bytes:
        try:
            data: bytes = self._pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ContainerError(f"cannot encode {what} as msgpack: {exc}") from exc
        return data

    def is_lazy(self, value: Any) -> bool:
        return isinstance(value, (dict, list, tuple)) and exceeds(value, self.threshold)

    def node(self, value: dict[Any, Any] | list[Any] | tuple[Any, ...], what: str) -> Node:
        """Write ``value``'s entries and return its (not yet written) index."""
        builder: Node
        if isinstance(value, dict):
            builder = MapBuilder()
            for k, v in value.items():
                self.map_entry(builder, k, v, what)
        else:
            builder = ListBuilder()
            for i, v in enumerate(value):
                self.list_entry(builder, v, f"{what}[{i}]")
        self.done.append(builder)
        return builder

    def map_entry(self, builder: MapBuilder, key: Any, value: Any, what: str) -> None:
        kb = self.pack(key, f"the key {key!r} of {what}")
        where = f"{what}[{key!r}]"
        if self.is_lazy(value):
            child = self.node(value, where)
            builder.add(kb, child.kind, 0, 0, child)
            return
        if isinstance(value, bytes) and len(value) >= _ZERO_COPY_MIN:
            off = self.emit(kb)
            self.emit(bin_header(len(value)))
            self.emit(value)
            builder.add(kb, Kind.PACKED, off, self.pos - off, None)
            return
        vb = self.pack(value, where)
        off = self.emit(kb)
        self.emit(vb)
        builder.add(kb, Kind.PACKED, off, len(kb) + len(vb), None)

    def list_entry(self, builder: ListBuilder, value: Any, what: str) -> None:
        if self.is_lazy(value):
            child = self.node(value, what)
            builder.add(child.kind, 0, 0, child)
            return
        off, length = self.packed(value, what)
        builder.add(Kind.PACKED, off, length, None)

    def packed(self, value: Any, what: str) -> tuple[int, int]:
        """Write ``value`` as one msgpack value; return its offset and length."""
        if isinstance(value, bytes) and len(value) >= _ZERO_COPY_MIN:
            off = self.emit(bin_header(len(value)))
            self.emit(value)
            return off, self.pos - off
        data = self.pack(value, what)
        return self.emit(data), len(data)

    def finish(self, root: Node | Ref) -> tuple[int, Ref]:
        """Write every pending node region, children first and ``root`` last.

        Returns the offset where the table of contents starts and the root's ref.
        """
        toc_start = self.pos
        pending = list(self.done)
        if not isinstance(root, Ref) and (not pending or pending[-1] is not root):
            pending.append(root)
        for node in pending:
            region = node.region()
            node.ref = Ref(node.kind, self.emit(region), len(region))
        self.done.clear()
        if isinstance(root, Ref):
            return toc_start, root
        assert root.ref is not None
        return toc_start, root.ref

    def mark(self) -> tuple[int, int]:
        """A point to roll back to if encoding one value fails half-way."""
        return self.pos, len(self.done)

    def rollback(self, mark: tuple[int, int]) -> None:
        pos, done = mark
        self.sink.seek(pos)
        self.sink.truncate()
        self.pos = pos
        del self.done[done:]
