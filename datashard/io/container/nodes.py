"""Lazy views of a container's maps and lists: each lookup reads only what it touches.

A :class:`LazyMap` finds a key by binary search over its fixed-width, hash-sorted records; a
:class:`LazyList` reads the one 16-byte record of an index. Index bytes come from the reader's
:class:`~datashard.io.container.cache.ByteCache` (the suffix read at open usually holds them);
values are read with one range request each and never cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import msgpack
import numpy as np

from datashard.errors import ContainerError, CorruptFileError, EntryNotFoundError
from datashard.io.container.cache import ByteCache
from datashard.io.container.format import (
    FOOTER_SIZE,
    LIST_RECORD_SIZE,
    MAP_RECORD_SIZE,
    NODE_HEADER_SIZE,
    Kind,
    MapLayout,
    Ref,
    decode_node_header,
    fence_count,
    key_hash,
    make_ref,
)
from datashard.io.container.regions import LIST_DTYPE, MAP_DTYPE, ListRegion, MapRegion
from datashard.io.container.source import Location, read_exact

_pack_key = msgpack.Packer(use_bin_type=True).pack


class Ctx:
    """What every lazy view of one open container shares: the source, the cache, the limits."""

    def __init__(self, loc: Location, size: int, cache_bytes: int, whole_index_limit: int) -> None:
        self.loc = loc
        self.key = loc.key
        self.name = loc.uri
        self.size = size
        self.limit = size - FOOTER_SIZE
        self.whole_index_limit = whole_index_limit
        self.cache = ByteCache(self._fetch, size, cache_bytes)

    def _fetch(self, start: int, end: int) -> bytes:
        return read_exact(self.loc, start, end, self.name)

    def value_bytes(self, start: int, end: int) -> memoryview | bytes:
        """Bytes of a value: from the cache if it happens to hold them, else one range read."""
        hit = self.cache.cached(start, end)
        return hit if hit is not None else self._fetch(start, end)

    def unpack(self, data: memoryview | bytes, where: str) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CorruptFileError(
                f"{self.name}: the value at {where} is not valid msgpack: {exc}", key=self.key
            ) from exc

    def open(self, ref: Ref, path: str) -> Any:
        """The value ``ref`` names: a lazy view for a node, the decoded value otherwise."""
        if ref.kind == Kind.MAP:
            return LazyMap(self, ref, path)
        if ref.kind == Kind.LIST:
            return LazyList(self, ref, path)
        return self.unpack(self.value_bytes(ref.off, ref.end), path)


class _Node:
    """Shared by maps and lists: the region, fetched whole when small enough."""

    _ref: Ref
    _ctx: Ctx
    _path: str
    _whole: memoryview | None

    def _start(self, ctx: Ctx, ref: Ref, path: str) -> int:
        self._ctx, self._ref, self._path = ctx, ref, path
        self._whole = ctx.cache.cached(ref.off, ref.end)
        header = self._get(ref.end - NODE_HEADER_SIZE, ref.end)
        self._header = decode_node_header(header, ref, ctx.name, ctx.key)
        return self._header.count

    def _get(self, start: int, end: int) -> memoryview:
        """Index bytes ``[start, end)`` of this node's region."""
        if self._whole is None and self._ref.length <= self._ctx.whole_index_limit:
            if start >= self._ref.end - NODE_HEADER_SIZE:
                return self._ctx.cache.get(start, end)  # only the header: don't fetch it all
            self._whole = self._ctx.cache.get(self._ref.off, self._ref.end)
        if self._whole is not None:
            return self._whole[start - self._ref.off : end - self._ref.off]
        return self._ctx.cache.get(start, end)

    def _region(self) -> memoryview:
        if self._whole is None:
            self._whole = self._ctx.cache.get(self._ref.off, self._ref.end)
        return self._whole

    def _child(self, kind: int, off: int, length: int) -> Ref:
        return make_ref(kind, off, length, self._ctx.limit, self._ctx.name, self._ctx.key)

    def _missing(self, key: object, what: str) -> EntryNotFoundError:
        return EntryNotFoundError(
            f"no {what} in {self._path} of {self._ctx.name}", key=key, uri=self._ctx.name
        )

    def _packed_span(self) -> tuple[int, int]:
        """The smallest byte range holding every msgpack value under this node (-1 if none)."""
        lo, hi = -1, -1
        for node in self._walk():
            offs, lks = node._offs_lks()
            kinds = lks & np.uint64(0xFF)
            packed = kinds == np.uint64(Kind.PACKED)
            if packed.any():
                starts = offs[packed]
                ends = starts + (lks[packed] >> np.uint64(8))
                a, b = int(starts.min()), int(ends.max())
                lo = a if lo < 0 else min(lo, a)
                hi = max(hi, b)
        return lo, hi

    def _walk(self) -> Iterator[_Node]:
        stack: list[_Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            offs, lks = node._offs_lks()
            kinds = lks & np.uint64(0xFF)
            for i in np.flatnonzero(kinds != np.uint64(Kind.PACKED)).tolist():
                lk = int(lks[i])
                ref = node._child(lk & 0xFF, int(offs[i]), lk >> 8)
                child = self._ctx.open(ref, f"{node._path}[...]")
                stack.append(child)

    def _offs_lks(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        raise NotImplementedError

    def to_obj(self) -> Any:
        """Everything under this node as plain Python values (one read for all the values)."""
        lo, hi = self._packed_span()
        span: memoryview | bytes = b"" if lo < 0 else self._ctx.value_bytes(lo, hi)
        return self._materialize(memoryview(span), max(lo, 0))

    def _materialize(self, span: memoryview, base: int) -> Any:
        raise NotImplementedError

    def _value_in(self, span: memoryview, base: int, off: int, end: int, where: str) -> Any:
        if off < base or end > base + len(span):
            raise CorruptFileError(
                f"{self._ctx.name}: {where} lies outside its node's data", key=self._ctx.key
            )
        return self._ctx.unpack(span[off - base : end - base], where)


class LazyMap(_Node, Mapping[Any, Any]):
    """A map in a container: ``m[key]``, ``len``, iteration in insertion order, ``to_obj()``.

    A missing key raises ``EntryNotFoundError`` (a ``KeyError``). Keys are matched by their
    msgpack encoding, so ``1`` and ``True`` are different keys.
    """

    def __init__(self, ctx: Ctx, ref: Ref, path: str = "the root") -> None:
        self._count = self._start(ctx, ref, path)
        h = self._header
        self._lay = MapLayout.of(ref, h.count, h.keys_len, h.fence_every)
        self._parsed: MapRegion | None = None
        self._keys: list[Any] | None = None

    def __repr__(self) -> str:
        return f"<LazyMap of {self._count} entries at {self._path} of {self._ctx.name}>"

    def __len__(self) -> int:
        return self._count

    def _full(self) -> MapRegion:
        if self._parsed is None:
            self._parsed = MapRegion(
                self._region(), self._ref, self._ctx.limit, self._ctx.name, self._ctx.key
            )
        return self._parsed

    def _offs_lks(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        rec = self._full().records
        return rec["off"], rec["lk"]

    def __iter__(self) -> Iterator[Any]:
        if self._keys is None:
            self._keys = self._full().decoded_keys(self._ctx.name, self._ctx.key)
        return iter(self._keys)

    def _candidates(self, kb: bytes) -> list[tuple[int, int, int, int]]:
        """``(off, lk, koff, klen)`` of every record whose hash is the key's."""
        n, lay, every = self._count, self._lay, self._header.fence_every
        if n == 0:
            return []
        h = np.uint64(key_hash(kb))
        if self._whole is not None or self._ref.length <= self._ctx.whole_index_limit:
            lo, hi = 0, n
        else:
            raw = self._get(lay.fences, lay.fences + 8 * fence_count(n, every))
            fences = np.frombuffer(raw, dtype="<u8")
            lo = max(0, (int(np.searchsorted(fences, h, "left")) - 1) * every)
            hi = min(n, int(np.searchsorted(fences, h, "right")) * every)
        raw = self._get(lay.records + lo * MAP_RECORD_SIZE, lay.records + hi * MAP_RECORD_SIZE)
        recs = np.frombuffer(raw, dtype=MAP_DTYPE)
        hashes = recs["hash"]
        i = int(np.searchsorted(hashes, h, "left"))
        j = int(np.searchsorted(hashes, h, "right"))
        return [(int(r["off"]), int(r["lk"]), int(r["koff"]), int(r["klen"])) for r in recs[i:j]]

    def _key_matches(self, kb: bytes, koff: int, klen: int) -> bool:
        if klen != len(kb) or koff + klen > self._header.keys_len:
            return False
        return bytes(self._get(self._lay.keys + koff, self._lay.keys + koff + klen)) == kb

    def _lookup(self, key: Any) -> Any:
        try:
            kb = _pack_key(key)
        except (TypeError, ValueError, OverflowError):
            raise self._missing(key, f"key {key!r}") from None
        where = f"{self._path}[{key!r}]"
        for off, lk, koff, klen in self._candidates(kb):
            ref = self._child(lk & 0xFF, off, lk >> 8)
            if ref.kind != Kind.PACKED:
                if self._key_matches(kb, koff, klen):
                    return self._ctx.open(ref, where)
                continue
            data = self._ctx.value_bytes(ref.off, ref.end)
            if klen < len(data) and bytes(data[:klen]) == kb:
                return self._ctx.unpack(memoryview(data)[klen:], where)
        raise self._missing(key, f"key {key!r}")

    def __getitem__(self, key: Any) -> Any:
        return self._lookup(key)

    def __contains__(self, key: object) -> bool:
        try:
            kb = _pack_key(key)
        except (TypeError, ValueError, OverflowError):
            return False
        return any(self._key_matches(kb, koff, klen) for _, _, koff, klen in self._candidates(kb))

    def _materialize(self, span: memoryview, base: int) -> dict[Any, Any]:
        region = self._full()
        keys = list(self)
        rec = region.records[region.order]
        out: dict[Any, Any] = {}
        for k, off, lk, klen in zip(
            keys, rec["off"].tolist(), rec["lk"].tolist(), rec["klen"].tolist(), strict=True
        ):
            kind, length = lk & 0xFF, lk >> 8
            where = f"{self._path}[{k!r}]"
            if kind == Kind.PACKED:
                out[k] = self._value_in(span, base, off + klen, off + length, where)
            else:
                child = self._ctx.open(self._child(kind, off, length), where)
                out[k] = child._materialize(span, base)
        return out


class LazyList(_Node, Sequence[Any]):
    """A list in a container: ``l[i]``, ``l[a:b]``, ``len``, iteration, ``to_obj()``.

    An index out of range raises ``EntryNotFoundError`` (an ``IndexError``).
    """

    def __init__(self, ctx: Ctx, ref: Ref, path: str = "the root") -> None:
        self._count = self._start(ctx, ref, path)
        self._parsed: ListRegion | None = None

    def __repr__(self) -> str:
        return f"<LazyList of {self._count} entries at {self._path} of {self._ctx.name}>"

    def __len__(self) -> int:
        return self._count

    def _full(self) -> ListRegion:
        if self._parsed is None:
            self._parsed = ListRegion(
                self._region(), self._ref, self._ctx.limit, self._ctx.name, self._ctx.key
            )
        return self._parsed

    def _offs_lks(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        rec = self._full().records
        return rec["off"], rec["lk"]

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not isinstance(index, int) or isinstance(index, bool):
            raise ContainerError(
                f"list indices must be integers or slices, not {type(index).__name__}"
            )
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            raise self._missing(index, f"index {index} (it has {self._count} entries)")
        start = self._ref.off + i * LIST_RECORD_SIZE
        off, lk = (int(x) for x in np.frombuffer(self._get(start, start + 16), dtype="<u8"))
        where = f"{self._path}[{index}]"
        return self._ctx.open(self._child(lk & 0xFF, off, lk >> 8), where)

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._count):
            yield self[i]

    def _materialize(self, span: memoryview, base: int) -> list[Any]:
        rec = self._full().records
        out: list[Any] = []
        for i, (off, lk) in enumerate(zip(rec["off"].tolist(), rec["lk"].tolist(), strict=True)):
            kind, length = lk & 0xFF, lk >> 8
            where = f"{self._path}[{i}]"
            if kind == Kind.PACKED:
                out.append(self._value_in(span, base, off, off + length, where))
            else:
                child = self._ctx.open(self._child(kind, off, length), where)
                out.append(child._materialize(span, base))
        return out


__all__ = ["Ctx", "LazyList", "LazyMap", "LIST_DTYPE"]
