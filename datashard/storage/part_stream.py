"""Streamed uploads in parts, with the memory they hold bounded: the ``open_output`` of the cloud
backends (S3 multipart uploads, Azure staged blocks, GCS resumable uploads).

A :class:`PartStream` copies what it is given into a part buffer (a ``bytearray`` of the
backend's part size). When the buffer is full and more bytes arrive, the buffer becomes a part:
the upload starts (only then, so a stream that ends within its first part is one plain request)
and the part is sent on the backend's pool while the next one fills, in a buffer reused from a
part already sent. Nothing is copied on the way: parts go out as views of their buffers.

Every buffer a stream holds (the one filling, the ones in flight, the spare ones) is counted
against the backend's :class:`WriteBudget`, shared by all its streams: a stream that would go
over it waits for one of its own parts to finish and reuses that buffer, and a stream holding
only the buffer it has filled sends that part and waits for it. A stream always gets its first
buffer, so the streams of one backend hold at most the budget plus one part size per stream, and
one stream at most ``max(budget, part size)``.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import deque
from concurrent.futures import Future, wait
from typing import Any

from datashard.storage.base import ObjectWriter
from datashard.storage.parallel import PartPool


class WriteBudget:
    """The bytes of part buffers that the streams of one backend may hold together."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a write budget must be >= 0 bytes, got {limit}")
        self.limit = limit
        self._held = 0
        self._peak = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes of buffers all streams hold now."""
        return self._held

    @property
    def peak(self) -> int:
        """The most bytes held at once since this budget was made (or :meth:`reset_peak`)."""
        return self._peak

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._held

    def take(self, size: int, force: bool) -> bool:
        """Count ``size`` more bytes if they fit (or ``force``); whether they were counted."""
        with self._lock:
            if not force and self._held + size > self.limit:
                return False
            self._held += size
            self._peak = max(self._peak, self._held)
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._held -= size


#: The size a stream's first part buffer starts at (it grows to the part size if need be).
FIRST_BUFFER = 256 * 1024


class PartStream(ObjectWriter):
    """An :class:`ObjectWriter` that uploads in parts of ``part_size`` bytes (see the module
    docstring). Subclasses supply the requests: :meth:`_put_whole`, :meth:`_start`,
    :meth:`_send`, :meth:`_finish` and :meth:`_cancel`."""

    def __init__(
        self,
        key: str,
        *,
        part_size: int,
        in_flight: int,
        pool: PartPool,
        budget: WriteBudget,
    ) -> None:
        super().__init__(key)
        self.part_size = part_size
        self._in_flight_limit = max(1, in_flight)
        self._pool = pool
        self._budget = budget
        self._buffer: bytearray | None = None
        self._fill = 0
        self._spare: list[bytearray] = []
        self._sending: deque[tuple[Future[Any], bytearray]] = deque()
        self._tokens: list[Any] = []
        self._parts = 0  # parts handed to _send so far
        self._offset = 0  # bytes handed to _send so far
        self._started = False
        self._owned = 0  # bytes of buffers counted against the budget

    @property
    def buffered_bytes(self) -> int:
        """Bytes of part buffers this stream holds now (filling, in flight and spare)."""
        return self._owned

    # -- what the backend supplies ---------------------------------------------------------

    @abstractmethod
    def _put_whole(self, data: memoryview) -> None:
        """Write ``data`` (at most one part, maybe empty) as the object, in one request."""

    @abstractmethod
    def _start(self) -> None:
        """Begin the upload (called once, before the first part is sent)."""

    @abstractmethod
    def _send(self, number: int, offset: int, data: memoryview, last: bool) -> Any:
        """Upload part ``number`` (from 1), the bytes at ``offset`` of the object; runs on the
        pool. ``last`` says it ends the object. What it returns is handed to :meth:`_finish`."""

    @abstractmethod
    def _finish(self, tokens: list[Any]) -> None:
        """Make the parts the object (``tokens``: what each ``_send`` returned, in order)."""

    @abstractmethod
    def _cancel(self) -> None:
        """Drop a started upload, best effort and quietly (no part is in flight any more)."""

    # -- the stream ------------------------------------------------------------------------

    def _write(self, view: memoryview) -> None:
        while view:
            if self._buffer is None:
                self._buffer = self._new_buffer(len(view))
            elif self._fill == len(self._buffer):
                if self._fill < self.part_size:  # the first buffer, still small: grow it
                    self._grow(self._fill + len(view))
                else:  # full, and more is coming: it is a part
                    self._ship(last=False)
                    continue
            n = min(len(view), len(self._buffer) - self._fill)
            self._buffer[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]

    def _commit(self) -> None:
        if not self._started:
            data = memoryview(self._buffer or b"")[: self._fill]
            try:
                self._put_whole(data)
            finally:
                data.release()
                self._release()
            return
        self._ship(last=True)
        while self._sending:
            self._collect()
        self._finish(self._tokens)
        self._release()

    def _discard(self) -> None:
        for future, _ in self._sending:
            future.cancel()
        wait([future for future, _ in self._sending])
        self._sending.clear()
        try:
            if self._started:
                self._cancel()
        finally:
            self._release()

    def _new_buffer(self, want: int = 0) -> bytearray:
        """A buffer to fill: a spare one, a new one if the budget allows (or if this stream holds
        none), else the buffer of this stream's oldest part once it is sent. A stream's first
        buffer starts at ``want`` bytes, at least :data:`FIRST_BUFFER`, and grows (:meth:`_grow`)
        to the part size only if the object needs it: most objects a table writes are a few
        KB, and a new 16 MiB buffer costs milliseconds of page faults to fill."""
        if self._spare:
            return self._spare.pop()
        size = self.part_size
        if self._owned == 0:
            size = min(size, max(want, FIRST_BUFFER))
        if self._budget.take(size, force=self._owned == 0):
            self._owned += size
            return bytearray(size)
        self._collect()
        return self._spare.pop()

    def _grow(self, need: int) -> None:
        """Replace the first buffer, full at less than the part size, by one of at least
        ``need`` bytes (four times as big, at most the part size), its bytes copied over. A
        stream holding only its first buffer may grow it to the part size whatever the budget,
        as it could have taken that size at once."""
        old = self._buffer
        assert old is not None and self._owned == len(old)
        size = min(self.part_size, max(need, 4 * len(old)))
        self._budget.take(size - len(old), force=True)
        self._owned += size - len(old)
        grown = bytearray(size)
        grown[: self._fill] = old[: self._fill]
        self._buffer = grown

    def _ship(self, last: bool) -> None:
        """Send the filled buffer as the next part; the stream continues in a new buffer."""
        buffer, fill = self._buffer, self._fill
        assert buffer is not None or last
        if not self._started:
            self._start()
            self._started = True
        while len(self._sending) >= self._in_flight_limit:
            self._collect()
        self._parts += 1
        data = memoryview(buffer if buffer is not None else b"")[:fill]
        send = self._send
        number, offset = self._parts, self._offset
        future = self._pool.submit(lambda: send(number, offset, data, last))
        self._offset += fill
        self._sending.append((future, buffer if buffer is not None else bytearray()))
        self._buffer, self._fill = None, 0
        if not last:
            self._buffer = self._new_buffer()

    def _collect(self) -> None:
        """Wait for the oldest part in flight; keep its buffer as a spare (raises its error)."""
        future, buffer = self._sending.popleft()
        try:
            self._tokens.append(future.result())
        finally:
            if buffer:
                self._spare.append(buffer)

    def _release(self) -> None:
        """Give every buffer back to the budget (the stream has ended)."""
        self._buffer, self._fill, self._spare = None, 0, []
        self._budget.give(self._owned)
        self._owned = 0
