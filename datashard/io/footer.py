"""Parquet footers read with one suffix request each, and a cache that keeps them across epochs.

A Parquet file ends with ``<FileMetaData><4-byte little-endian length>PAR1``. One
``read_tail`` of :data:`DEFAULT_TAIL` bytes holds the whole footer of almost every file; a larger
footer costs exactly one more range request for the part that was missing.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from datashard.errors import CorruptFileError
from datashard.storage.base import StorageBackend

#: Bytes fetched from the end of a file in the first footer request.
DEFAULT_TAIL = 64 * 1024
_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Footer:
    """A parsed footer and the facts about its file that reads need."""

    uri: str
    size: int
    metadata: pq.FileMetaData


def _corrupt(uri: str, why: str) -> CorruptFileError:
    return CorruptFileError(f"{uri} is not a readable Parquet file: {why}", key=uri)


def read_footer(
    backend: StorageBackend, key: str, size: int | None = None, tail: int = DEFAULT_TAIL
) -> Footer:
    """Fetch and parse the footer of ``key``.

    With ``size`` known (from a manifest) the first request is a plain range read; otherwise a
    suffix read that also reports the size. Raises ``ObjectNotFoundError`` for a missing object
    and ``CorruptFileError`` (naming the object) when it is not Parquet or the footer is cut.
    """
    uri = backend.uri_for(key)
    if size is None:
        data, size = backend.read_tail(key, tail)
    else:
        data = backend.read_range(key, max(0, size - tail), size)
    if size < 12 or len(data) < 8:
        raise _corrupt(uri, f"it is {size} bytes long, shorter than any Parquet file")
    if data[-4:] != _MAGIC:
        raise _corrupt(uri, f"it does not end with the Parquet magic (last bytes {data[-4:]!r})")
    (length,) = struct.unpack("<I", data[-8:-4])
    if length + 12 > size:
        raise _corrupt(uri, f"its footer claims {length} bytes but the file has only {size}")
    need = length + 8
    if need > len(data):  # a footer larger than the first read: fetch the missing front part
        front = backend.read_range(key, size - need, size - len(data))
        data = front + data
    footer_bytes = data[len(data) - need :]
    try:
        metadata = pq.read_metadata(pa.BufferReader(_MAGIC + footer_bytes))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _corrupt(uri, f"its footer does not parse ({exc})") from exc
    return Footer(uri=uri, size=size, metadata=metadata)


class FooterCache:
    """Footers by object URI, shared by a loader's threads and kept across epochs.

    Thread-safe. A footer is fetched at most once per URI (concurrent misses for the same URI
    wait for the one fetch). ``fetches`` counts the footers actually read from storage.
    """

    def __init__(self) -> None:
        self._footers: dict[str, Footer] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, backend: StorageBackend, key: str, size: int | None = None) -> Footer:
        uri = backend.uri_for(key)
        footer = self._footers.get(uri)
        if footer is not None:
            return footer
        with self._lock:
            lock = self._locks.setdefault(uri, threading.Lock())
        with lock:
            footer = self._footers.get(uri)
            if footer is None:
                footer = read_footer(backend, key, size)
                with self._lock:
                    self._footers[uri] = footer
                    self.fetches += 1
        return footer

    def __len__(self) -> int:
        return len(self._footers)

    def clear(self) -> None:
        with self._lock:
            self._footers.clear()
            self._locks.clear()
