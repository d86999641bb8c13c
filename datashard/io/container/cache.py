"""A small cache of byte ranges of one object: the footer page and index pages a reader fetched.

It knows nothing about storage: it calls ``fetch(start, end)`` for what it does not hold. The
segment that ends at the object's end (the suffix read at open) is kept for the reader's life and
grows downwards when a fetch reaches it; other segments are dropped oldest first once they hold
more than ``limit`` bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class ByteCache:
    """Ranges ``[start, end)`` of an object of ``size`` bytes, fetched on demand."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, limit: int) -> None:
        self._fetch = fetch
        self.size = size
        self._limit = limit
        self._tail_start = size
        self._tail = b""
        self._segments: OrderedDict[int, bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    @property
    def tail_start(self) -> int:
        return self._tail_start

    def load_tail(self, length: int) -> bytes:
        """Fetch the last ``length`` bytes (one request) and keep them; return them."""
        start = max(0, self.size - length)
        data = self._fetch(start, self.size)
        self.keep_tail(data)
        return data

    def keep_tail(self, data: bytes) -> None:
        """Keep ``data``, the last ``len(data)`` bytes of the object, fetched by the caller."""
        with self._lock:
            self._tail_start, self._tail = self.size - len(data), data

    def cached(self, start: int, end: int) -> memoryview | None:
        """The bytes ``[start, end)`` if held, without fetching."""
        with self._lock:
            if start >= self._tail_start:
                return memoryview(self._tail)[start - self._tail_start : end - self._tail_start]
            for seg_start, data in self._segments.items():
                if seg_start <= start and end <= seg_start + len(data):
                    self._segments.move_to_end(seg_start)
                    return memoryview(data)[start - seg_start : end - seg_start]
        return None

    def get(self, start: int, end: int) -> memoryview:
        """The bytes ``[start, end)``, fetched (one request) and kept if not held."""
        hit = self.cached(start, end)
        if hit is not None:
            return hit
        tail_start = self._tail_start
        if end >= tail_start:
            # Grow the kept suffix down to ``start``: fetch only the missing bytes.
            data = self._fetch(start, tail_start)
            with self._lock:
                if self._tail_start == tail_start:
                    self._tail = data + self._tail
                    self._tail_start = start
            hit = self.cached(start, end)
            if hit is not None:
                return hit
        data = self._fetch(start, end)  # a first fetch, or another thread moved the suffix
        with self._lock:
            self._segments[start] = data
            self._held += len(data)
            while self._held > self._limit and len(self._segments) > 1:
                _, old = self._segments.popitem(last=False)
                self._held -= len(old)
        return memoryview(data)
