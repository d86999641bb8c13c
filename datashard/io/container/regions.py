"""Parsing whole node regions (the fixed-width indexes of lazy maps and lists) into arrays.

Used where a region is held entirely in memory: the reader for indexes up to its whole-index
limit, append mode (to reopen the root) and the combiner (to relocate offsets).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from datashard.errors import CorruptFileError
from datashard.io.container.encoder import _LIST_DTYPE, _MAP_DTYPE, ListBuilder, MapBuilder
from datashard.io.container.format import (
    HEADER_SIZE,
    NODE_HEADER_SIZE,
    MapLayout,
    NodeHeader,
    Ref,
    decode_node_header,
    fence_count,
)

MAP_DTYPE = _MAP_DTYPE
LIST_DTYPE = _LIST_DTYPE


def check_records(
    offs: np.ndarray[Any, Any], lks: np.ndarray[Any, Any], limit: int, name: str, key: str
) -> None:
    """Raise ``CorruptFileError`` unless every record has a known kind and lies in the data."""
    if len(offs) == 0:
        return
    kinds = lks & np.uint64(0xFF)
    lengths = lks >> np.uint64(8)
    bad = (
        (kinds > np.uint64(2))
        | (offs < np.uint64(HEADER_SIZE))
        | (lengths < np.uint64(1))
        | (offs + lengths > np.uint64(limit))
        | (offs + lengths < offs)
    )
    if bad.any():
        i = int(np.argmax(bad))
        raise CorruptFileError(
            f"{name}: index record {i} (kind {int(kinds[i])}, offset {int(offs[i])}, length "
            f"{int(lengths[i])}) is invalid or outside the data ({limit} bytes)",
            key=key,
        )


class MapRegion:
    """A whole map node region: header, sorted records, insertion order, key blob."""

    def __init__(self, region: memoryview, ref: Ref, limit: int, name: str, key: str) -> None:
        header = decode_node_header(region[-NODE_HEADER_SIZE:], ref, name, key)
        self.header: NodeHeader = header
        lay = MapLayout.of(ref, header.count, header.keys_len, header.fence_every)
        base = ref.off
        n = header.count
        self.keys_blob = region[: header.keys_len]
        self.order = np.frombuffer(region, dtype="<u4", count=n, offset=lay.order - base)
        self.records = np.frombuffer(region, dtype=MAP_DTYPE, count=n, offset=lay.records - base)
        nf = fence_count(n, header.fence_every)
        self.fences = np.frombuffer(region, dtype="<u8", count=nf, offset=lay.fences - base)
        check_records(self.records["off"], self.records["lk"], limit, name, key)
        if n and (
            int(self.order.max()) >= n
            or int((self.records["koff"].astype(np.uint64) + self.records["klen"]).max())
            > header.keys_len
        ):
            raise CorruptFileError(f"{name}: map node at offset {ref.off} is corrupt", key=key)

    def keys_in_order(self) -> list[bytes]:
        """The packed keys, in insertion order."""
        rec = self.records[self.order]
        blob = bytes(self.keys_blob)
        return [
            blob[o : o + n] for o, n in zip(rec["koff"].tolist(), rec["klen"].tolist(), strict=True)
        ]

    def decoded_keys(self, name: str, key: str) -> list[Any]:
        """The keys as Python values, in insertion order (arrays become tuples)."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False)
        unpacker.feed(bytes(self.keys_blob))
        try:
            keys = list(unpacker)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CorruptFileError(f"{name}: a map's key blob is corrupt: {exc}", key=key) from exc
        if len(keys) != self.header.count:
            raise CorruptFileError(
                f"{name}: a map lists {self.header.count} entries but {len(keys)} keys", key=key
            )
        return keys


class ListRegion:
    """A whole list node region: header and records."""

    def __init__(self, region: memoryview, ref: Ref, limit: int, name: str, key: str) -> None:
        header = decode_node_header(region[-NODE_HEADER_SIZE:], ref, name, key)
        self.header = header
        self.records = np.frombuffer(region, dtype=LIST_DTYPE, count=header.count, offset=0)
        check_records(self.records["off"], self.records["lk"], limit, name, key)


def load_map_builder(region: bytes, ref: Ref, limit: int, name: str, key: str) -> MapBuilder:
    """A builder holding the entries of an existing map node (for append mode)."""
    parsed = MapRegion(memoryview(region), ref, limit, name, key)
    builder = MapBuilder()
    rec = parsed.records[parsed.order]
    lks = rec["lk"].tolist()
    for kb, off, lk in zip(parsed.keys_in_order(), rec["off"].tolist(), lks, strict=True):
        builder.add(kb, lk & 0xFF, off, lk >> 8, None)
    return builder


def load_list_builder(region: bytes, ref: Ref, limit: int, name: str, key: str) -> ListBuilder:
    """A builder holding the entries of an existing list node (for append mode)."""
    parsed = ListRegion(memoryview(region), ref, limit, name, key)
    builder = ListBuilder()
    for off, lk in zip(parsed.records["off"].tolist(), parsed.records["lk"].tolist(), strict=True):
        builder.add(lk & 0xFF, off, lk >> 8, None)
    return builder


__all__ = [
    "LIST_DTYPE",
    "MAP_DTYPE",
    "ListRegion",
    "MapRegion",
    "check_records",
    "load_list_builder",
    "load_map_builder",
]
