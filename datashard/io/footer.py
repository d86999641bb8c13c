"""Parquet footers read with one suffix request each, and a cache that keeps them across epochs.

A Parquet file ends with ``<FileMetaData><4-byte little-endian length>PAR1``. One
``read_tail`` of :data:`DEFAULT_TAIL` bytes holds the whole footer of almost every file; a larger
footer costs exactly one more range request for the part that was missing.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

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
    #: What readers derive from the metadata once per footer (its Arrow schema, where its
    #: columns are), kept with it in the cache so a second read of the file skips that work.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class SizeMismatchError(CorruptFileError):
    """An object is not the size its reader was told (a manifest's ``file_size_in_bytes``)."""

    def __init__(self, message: str, *, key: str, actual: int, expected: int) -> None:
        super().__init__(message, key=key)
        self.actual = actual
        self.expected = expected


def _corrupt(uri: str, why: str) -> CorruptFileError:
    return CorruptFileError(f"{uri} is not a readable Parquet file: {why}", key=uri)


def read_footer(
    backend: StorageBackend, key: str, size: int | None = None, tail: int = DEFAULT_TAIL
) -> Footer:
    """Fetch and parse the footer of ``key``.

    One request: with ``size`` known (from a manifest) a range read of the last ``tail`` bytes
    and one byte past the end, so an object of any other size is noticed and raises
    ``SizeMismatchError`` naming both sizes (it was replaced or truncated); else a suffix read
    (``read_tail``), which also tells the size. Raises ``ObjectNotFoundError`` for a missing
    object and ``CorruptFileError`` (naming the object) when it is not Parquet or the footer is
    cut.
    """
    uri = backend.uri_for(key)
    if size is None:
        data, size = backend.read_tail(key, tail)
    else:
        start = max(0, size - tail)
        data = backend.read_range(key, start, size + 1)
        if len(data) != size - start:
            actual = backend.head(key).size
            raise SizeMismatchError(
                f"{uri} is {actual} bytes, but {size} were expected: it was replaced or truncated",
                key=uri,
                actual=actual,
                expected=size,
            )
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
    """Footers by object URI, shared by threads and kept across epochs and scans.

    Thread-safe. A footer is fetched at most once per URI (concurrent misses for the same URI
    wait for the one fetch). ``fetches`` counts the footers actually read from storage. With
    ``max_bytes``, the least recently used footers are dropped once their serialized sizes add
    up to more than that. Data files are immutable, so a footer never goes stale; a footer that
    fails to read (or whose object is not the size expected) is not kept.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self._footers: OrderedDict[str, Footer] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.fetches = 0

    def get(self, backend: StorageBackend, key: str, size: int | None = None) -> Footer:
        """The footer of ``key`` (``size``: its length when known, from a manifest)."""
        uri = backend.uri_for(key)
        with self._lock:
            footer = self._footers.get(uri)
            if footer is not None:
                self._footers.move_to_end(uri)
                return footer
            lock = self._locks.setdefault(uri, threading.Lock())
        with lock:
            with self._lock:
                footer = self._footers.get(uri)
            if footer is None:
                footer = read_footer(backend, key, size)
                with self._lock:
                    self._footers[uri] = footer
                    self._bytes += footer.metadata.serialized_size
                    self.fetches += 1
                    self._trim()
        return footer

    def _trim(self) -> None:
        while self.max_bytes is not None and self._bytes > self.max_bytes and self._footers:
            uri, old = self._footers.popitem(last=False)
            self._locks.pop(uri, None)
            self._bytes -= old.metadata.serialized_size

    def __len__(self) -> int:
        return len(self._footers)

    def clear(self) -> None:
        with self._lock:
            self._footers.clear()
            self._locks.clear()
            self._bytes = 0

    def after_fork(self) -> None:
        """A forked child may have been copied while a thread held a lock: new ones."""
        self._lock = threading.Lock()
        self._locks = {}


#: Serialized footer bytes the process-wide cache keeps (least recently used dropped first).
FOOTER_CACHE_BYTES = 64 * 1024 * 1024

#: The process-wide footer cache every read of a data file goes through (scans, rewrites, the
#: loader built from a table). Footers are kept after a fork (its locks are renewed).
FOOTERS = FooterCache(FOOTER_CACHE_BYTES)

os.register_at_fork(after_in_child=FOOTERS.after_fork)
