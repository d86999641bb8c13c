"""Puffin files (the Iceberg spec's ``puffin-spec.md``) and the deletion vectors they hold.

A Puffin file is ``Magic Blob1 ... BlobN Footer`` with ``Magic`` = ``PFA1`` and the footer
``Magic FooterPayload FooterPayloadSize Flags Magic`` (size and flags 4-byte little-endian; the
payload is UTF-8 JSON listing each blob's type, offset and length). :func:`footer_length` and
:func:`parse_footer` read the footer from the end of a file.

A deletion vector (format version 3) is a ``deletion-vector-v1`` blob, which a delete manifest
entry locates directly by ``content_offset`` and ``content_size_in_bytes``:

- the length of the magic plus the vector, 4 bytes big-endian;
- the magic ``D1 D3 39 64``;
- the vector: the 64-bit Roaring bitmap "portable" serialization (the number of 32-bit bitmaps
  as 8 bytes little-endian, then for each, ordered by key, the key as 4 bytes little-endian and
  a 32-bit Roaring bitmap in its portable format);
- the CRC-32 of the magic and the vector, 4 bytes big-endian.

:func:`deletion_vector_positions` checks all of that and returns the deleted positions;
:func:`deletion_vector_blob` makes one from positions (array, bitmap and run containers, each
chosen as CRoaring's ``run_optimize`` chooses it, so the bytes are those CRoaring writes) and
:func:`puffin_file` lays blobs out in a Puffin file with its footer. Pure: bytes in, values out;
every malformed input raises :class:`~datashard.errors.CorruptMetadataError` naming the file.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datashard.errors import CorruptMetadataError, UnsupportedFeatureError

MAGIC = b"PFA1"
#: The magic bytes that open a deletion-vector-v1 blob (after its length).
DV_MAGIC = bytes.fromhex("D1D33964")
DELETION_VECTOR_V1 = "deletion-vector-v1"
#: Footer bytes after the payload: payload size, flags, magic.
_FOOTER_TRAILER = 12

# Roaring bitmap portable format (RoaringFormatSpec)
_SERIAL_COOKIE_NO_RUN = 12346
_SERIAL_COOKIE = 12347
_NO_OFFSET_THRESHOLD = 4
_ARRAY_MAX = 4096
_BITMAP_BYTES = 8192
#: The field a deletion vector is computed for: ``_pos`` (the row position).
POS_FIELD_ID = 2147483645


@dataclass(frozen=True)
class BlobMetadata:
    """One blob of a Puffin file, as its footer describes it."""

    type: str
    fields: tuple[int, ...]
    snapshot_id: int
    sequence_number: int
    offset: int
    length: int
    compression_codec: str | None = None
    properties: dict[str, str] = field(default_factory=dict)


def _fail(location: str, what: str) -> CorruptMetadataError:
    return CorruptMetadataError(f"corrupt Puffin file {location}: {what}")


def footer_length(tail: bytes, file_size: int, location: str) -> int:
    """The length of the footer of a Puffin file of ``file_size`` bytes, from its last 12 bytes
    (``tail``): read that many bytes from the end and give them to :func:`parse_footer`."""
    if len(tail) < _FOOTER_TRAILER or file_size < len(MAGIC) + 4 + _FOOTER_TRAILER:
        raise _fail(location, f"{file_size} bytes is too short for a Puffin file")
    trailer = bytes(tail[-_FOOTER_TRAILER:])
    if trailer[8:] != MAGIC:
        raise _fail(location, f"the file does not end in the magic {MAGIC!r}: {trailer[8:]!r}")
    payload = int(struct.unpack("<i", trailer[:4])[0])
    total = len(MAGIC) + payload + _FOOTER_TRAILER
    if payload < 0 or total + len(MAGIC) > file_size:
        raise _fail(location, f"footer payload size {payload} does not fit in {file_size} bytes")
    return total


def parse_footer(footer: bytes, location: str) -> list[BlobMetadata]:
    """The blobs listed in a Puffin footer (the last :func:`footer_length` bytes of the file).

    Raises ``CorruptMetadataError`` for bad magic, a bad size or JSON, and
    ``UnsupportedFeatureError`` for a compressed (LZ4) footer.
    """
    data = bytes(footer)
    if len(data) < len(MAGIC) + _FOOTER_TRAILER or data[: len(MAGIC)] != MAGIC:
        raise _fail(location, "the footer does not start with the magic")
    (payload_size,) = struct.unpack("<i", data[-12:-8])
    flags = data[-8:-4]
    if data[-4:] != MAGIC or payload_size != len(data) - len(MAGIC) - _FOOTER_TRAILER:
        raise _fail(location, f"footer payload size {payload_size} does not match the footer")
    if flags[0] & 1:
        raise UnsupportedFeatureError(
            f"Puffin file {location} has an LZ4-compressed footer, which datashard does not read"
        )
    try:
        doc = json.loads(data[len(MAGIC) : len(MAGIC) + payload_size].decode("utf-8"))
        return [_blob(b) for b in doc["blobs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(location, f"bad footer payload ({type(exc).__name__}: {exc})") from exc


def _blob(b: dict[str, Any]) -> BlobMetadata:
    props = b.get("properties") or {}
    return BlobMetadata(
        type=str(b["type"]),
        fields=tuple(int(f) for f in b["fields"]),
        snapshot_id=int(b["snapshot-id"]),
        sequence_number=int(b["sequence-number"]),
        offset=int(b["offset"]),
        length=int(b["length"]),
        compression_codec=b.get("compression-codec"),
        properties={str(k): str(v) for k, v in props.items()},
    )


def deletion_vector_positions(blob: bytes, location: str) -> np.ndarray:
    """The positions (sorted, unique, int64) a ``deletion-vector-v1`` blob deletes.

    ``blob`` is the whole blob (length, magic, vector, CRC-32), as a delete manifest's
    ``content_offset`` and ``content_size_in_bytes`` locate it. Raises ``CorruptMetadataError``
    naming ``location`` when the length, the magic, the CRC or the bitmap is wrong.
    """
    data = memoryview(bytes(blob))
    if len(data) < 4 + len(DV_MAGIC) + 8 + 4:
        raise _fail(location, f"deletion vector of {len(data)} bytes is too short")
    (length,) = struct.unpack(">I", data[:4])
    if length != len(data) - 8:
        raise _fail(
            location,
            f"deletion vector length field says {length} bytes of magic and vector, the blob "
            f"holds {len(data) - 8} (content_size_in_bytes {len(data)})",
        )
    body = data[4 : 4 + length]
    if bytes(body[: len(DV_MAGIC)]) != DV_MAGIC:
        raise _fail(
            location,
            f"deletion vector magic is {bytes(body[:4]).hex()}, expected {DV_MAGIC.hex()}",
        )
    (crc,) = struct.unpack(">I", data[4 + length :])
    actual = zlib.crc32(body) & 0xFFFFFFFF
    if crc != actual:
        raise _fail(location, f"deletion vector CRC-32 is {actual:08x}, the blob says {crc:08x}")
    try:
        return _roaring64(body[len(DV_MAGIC) :])
    except (struct.error, ValueError, IndexError) as exc:
        raise _fail(location, f"deletion vector bitmap is malformed: {exc}") from exc


def _roaring64(data: memoryview) -> np.ndarray:
    """Positions of a 64-bit Roaring bitmap in the portable serialization."""
    count = int(struct.unpack_from("<Q", data, 0)[0])
    pos = 8
    parts: list[np.ndarray] = []
    last_key = -1
    for _ in range(count):
        (key,) = struct.unpack_from("<I", data, pos)
        if key <= last_key:
            raise ValueError(f"bitmap keys are not ascending ({key} after {last_key})")
        if key & 0x80000000:
            raise ValueError(f"position key {key} sets the sign bit (positions are positive)")
        last_key = key
        pos = _roaring32(data, pos + 4, np.int64(key) << np.int64(32), parts)
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the last bitmap")
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _roaring32(data: memoryview, start: int, high: np.int64, out: list[np.ndarray]) -> int:
    """Append to ``out`` the values (int64, ascending, each or-ed with ``high``) of a 32-bit
    Roaring bitmap in the portable format at ``start``, one array per container; the offset
    just after the bitmap."""
    (cookie,) = struct.unpack_from("<I", data, start)
    pos: int = start + 4
    if cookie & 0xFFFF == _SERIAL_COOKIE:
        n = (cookie >> 16) + 1
        runs = np.unpackbits(np.frombuffer(data, np.uint8, (n + 7) // 8, pos), bitorder="little")[
            :n
        ].astype(bool)
        pos += (n + 7) // 8
        has_offsets = n >= _NO_OFFSET_THRESHOLD
    elif cookie == _SERIAL_COOKIE_NO_RUN:
        n = int(struct.unpack_from("<I", data, pos)[0])
        pos += 4
        runs = np.zeros(n, dtype=bool)
        has_offsets = True
    else:
        raise ValueError(f"unknown Roaring cookie {cookie:#x}")
    if n > 1 << 16:
        raise ValueError(f"{n} containers in one 32-bit bitmap (at most 65536)")
    header = np.frombuffer(data, "<u2", 2 * n, pos).reshape(n, 2).astype(np.int64)
    pos += 4 * n
    if has_offsets:
        pos += 4 * n  # offsets: the containers follow in order, so they are not needed
    keys = header[:, 0]
    if n > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        raise ValueError("container keys are not ascending")
    for i in range(n):
        cardinality = int(header[i, 1]) + 1
        if runs[i]:
            nruns = int(struct.unpack_from("<H", data, pos)[0])
            pairs = np.frombuffer(data, "<u2", 2 * nruns, pos + 2).reshape(nruns, 2)
            pos += 2 + 4 * nruns
            starts = pairs[:, 0].astype(np.int64)
            ends = starts + pairs[:, 1].astype(np.int64) + 1
            if np.any(ends > 1 << 16) or np.any(starts[1:] < ends[:-1]):
                raise ValueError("runs overlap, are out of order or go past 65535")
            low = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
        elif cardinality <= _ARRAY_MAX:
            low = np.frombuffer(data, "<u2", cardinality, pos).astype(np.int64)
            pos += 2 * cardinality
            if cardinality > 1 and not bool(np.all(low[1:] > low[:-1])):
                raise ValueError(f"array container {int(keys[i])} is not ascending")
        else:
            words = np.frombuffer(data, np.uint8, _BITMAP_BYTES, pos)
            pos += _BITMAP_BYTES
            low = np.flatnonzero(np.unpackbits(words, bitorder="little"))
        if len(low) != cardinality:
            raise ValueError(
                f"container {int(keys[i])} holds {len(low)} values, its header says {cardinality}"
            )
        low |= high | (keys[i] << np.int64(16))
        out.append(low)
    return pos


# --------------------------------------------------------------------------------------------
# writing


def deletion_vector_blob(positions: np.ndarray | list[int]) -> bytes:
    """The ``deletion-vector-v1`` blob of the deleted ``positions`` (any order, repeats
    allowed): length, magic, the 64-bit Roaring bitmap in its portable serialization, CRC-32.
    ``ValueError`` for a negative position."""
    pos = sorted_unique(positions)
    if len(pos) and pos[0] < 0:
        raise ValueError(f"a deleted position must be >= 0, got {int(pos[0])}")
    body = DV_MAGIC + _roaring64_bytes(pos)
    return struct.pack(">I", len(body)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def sorted_unique(positions: np.ndarray | list[int]) -> np.ndarray:
    """``positions`` as a sorted int64 array without repeats (no copy when already so)."""
    pos = np.asarray(positions, dtype=np.int64)
    if len(pos) > 1 and not bool(np.all(pos[1:] > pos[:-1])):
        pos = np.sort(pos)
        pos = pos[np.concatenate([[True], pos[1:] != pos[:-1]])]
    return pos


def _groups(values: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """The distinct values of the sorted ``values``, and where each run of them starts and
    ends."""
    starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
    return values[starts], starts.tolist(), [*starts[1:].tolist(), len(values)]


def _roaring64_bytes(pos: np.ndarray) -> bytes:
    keys, starts, ends = _groups(pos >> np.int64(32))
    parts = [struct.pack("<Q", len(keys))]
    for key, start, end in zip(keys.tolist(), starts, ends, strict=True):
        parts.append(struct.pack("<I", key))
        parts.append(_roaring32_bytes((pos[start:end] & np.int64(0xFFFFFFFF)).astype(np.int64)))
    return b"".join(parts)


def _roaring32_bytes(low: np.ndarray) -> bytes:
    """A 32-bit Roaring bitmap of ``low`` (sorted, unique, < 2**32) in the portable format."""
    keys, starts, ends = _groups(low >> np.int64(16))
    containers: list[bytes] = []
    runs: list[bool] = []
    cards: list[int] = []
    for start, end in zip(starts, ends, strict=True):
        values = (low[start:end] & np.int64(0xFFFF)).astype(np.int64)
        card = len(values)
        breaks = np.flatnonzero(np.diff(values) != 1) + 1
        run_starts = values[np.concatenate([[0], breaks])]
        run_ends = values[np.concatenate([breaks - 1, [card - 1]])]
        run_size = 2 + 4 * len(run_starts)
        # CRoaring's run_optimize: a run container where it is smaller than the other kind
        as_run = run_size < (2 + 2 * card if card <= _ARRAY_MAX else _BITMAP_BYTES)
        if as_run:
            pairs = np.stack([run_starts, run_ends - run_starts], axis=1).astype("<u2")
            containers.append(struct.pack("<H", len(run_starts)) + pairs.tobytes())
        elif card <= _ARRAY_MAX:
            containers.append(values.astype("<u2").tobytes())
        else:
            bits = np.zeros(1 << 16, dtype=bool)
            bits[values] = True
            containers.append(np.packbits(bits, bitorder="little").tobytes())
        runs.append(bool(as_run))
        cards.append(card)
    n = len(containers)
    header = np.stack([keys, np.asarray(cards) - 1], axis=1).astype("<u2").tobytes()
    if any(runs):
        flags = np.packbits(np.asarray(runs, dtype=bool), bitorder="little").tobytes()
        head = struct.pack("<I", _SERIAL_COOKIE | ((n - 1) << 16)) + flags + header
        with_offsets = n >= _NO_OFFSET_THRESHOLD
    else:
        head = struct.pack("<II", _SERIAL_COOKIE_NO_RUN, n) + header
        with_offsets = True
    if with_offsets:
        offset = len(head) + 4 * n
        offsets = []
        for c in containers:
            offsets.append(offset)
            offset += len(c)
        head += np.asarray(offsets, dtype="<u4").tobytes()
    return head + b"".join(containers)


@dataclass(frozen=True)
class Blob:
    """One blob to write into a Puffin file: its type, fields, bytes and properties."""

    type: str
    fields: tuple[int, ...]
    data: bytes
    properties: dict[str, str] = field(default_factory=dict)


def deletion_vector(referenced_data_file: str, positions: np.ndarray | list[int]) -> Blob:
    """The deletion vector of ``referenced_data_file`` deleting ``positions``, as a blob with
    the properties the spec requires (``referenced-data-file``, ``cardinality``)."""
    unique = sorted_unique(positions)
    return Blob(
        DELETION_VECTOR_V1,
        (POS_FIELD_ID,),
        deletion_vector_blob(unique),
        {"referenced-data-file": referenced_data_file, "cardinality": str(len(unique))},
    )


def puffin_file(
    blobs: list[Blob], properties: dict[str, str] | None = None
) -> tuple[bytes, list[BlobMetadata]]:
    """The bytes of a Puffin file holding ``blobs`` (uncompressed; snapshot id and sequence
    number -1, as the spec asks of deletion vectors, whose snapshot is not known yet) and the
    footer's description of each blob (its ``offset`` and ``length`` in the file)."""
    out = [MAGIC]
    offset = len(MAGIC)
    metas: list[BlobMetadata] = []
    for b in blobs:
        metas.append(
            BlobMetadata(b.type, b.fields, -1, -1, offset, len(b.data), None, dict(b.properties))
        )
        out.append(b.data)
        offset += len(b.data)
    doc: dict[str, Any] = {
        "blobs": [
            {
                "type": m.type,
                "fields": list(m.fields),
                "snapshot-id": m.snapshot_id,
                "sequence-number": m.sequence_number,
                "offset": m.offset,
                "length": m.length,
                "properties": m.properties,
            }
            for m in metas
        ]
    }
    if properties:
        doc["properties"] = dict(properties)
    payload = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    out += [MAGIC, payload, struct.pack("<i", len(payload)), bytes(4), MAGIC]
    return b"".join(out), metas


__all__ = [
    "DELETION_VECTOR_V1",
    "DV_MAGIC",
    "MAGIC",
    "POS_FIELD_ID",
    "Blob",
    "BlobMetadata",
    "deletion_vector",
    "deletion_vector_blob",
    "deletion_vector_positions",
    "footer_length",
    "parse_footer",
    "puffin_file",
]
