"""Turning Python values into container bytes: msgpack entries, lazy nodes and their indexes.

The encoder appends to a binary sink (the writer's spool file) and keeps only the fixed-width
index records of lazy maps and lists in memory; it writes those node regions at the end
(:meth:`Encoder.finish`), children before parents, so every offset is known when written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
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
    key_hashes,
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


class _Entries:
    """Offsets and lengths of a node's entries; kinds other than ``PACKED`` kept sparsely."""

    kind: Kind

    def __init__(self) -> None:
        self.offs: list[int] = []
        self.lens: list[int] = []
        self.kinds: dict[int, int] = {}
        self.children: dict[int, Node] = {}
        self.ref: Ref | None = None

    def __len__(self) -> int:
        return len(self.offs)

    def _set(self, pos: int, kind: int, off: int, length: int, child: Node | None) -> None:
        if pos == len(self.offs):
            self.offs.append(off)
            self.lens.append(length)
        else:
            self.offs[pos], self.lens[pos] = off, length
        self.kinds.pop(pos, None)
        self.children.pop(pos, None)
        if kind != Kind.PACKED:
            self.kinds[pos] = int(kind)
        if child is not None:
            self.children[pos] = child

    def _arrays(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(off, length << 8 | kind)`` per entry, with each child node's ref filled in."""
        for pos, child in self.children.items():
            if child.ref is None:
                raise AssertionError("a child node was not written before its parent")
            self.offs[pos], self.lens[pos] = child.ref.off, child.ref.length
        self.children.clear()
        n = len(self.offs)
        offs = np.fromiter(self.offs, dtype=np.uint64, count=n)
        lk = np.fromiter(self.lens, dtype=np.uint64, count=n) << np.uint64(8)
        for pos, kind in self.kinds.items():
            lk[pos] |= np.uint64(kind)
        return offs, lk


class MapBuilder(_Entries):
    """The index of one lazy map, in insertion order; a repeated key replaces its value."""

    kind = Kind.MAP

    def __init__(self) -> None:
        super().__init__()
        self.positions: dict[bytes, int] = {}
        self.keys: list[bytes] = []

    def add(self, kb: bytes, kind: int, off: int, length: int, child: Node | None) -> None:
        pos = self.positions.setdefault(kb, len(self.keys))
        if pos == len(self.keys):
            self.keys.append(kb)
        self._set(pos, kind, off, length, child)

    def region(self) -> bytes:
        n = len(self.keys)
        offs, lk = self._arrays()
        hashes = key_hashes(self.keys)
        klens = np.fromiter(map(len, self.keys), dtype=np.uint32, count=n)
        koffs = np.zeros(n, dtype=np.uint64)
        if n:
            np.cumsum(klens[:-1], out=koffs[1:])
        keys_len = int(klens.sum()) if n else 0
        if keys_len >= 1 << 32:
            raise ContainerError(f"a map's keys take {keys_len} bytes; at most 4 GiB - 1 fit")
        order = np.argsort(hashes, kind="stable")
        records = np.empty(n, dtype=_MAP_DTYPE)
        records["hash"] = hashes[order]
        records["off"] = offs[order]
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


class ListBuilder(_Entries):
    """The index of one lazy list."""

    kind = Kind.LIST

    def add(self, kind: int, off: int, length: int, child: Node | None) -> None:
        self._set(len(self.offs), kind, off, length, child)

    def region(self) -> bytes:
        offs, lk = self._arrays()
        records = np.empty(len(offs), dtype=_LIST_DTYPE)
        records["off"] = offs
        records["lk"] = lk
        return records.tobytes() + NODE_HEADER.pack(LIST_TAG, 0, len(offs), 0, 0)


Node = MapBuilder | ListBuilder

_PACK_ERRORS = (TypeError, ValueError, OverflowError)
_CONTAINERS = (dict, list, tuple)
#: Types whose values are always packed inline (never lazy) on the hot path.
_SCALARS = frozenset({bytes, str, int, float, bool, type(None)})
#: Entries per batch of the batched map/list paths (bounds the extra memory of one batch).
BATCH = 1024


_BYTES_ONLY = frozenset({bytes})


def _bin_header(lens: Any) -> Any:
    """The msgpack header size of each small ``bytes`` value: 2 (bin 8) below 256, else 3."""
    return np.where(lens < 256, 2, 3)


def _small_scalars(types: set[type], vals: list[Any]) -> bool:
    """Whether every value (of ``types``) is packed inline and no ``bytes`` is a zero-copy one."""
    if not types <= _SCALARS:
        return False
    return bytes not in types or all(len(v) < _ZERO_COPY_MIN for v in vals if type(v) is bytes)


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
        except _PACK_ERRORS as exc:
            raise ContainerError(f"cannot encode {what} as msgpack: {exc}") from exc
        return data

    def node(self, value: dict[Any, Any] | list[Any] | tuple[Any, ...], what: str) -> Node:
        """Write ``value``'s entries and return its (not yet written) index."""
        builder: Node
        if isinstance(value, dict):
            builder = MapBuilder()
            self._map_entries(builder, value, what)
        else:
            builder = ListBuilder()
            for i in range(0, len(value), BATCH):
                batch = list(value[i : i + BATCH])
                if not self.list_batch(builder, batch):
                    for j, v in enumerate(batch, i):
                        self.list_entry(builder, v, what, j)
        self.done.append(builder)
        return builder

    def _map_entries(self, builder: MapBuilder, value: dict[Any, Any], what: str) -> None:
        """``map_entry`` for every item of a new map, in batches of small values (the hot path).

        A batch of ``BATCH`` items whose values are all small scalars is packed by a few C
        calls and written with one write; any other batch (a container, a large ``bytes``, a
        value or key msgpack refuses, a repeated packed key) goes entry by entry.
        """
        keys, vals = list(value), list(value.values())
        for i in range(0, len(keys), BATCH):
            ks, vs = keys[i : i + BATCH], vals[i : i + BATCH]
            if not self._map_batch(builder, ks, vs):
                self._map_slow(builder, zip(ks, vs, strict=True), what)

    def _map_batch(self, builder: MapBuilder, keys: list[Any], vals: list[Any]) -> bool:
        """Write one batch of entries in one go if every value is a small scalar, else ``False``."""
        n = len(keys)
        types = set(map(type, vals))
        pack = self._pack
        data: bytes | memoryview
        try:
            if types == _BYTES_ONLY:
                vlens = np.fromiter(map(len, vals), dtype=np.int64, count=n)
                if int(vlens.max()) >= _ZERO_COPY_MIN:
                    return False
                kbs: list[bytes] = list(map(pack, keys))
                # One C call packs the batch as an array [k0, v0, k1, v1, ...]: past the
                # array's header that is exactly the entries' bytes, and a small bin value
                # packs to its size plus a 2-byte (bin 8) or 3-byte (bin 16) header.
                flat: list[Any] = [None] * (2 * n)
                flat[0::2] = keys
                flat[1::2] = vals
                data = self._packed_items(flat)
                vlens += _bin_header(vlens)
            elif _small_scalars(types, vals):
                kbs = list(map(pack, keys))
                vbs: list[bytes] = list(map(pack, vals))
                parts: list[bytes] = [b""] * (2 * n)
                parts[0::2] = kbs
                parts[1::2] = vbs
                data = b"".join(parts)
                vlens = np.fromiter(map(len, vbs), dtype=np.int64, count=n)
            else:
                return False
        except _PACK_ERRORS:
            return False  # the entry-by-entry path raises with the entry named
        positions = builder.positions
        n0 = len(builder.keys)
        if len(positions) != n0 or not positions.keys().isdisjoint(kbs):
            return False
        positions.update(zip(kbs, range(n0, n0 + n), strict=True))
        if len(positions) != n0 + n:  # two keys of the batch pack alike
            for kb in kbs:
                positions.pop(kb, None)
            return False
        builder.keys.extend(kbs)
        self._emit_batch(builder, data, np.fromiter(map(len, kbs), dtype=np.int64, count=n) + vlens)
        return True

    def list_batch(self, builder: ListBuilder, vals: list[Any]) -> bool:
        """Write one batch of list entries in one go if all are small scalars, else ``False``."""
        n = len(vals)
        types = set(map(type, vals))
        data: bytes | memoryview
        try:
            if types == _BYTES_ONLY:
                lens = np.fromiter(map(len, vals), dtype=np.int64, count=n)
                if int(lens.max()) >= _ZERO_COPY_MIN:
                    return False
                data = self._packed_items(vals)
                lens += _bin_header(lens)
            elif _small_scalars(types, vals):
                vbs: list[bytes] = list(map(self._pack, vals))
                data = b"".join(vbs)
                lens = np.fromiter(map(len, vbs), dtype=np.int64, count=n)
            else:
                return False
        except _PACK_ERRORS:
            return False  # the entry-by-entry path raises with the entry named
        self._emit_batch(builder, data, lens)
        return True

    def _packed_items(self, items: list[Any]) -> memoryview:
        """The msgpack bytes of ``items`` one after another, packed by one C call: past a
        packed array's header (1 byte below 16 items, else 3) are exactly its items' bytes."""
        return memoryview(self._pack(items))[1 if len(items) < 16 else 3 :]

    def _emit_batch(self, builder: Node, data: bytes | memoryview, lens: Any) -> None:
        """Write a batch whose entries are ``lens`` bytes long, one after another, and index
        them in ``builder``."""
        ends = np.cumsum(lens) + self.pos
        if int(ends[-1]) - self.pos != len(data):
            raise AssertionError("batched entry lengths disagree with the packed bytes")
        self.sink.write(data)
        builder.offs.extend((ends - lens).tolist())
        builder.lens.extend(lens.tolist())
        self.pos = int(ends[-1])

    def _map_slow(self, builder: MapBuilder, batch: Iterable[tuple[Any, Any]], what: str) -> None:
        """``map_entry`` for every item of ``batch``, inlined for small values."""
        pack, write = self._pack, self.sink.write
        keys, setpos = builder.keys, builder.positions.setdefault
        add_key, add_off, add_len = keys.append, builder.offs.append, builder.lens.append
        pos = self.pos
        key: Any = None
        try:
            for key, v in batch:
                t = type(v)
                if (t is bytes and len(v) >= _ZERO_COPY_MIN) or t not in _SCALARS:
                    self.pos = pos
                    self.map_entry(builder, key, v, what)
                    pos = self.pos
                    continue
                kb = pack(key)
                entry = kb + pack(v)
                n = len(keys)
                if setpos(kb, n) != n:  # two keys that pack alike: the general path
                    self.pos = pos
                    self.map_entry(builder, key, v, what)
                    pos = self.pos
                    continue
                write(entry)
                length = len(entry)
                add_key(kb)
                add_off(pos)
                add_len(length)
                pos += length
        except _PACK_ERRORS as exc:
            raise ContainerError(f"cannot encode {what}[{key!r}] as msgpack: {exc}") from exc
        finally:
            self.pos = pos

    def map_entry(self, builder: MapBuilder, key: Any, value: Any, what: str) -> None:
        """Write one map entry: the msgpack key followed by the msgpack value (the hot path)."""
        try:
            kb: bytes = self._pack(key)
        except _PACK_ERRORS as exc:
            raise ContainerError(
                f"cannot encode the key {key!r} of {what} as msgpack: {exc}"
            ) from exc
        if isinstance(value, _CONTAINERS):
            if exceeds(value, self.threshold):
                child = self.node(value, f"{what}[{key!r}]")
                builder.add(kb, child.kind, 0, 0, child)
                return
        elif isinstance(value, bytes) and len(value) >= _ZERO_COPY_MIN:
            off = self.emit(kb)
            self.emit(bin_header(len(value)))
            self.emit(value)
            builder.add(kb, Kind.PACKED, off, self.pos - off, None)
            return
        try:
            vb: bytes = self._pack(value)
        except _PACK_ERRORS as exc:
            raise ContainerError(f"cannot encode {what}[{key!r}] as msgpack: {exc}") from exc
        off = self.pos
        write = self.sink.write
        write(kb)
        write(vb)
        length = len(kb) + len(vb)
        self.pos = off + length
        builder.add(kb, Kind.PACKED, off, length, None)

    def list_entry(self, builder: ListBuilder, value: Any, what: str, index: int) -> None:
        if isinstance(value, _CONTAINERS) and exceeds(value, self.threshold):
            child = self.node(value, f"{what}[{index}]")
            builder.add(child.kind, 0, 0, child)
            return
        off, length = self.packed(value, what, index)
        builder.add(Kind.PACKED, off, length, None)

    def packed(self, value: Any, what: str, index: int | None = None) -> tuple[int, int]:
        """Write ``value`` (``what``, or entry ``index`` of ``what``) as one msgpack value.

        Returns its offset and length.
        """
        if isinstance(value, bytes) and len(value) >= _ZERO_COPY_MIN:
            off = self.emit(bin_header(len(value)))
            self.emit(value)
            return off, self.pos - off
        try:
            data: bytes = self._pack(value)
        except _PACK_ERRORS as exc:
            where = what if index is None else f"{what}[{index}]"
            raise ContainerError(f"cannot encode {where} as msgpack: {exc}") from exc
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
