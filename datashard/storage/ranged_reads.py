"""The one ranged-read engine of the object-store backends (S3, Azure, GCS).

A backend supplies one SDK hook, :meth:`RangedReads._get_into`: a gated GET of bytes
``[start, end)`` of a key, optionally pinned to a version (an ETag or a generation), that tells
what the response headers say to a *sink* and streams the body into the view the sink gives. On
that hook this class builds ``read``, ``read_range``, ``read_into`` and ``read_ranges``:

- **plan**: a span of at most ``split_threshold`` bytes is one GET; a longer one is cut into parts
  of ``part_size`` bytes (:func:`~datashard.storage.parallel.split_range`);
- **fetch**: the first part's GET runs in the calling thread; as soon as its headers tell the
  object's size and version, the other parts start on the backend's
  :class:`~datashard.storage.parallel.PartPool`, pinned to that version, each writing straight
  into its slice of one buffer (the caller's, for ``read_into``) while the first body streams in.
  In a pool worker (a read nested in another parallel task) the parts run after the first one,
  in that thread, so a nested read never waits for a worker or a second request slot;
- **restart**: see :data:`READ_RESTARTS`.

Nothing here imports an SDK.
"""

from __future__ import annotations

import builtins
import functools
import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from datashard.errors import PreconditionFailedError
from datashard.storage.base import ObjectMeta, StorageBackend, validate_key, validate_range
from datashard.storage.parallel import PartPool, gather, in_worker, split_range

log = logging.getLogger("datashard.storage")
T = TypeVar("T")

#: The restart rule, the same on every backend. One attempt of a read raises
#: ``PreconditionFailedError`` when the object changed while it was read: a part pinned to the
#: first response's version is refused, a part comes back shorter than asked, or a retried first
#: GET reports another size. A read the caller did not pin then starts again from the beginning,
#: at most this many times (so 6 attempts), and so returns one whole version or raises. A read
#: pinned by the caller (``read_range_if_match``) is never restarted. Transient errors of one
#: request (throttling, 5xx, resets, a body cut short) are no restart: the backend's
#: ``RequestGate`` repeats that one request, into the same slice.
READ_RESTARTS = 5


@dataclass(frozen=True)
class Got:
    """What the headers of one ranged GET tell: how many bytes its body holds, the object's
    size, and the version (ETag or generation) later parts are pinned to, if the server says."""

    count: int
    size: int
    version: str | None


#: Given what the headers say, the view the body goes into (at least ``got.count`` bytes long).
Sink = Callable[[Got], memoryview]


