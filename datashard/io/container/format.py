"""The byte layout of a lazy msgpack container (format version 1).

::

    offset 0            header: MAGIC (8) | version u16 | flags u16 | reserved u32     16 bytes
    16                  data area: msgpack values, written as they arrive
    toc_start           table of contents: one *node region* per lazy map or list, children
                        before parents, the root node last
    size - 56           footer (fixed size, see FOOTER_BODY / FOOTER_TAIL)

All integers are little-endian. Every offset is absolute (from the start of the object).

A *ref* names one value: ``(kind, off, length)``. ``PACKED`` is msgpack bytes; ``MAP`` and
``LIST`` are node regions. The footer holds the root ref.

Map node region (``n`` entries, ``P = fence_every``)::

    key blob      msgpack-encoded keys, concatenated, in insertion order         keys_len bytes
    order         u32[n]: insertion position -> record index                      4 n bytes
    records       MAP_RECORD[n], sorted by (hash, key bytes)                      32 n bytes
    fences        u64[ceil(n / P)]: the hash of every P-th record                 8 ceil(n/P)
    node header   NODE_HEADER                                                     32 bytes

A map record is ``hash u64 | off u64 | length_kind u64 | key_off u32 | key_len u32``:
``length_kind = length << 8 | kind``; ``key_off`` is relative to the key blob. For a ``PACKED``
value, bytes ``[off, off + length)`` hold the msgpack key (``key_len`` bytes) followed by the
msgpack value, so one range read both fetches and verifies an entry.

List node region: ``records LIST_RECORD[n]`` (``off u64 | length_kind u64``) then the header.

The node header sits at the END of its region so the root's header, fences and records are the
bytes nearest the footer: one suffix read of the file usually holds all a lookup needs.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from datashard.errors import CorruptFileError, UnsupportedFormatVersionError

MAGIC = b"\x93DSMSGC\n"
VERSION = 1

HEADER = struct.Struct("<8sHHI")
HEADER_SIZE = HEADER.size  # 16

#: file_size, toc_start, root_off, root_length, root_kind, 7 pad bytes.
FOOTER_BODY = struct.Struct("<QQQQB7x")
#: crc32 of the body, version, reserved, MAGIC. These 16 bytes keep their place in every version.
FOOTER_TAIL = struct.Struct("<IHH8s")
FOOTER_SIZE = FOOTER_BODY.size + FOOTER_TAIL.size  # 56

NODE_HEADER = struct.Struct("<4sIQQQ")  # tag, fence_every, count, keys_len, reserved
NODE_HEADER_SIZE = NODE_HEADER.size  # 32
MAP_TAG = b"DSMP"
LIST_TAG = b"DSLS"

MAP_RECORD = struct.Struct("<QQQII")
MAP_RECORD_SIZE = MAP_RECORD.size  # 32
LIST_RECORD = struct.Struct("<QQ")
LIST_RECORD_SIZE = LIST_RECORD.size  # 16

#: One fence per this many map records: a page of fence_every records is 8 KiB.
FENCE_EVERY = 256

#: The smallest possible container: a header, an empty packed value and a footer.
MIN_SIZE = HEADER_SIZE + 1 + FOOTER_SIZE


class Kind(IntEnum):
    """What a ref points at."""

    PACKED = 0
    MAP = 1
    LIST = 2


@dataclass(frozen=True)
class Ref:
    """One value of the container: ``length`` bytes at ``off`` of the given ``kind``."""

    kind: Kind
    off: int
    length: int

    @property
    def end(self) -> int:
        return self.off + self.length


@dataclass(frozen=True)
class Footer:
    file_size: int
    toc_start: int
    root: Ref
    version: int


@dataclass(frozen=True)
class NodeHeader:
    tag: bytes
    fence_every: int
    count: int
    keys_len: int


def key_hash(packed_key: bytes) -> int:
    """The 64-bit hash of a msgpack-encoded map key: ``crc32 << 32 | adler32``.

    Only an index: lookups always compare the key bytes, so a collision costs a read, never a
    wrong answer.
    """
    return (zlib.crc32(packed_key) << 32) | zlib.adler32(packed_key)


def key_hashes(packed_keys: list[bytes]) -> np.ndarray[Any, Any]:
    """``key_hash`` of every key, as a ``uint64`` array."""
    n = len(packed_keys)
    crc = np.fromiter(map(zlib.crc32, packed_keys), dtype=np.uint64, count=n)
    adler = np.fromiter(map(zlib.adler32, packed_keys), dtype=np.uint64, count=n)
    result: np.ndarray[Any, Any] = (crc << np.uint64(32)) | adler
    return result


def encode_header() -> bytes:
    return HEADER.pack(MAGIC, VERSION, 0, 0)


def check_header(data: bytes | memoryview, name: str, key: str) -> None:
    """Raise unless ``data`` starts with a container header this reader understands."""
    if len(data) < HEADER_SIZE:
        raise CorruptFileError(
            f"{name} is truncated: {len(data)} bytes, shorter than a container header", key=key
        )
    magic, version, _flags, _reserved = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptFileError(
            f"{name} is not a datashard container: header magic {magic!r}, expected {MAGIC!r}",
            key=key,
        )
    check_version(version, name, key)


def check_version(version: int, name: str, key: str) -> None:
    if version > VERSION:
        raise UnsupportedFormatVersionError(
            f"{name} was written in container format version {version}; this datashard reads "
            f"versions up to {VERSION}: upgrade datashard to read it",
            key=key,
            found=version,
            supported=VERSION,
        )
    if version < 1:
        raise CorruptFileError(f"{name} has an invalid format version {version}", key=key)


def encode_footer(file_size: int, toc_start: int, root: Ref) -> bytes:
    body = FOOTER_BODY.pack(file_size, toc_start, root.off, root.length, int(root.kind))
    return body + FOOTER_TAIL.pack(zlib.crc32(body), VERSION, 0, MAGIC)


def decode_footer(tail: bytes | memoryview, size: int, name: str, key: str) -> Footer:
    """Parse and check the footer at the end of ``tail`` (the last bytes of a ``size``-byte file).

    Raises ``CorruptFileError`` (truncated, wrong magic, bad checksum, offsets out of bounds) and
    ``UnsupportedFormatVersionError`` (a newer format).
    """
    if size < MIN_SIZE or len(tail) < FOOTER_SIZE:
        raise CorruptFileError(
            f"{name} is truncated: {size} bytes, shorter than the smallest container "
            f"({MIN_SIZE} bytes)",
            key=key,
        )
    crc, version, _reserved, magic = FOOTER_TAIL.unpack_from(tail, len(tail) - FOOTER_TAIL.size)
    if magic != MAGIC:
        raise CorruptFileError(
            f"{name} is not a datashard container or is truncated: footer magic {magic!r}, "
            f"expected {MAGIC!r}",
            key=key,
        )
    check_version(version, name, key)
    start = len(tail) - FOOTER_SIZE
    body = bytes(tail[start : start + FOOTER_BODY.size])
    if zlib.crc32(body) != crc:
        raise CorruptFileError(f"{name} has a corrupt footer (checksum mismatch)", key=key)
    file_size, toc_start, root_off, root_len, root_kind = FOOTER_BODY.unpack(body)
    if file_size != size:
        raise CorruptFileError(
            f"{name} is {size} bytes but its footer records {file_size}: truncated or altered",
            key=key,
        )
    limit = size - FOOTER_SIZE
    if not HEADER_SIZE <= toc_start <= limit:
        raise CorruptFileError(f"{name}: TOC offset {toc_start} is out of bounds", key=key)
    root = make_ref(root_kind, root_off, root_len, limit, name, key)
    return Footer(file_size, toc_start, root, version)


def make_ref(kind: int, off: int, length: int, limit: int, name: str, key: str) -> Ref:
    """A checked ref: a known kind, and ``[off, off + length)`` inside ``[HEADER_SIZE, limit)``."""
    if kind not in (0, 1, 2):
        raise CorruptFileError(f"{name}: unknown entry kind {kind} at offset {off}", key=key)
    if off < HEADER_SIZE or off + length > limit or length < 1:
        raise CorruptFileError(
            f"{name}: entry range [{off}, {off + length}) is outside the data ({limit} bytes)",
            key=key,
        )
    if kind != Kind.PACKED and length < NODE_HEADER_SIZE:
        raise CorruptFileError(f"{name}: node at offset {off} is too short", key=key)
    return Ref(Kind(kind), off, length)


def decode_node_header(data: bytes | memoryview, ref: Ref, name: str, key: str) -> NodeHeader:
    """Parse the header at the end of a node region and check it fits in ``ref.length``."""
    tag, fence_every, count, keys_len, _ = NODE_HEADER.unpack_from(data, 0)
    want = MAP_TAG if ref.kind == Kind.MAP else LIST_TAG
    if tag != want:
        raise CorruptFileError(
            f"{name}: node at offset {ref.off} has tag {tag!r}, expected {want!r}", key=key
        )
    if ref.kind == Kind.MAP:
        if fence_every < 1:
            raise CorruptFileError(f"{name}: node at offset {ref.off} has no fences", key=key)
        need = map_region_size(count, keys_len, fence_every)
    else:
        need = count * LIST_RECORD_SIZE + NODE_HEADER_SIZE
    if need != ref.length:
        raise CorruptFileError(
            f"{name}: node at offset {ref.off} needs {need} bytes but its ref says {ref.length}",
            key=key,
        )
    return NodeHeader(tag, fence_every, count, keys_len)


def fence_count(count: int, fence_every: int) -> int:
    return (count + fence_every - 1) // fence_every


def map_region_size(count: int, keys_len: int, fence_every: int) -> int:
    return (
        keys_len
        + 4 * count
        + MAP_RECORD_SIZE * count
        + 8 * fence_count(count, fence_every)
        + NODE_HEADER_SIZE
    )


@dataclass(frozen=True)
class MapLayout:
    """Absolute offsets of the parts of one map node region."""

    keys: int
    order: int
    records: int
    fences: int
    header: int

    @classmethod
    def of(cls, ref: Ref, count: int, keys_len: int, fence_every: int) -> MapLayout:
        order = ref.off + keys_len
        records = order + 4 * count
        fences = records + MAP_RECORD_SIZE * count
        header = ref.end - NODE_HEADER_SIZE
        return cls(ref.off, order, records, fences, header)


def bin_header(length: int) -> bytes:
    """The msgpack ``bin`` header for a ``length``-byte binary value."""
    if length < 0x100:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 0x10000:
        return b"\xc5" + length.to_bytes(2, "big")
    if length < 0x100000000:
        return b"\xc6" + length.to_bytes(4, "big")
    raise ValueError(f"msgpack bin values hold at most 4 GiB - 1 bytes, got {length}")