class RangedReads(StorageBackend):
    """A backend whose reads are concurrent ranged GETs (see the module docstring)."""

    # -- hooks the backend supplies --------------------------------------------------------

    @abstractmethod
    def _get_into(self, key: str, start: int, end: int, sink: Sink, pin: str | None) -> int:
        """One GET of bytes ``[start, end)`` of ``key`` through the backend's request gate,
        conditional on version ``pin`` when given. Calls ``sink`` once the headers are in and
        writes the body into the start of the view it returns (a retry calls it again).

        Returns the count written; 0, without calling ``sink``, when ``start`` is at or past the
        end of the object. Raises the backend's typed errors (``PreconditionFailedError`` when
        ``pin`` no longer matches).
        """

    @abstractmethod
    def _read_pool(self) -> PartPool:
        """This process's pool for the parts of a read."""

    @abstractmethod
    def _read_plan(self) -> tuple[int, int]:
        """``(split_threshold, part_size)``: spans longer than the first are cut into parts."""

    def _read_pin(self, meta: ObjectMeta) -> str | None:
        """The version a ``head`` result pins parts to (the ETag; GCS: the generation)."""
        return meta.etag

    # -- the engine ------------------------------------------------------------------------

    def _restarting(self, key: str, pin: str | None, read: Callable[[], T]) -> T:
        """``read()`` of ``key``, started again by the rule of :data:`READ_RESTARTS`."""
        for restart in range(READ_RESTARTS + 1):
            try:
                return read()
            except PreconditionFailedError:
                if pin is not None or restart == READ_RESTARTS:
                    raise
                log.debug("%r in %s changed while read; reading it again", key, self.root_uri)
        raise AssertionError("unreachable")

    def _read_span(
        self, key: str, start: int, end: int, view: memoryview | None, pin: str | None = None
    ) -> tuple[int, memoryview]:
        """Bytes ``[start, end)`` (clamped to the size) into ``view``, or into a new buffer when
        ``view`` is None: ``(count, buffer)``, restarted by the rule of :data:`READ_RESTARTS`."""
        return self._restarting(key, pin, lambda: self._read_span_once(key, start, end, view, pin))

    def _read_span_once(
        self, key: str, start: int, end: int, view: memoryview | None, pin: str | None
    ) -> tuple[int, memoryview]:
        threshold, part_size = self._read_plan()
        first_end = start + part_size if end - start > threshold else end
        pool = self._read_pool()
        nested = in_worker()
        state: dict[str, Any] = {}
        futures: builtins.list[Future[int]] = []
        later: builtins.list[Callable[[], int]] = []

        def first_sink(got: Got) -> memoryview:
            if "whole" in state:  # a retry of the first GET: same buffer, if the same object
                if got.size != state["size"]:
                    raise PreconditionFailedError(
                        f"GET {key!r} in {self.root_uri}: the object changed size while it was "
                        f"read ({state['size']} -> {got.size} bytes)",
                        key=key,
                    )
                whole: memoryview = state["whole"]
                return whole
            total = max(0, min(end, got.size) - start)
            whole = view[:total] if view is not None else memoryview(bytearray(total))
            state["whole"], state["size"] = whole, got.size
            version = pin or got.version
            tasks = [
                self._part_task(key, s, e, whole[s - start : e - start], version)
                for s, e in split_range(first_end, start + total, part_size)
            ]
            if nested:
                later.extend(tasks)
            else:
                futures.extend(pool.submit(task) for task in tasks)
            return whole

        try:
            count = self._get_into(key, start, first_end, first_sink, pin)
            count += sum(task() for task in later)
        except BaseException:
            for f in futures:
                f.cancel()
            wait(futures)
            raise
        count += sum(gather(futures))
        return count, state.get("whole", memoryview(b""))

    def _part_task(
        self, key: str, start: int, end: int, target: memoryview, pin: str | None
    ) -> Callable[[], int]:
        """Fetch one part into ``target``; a short part means the object changed."""

        def task() -> int:
            count = self._get_into(key, start, end, lambda got: target, pin)
            if count != end - start:
                raise PreconditionFailedError(
                    f"GET {key!r} in {self.root_uri}: bytes {start}-{end} gave {count} bytes; "
                    "the object changed while it was read",
                    key=key,
                )
            return count

        return task

    # -- the contract's reads --------------------------------------------------------------

    def read(self, key: str) -> bytes:
        validate_key(key)
        return self.read_range(key, 0, 2**62)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        validate_range(key, start, end)
        if start == end:
            self.head(key)  # a missing object still raises
            return b""
        count, buffer = self._read_span(key, start, end, None)
        return bytes(buffer[:count])

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        validate_key(key)
        validate_range(key, offset, offset)
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError(f"read_into({key!r}) needs a writable buffer, got a read-only one")
        if len(view) == 0:
            self.head(key)
            return 0
        count, _ = self._read_span(key, offset, offset + len(view), view)
        return count

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        """Small ranges: one GET each, concurrently. When one is larger than the split
        threshold: one ``head``, then every part of every range at once, all pinned to the
        version it reports (so no two ranges come from two versions), restarted by the rule of
        :data:`READ_RESTARTS`."""
        validate_key(key)
        for start, end in ranges:
            validate_range(key, start, end)
        if not ranges:
            return []
        threshold, _ = self._read_plan()
        if all(end - start <= threshold for start, end in ranges):
            return self._read_pool().run(
                [functools.partial(self.read_range, key, s, e) for s, e in ranges]
            )
        return self._restarting(key, None, lambda: self._read_ranges_once(key, ranges))

    def _read_ranges_once(
        self, key: str, ranges: Sequence[tuple[int, int]]
    ) -> builtins.list[bytes]:
        _, part_size = self._read_plan()
        meta = self.head(key)
        pin = self._read_pin(meta)
        buffers = [bytearray(max(0, min(e, meta.size) - s)) for s, e in ranges]
        tasks: builtins.list[Callable[[], int]] = []
        for (start, _), buf in zip(ranges, buffers, strict=True):
            whole = memoryview(buf)
            for s, e in split_range(start, start + len(buf), part_size):
                tasks.append(self._part_task(key, s, e, whole[s - start : e - start], pin))
        self._read_pool().run(tasks)
        return [bytes(b) for b in buffers]
