"""The one ranged-read engine of the object-store backends (S3, Azure, GCS).

A backend supplies one SDK hook, :meth:`RangedReads._get_into`: a gated GET of bytes
``[start, end)`` of a key, optionally pinned to a version (an ETag or a generation), that tells
what the response headers say to a *sink* and streams the body into the view the sink gives
(and, when :attr:`RangedReads.read_gather` is ``"join"``, :meth:`RangedReads._get_bytes`, the
same GET returning the body as ``bytes``). On that hook this class builds ``read``,
``read_range``, ``read_into`` and ``read_ranges``:

- **plan**: a span of at most ``split_threshold`` bytes is one GET; a longer one is cut into parts
  of ``part_size`` bytes (:func:`~datashard.storage.parallel.split_range`);
- **fetch**: the first part's GET runs in the calling thread (for ``read_ranges``, the first
  part of every range at once, the others on the pool); as soon as its headers tell the
  object's size and version, its span's other parts start on the backend's
  :class:`~datashard.storage.parallel.PartPool`, pinned to that version, each writing straight
  into its slice of one buffer (the caller's, for ``read_into``) while the first body streams in.
  First GETs whose headers tell two sizes or versions mean the object changed (a restart).
  In a pool worker (a read nested in another parallel task) every GET runs in that thread, one
  after another, so a nested read never waits for a worker or a second request slot;
- **gather** (``read``, ``read_range``, ``read_ranges``: no caller buffer): S3 fills one new
  buffer and copies it into ``bytes``; Azure and GCS fetch each part as ``bytes`` and join them
  (several spans: on the pool, side by side), and a span of one part is the SDK's bytes as they
  are (no zero-filled buffer, no copy);
- **restart**: see :data:`READ_RESTARTS`.

Nothing here imports an SDK.
"""

from __future__ import annotations

import builtins
import functools
import logging
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, cast

from datashard.errors import PreconditionFailedError
from datashard.storage.base import StorageBackend, validate_key, validate_range
from datashard.storage.parallel import PartPool, gather, in_worker, split_range

log = logging.getLogger("datashard.storage")
T = TypeVar("T")

#: The restart rule, the same on every backend. One attempt of a read raises
#: ``PreconditionFailedError`` when the object changed while it was read: a part pinned to the
#: first response's version is refused, a part comes back shorter than asked, a retried first
#: GET reports another size or version (or is shorter), or the first GETs of ``read_ranges``
#: report two sizes or versions. A read the caller did not pin then starts again from the
#: beginning, at most this many times (so 6 attempts), and so returns one whole version or
#: raises. A read pinned by the caller (``read_range_if_match``) is never restarted. Transient
#: errors of one request (throttling, 5xx, resets, a body cut short) are no restart: the
#: backend's ``RequestGate`` repeats that one request, into the same slice.
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
#: Told what the headers say, before the body of a GET read as ``bytes`` is read.
Seen = Callable[[Got], None]


class RangedReads(StorageBackend):
    """A backend whose reads are concurrent ranged GETs (see the module docstring)."""

    #: How a read with no caller buffer gathers its parts: ``"buffer"`` fills one new buffer
    #: through :meth:`_get_into` and copies it into ``bytes``; ``"join"`` fetches each part as
    #: ``bytes`` through :meth:`_get_bytes` and joins them (one part: returned as it is). Join
    #: suits an SDK that reads a body into ``bytes`` anyway (Azure, GCS); S3 reads its socket
    #: straight into a buffer.
    read_gather: ClassVar[Literal["buffer", "join"]] = "buffer"

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

    def _get_bytes(self, key: str, start: int, end: int, seen: Seen, pin: str | None) -> bytes:
        """The GET of :meth:`_get_into`, its body returned as ``bytes`` (``b""``, without calling
        ``seen``, when ``start`` is at or past the end); ``seen`` is told the headers first.
        Needed only when :attr:`read_gather` is ``"join"``."""
        raise NotImplementedError(f"{type(self).__name__} reads through _get_into only")

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

    def _read_bytes(self, key: str, start: int, end: int, pin: str | None = None) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (clamped to its size; ``start < end``), restarted by
        the rule of :data:`READ_RESTARTS` unless ``pin`` is given."""
        threshold, _ = self._read_plan()
        spans = [(start, end)]
        (got,) = self._restarting(key, pin, lambda: self._fetch(key, spans, threshold, None, pin))
        return got if isinstance(got, bytes) else bytes(got)

    def _fetch(
        self,
        key: str,
        spans: Sequence[tuple[int, int]],
        split_over: int,
        view: memoryview | None,
        pin: str | None,
    ) -> builtins.list[bytes | memoryview]:
        """One attempt at bytes ``[s, e)`` of ``key`` for every span (at least one not empty),
        each clamped to the object's size, all from one version; raises
        ``PreconditionFailedError`` when the object changed under it.

        ``view`` (one span only) is the caller's buffer: the result is the filled slice of it.
        Without one, a span is a new buffer filled in place, or, when :attr:`read_gather` is
        ``"join"``, its parts' bytes joined (a span of one part is that part, not copied).
        A span longer than ``split_over`` is cut into parts of ``part_size``.

        The first GET of every span starts at once: the lowest span's in this thread, the others
        on the pool. When a first GET's headers give the size and version, its span's other
        parts start on the pool, pinned to that version (``pin``, if given). The first GETs must
        all see one size and version, and a span whose first GET found it past the end must
        start at or past that size. In a pool worker every GET runs in this thread, one after
        another.
        """
        _, part_size = self._read_plan()
        join = view is None and self.read_gather == "join"
        pool = self._read_pool()
        nested = in_worker()
        live = [i for _, i in sorted((s, i) for i, (s, e) in enumerate(spans) if e > s)]
        lock = threading.Lock()
        seen: dict[int, Got] = {}  # what the first GET of each span was told
        targets: dict[int, memoryview] = {}
        later: builtins.list[tuple[int, Callable[[], bytes | int]]] = []  # nested: run after
        running: builtins.list[tuple[int, Future[bytes | int]]] = []  # not nested: on the pool

        def first_end(i: int) -> int:
            s, e = spans[i]
            return min(e, s + part_size) if e - s > split_over else e

        def start_parts(i: int, got: Got) -> None:
            with lock:
                other = seen.get(i) or next(iter(seen.values()), None)
                if other is not None and (got.size, got.version) != (other.size, other.version):
                    raise self._changed(key, other, got)
                if i in seen:  # a retry of this span's first GET, and the same object
                    return
                seen[i] = got
            s, e = spans[i]
            stop = max(s, min(e, got.size))
            if not join:
                targets[i] = view[: stop - s] if view is not None else _new_buffer(stop - s)
            version = pin or got.version
            for ps, pe in split_range(first_end(i), stop, part_size):
                target = None if join else targets[i][ps - s : pe - s]
                task = self._part_task(key, ps, pe, target, version)
                with lock:
                    if nested:
                        later.append((i, task))
                    else:
                        running.append((i, pool.spawn(task)))

        def first(i: int) -> bytes | int:
            s = spans[i][0]
            got: bytes | int
            if join:
                got = self._get_bytes(key, s, first_end(i), functools.partial(start_parts, i), pin)
                count = len(got)
            else:

                def sink(headers: Got) -> memoryview:
                    start_parts(i, headers)
                    return targets[i]

                got = count = self._get_into(key, s, first_end(i), sink, pin)
            told = seen.get(i)
            if told is not None and count != min(first_end(i), told.size) - s:
                raise PreconditionFailedError(  # a retry found the object shorter
                    f"GET {key!r} in {self.root_uri}: bytes {s}-{first_end(i)} gave {count} "
                    "bytes; the object changed while it was read",
                    key=key,
                )
            return got

        firsts: builtins.list[Future[bytes | int]] = []
        try:
            if nested:
                got_first = {i: first(i) for i in live}
                done = [(i, task()) for i, task in later]
            else:
                firsts = [pool.submit(functools.partial(first, i)) for i in live[1:]]
                lead = first(live[0])
                got_first = dict(zip(live, [lead, *gather(firsts)], strict=True))
                # every first GET is done: no part starts after this
                done = list(
                    zip([i for i, _ in running], gather([f for _, f in running]), strict=True)
                )
        except BaseException:
            for f in firsts:
                f.cancel()
            wait(firsts)  # then no first GET can start another part
            for _, f in running:
                f.cancel()
            wait([f for _, f in running])
            raise
        if seen:
            told = next(iter(seen.values()))
            for i in live:
                if i not in seen and spans[i][0] < told.size:  # past the end of an older one
                    raise PreconditionFailedError(
                        f"GET {key!r} in {self.root_uri}: bytes from {spans[i][0]} were past "
                        f"the end, yet the object has {told.size} bytes; it changed while it "
                        "was read",
                        key=key,
                    )
        parts_of = {i: [got_first[i], *(got for j, got in done if j == i)] for i in seen}
        if not join:
            return [
                targets[i][: sum(cast("builtins.list[int]", parts_of[i]))] if i in seen else b""
                for i in range(len(spans))
            ]
        chunks = [cast("builtins.list[bytes]", parts_of.get(i, [b""])) for i in range(len(spans))]
        # Spans of several parts are joined on the pool, side by side (bytes.join copies without
        # the GIL). Joined one after another in the calling thread, two 12 MiB ranges took ~1.5x
        # as long on the GCS emulator, most of it page faults: glibc hands the memory the
        # calling thread frees back to the kernel, and every read faulted it in again.
        multi = [i for i, c in enumerate(chunks) if len(c) > 1]
        joined = pool.run([functools.partial(b"".join, chunks[i]) for i in multi])
        out: builtins.list[bytes | memoryview] = [c[0] for c in chunks]
        for i, whole in zip(multi, joined, strict=True):
            out[i] = whole
        return out

    def _changed(self, key: str, before: Got, after: Got) -> PreconditionFailedError:
        return PreconditionFailedError(
            f"GET {key!r} in {self.root_uri}: the object changed while it was read "
            f"({before.size} -> {after.size} bytes, version {before.version!r} -> "
            f"{after.version!r})",
            key=key,
        )

    def _part_task(
        self, key: str, start: int, end: int, target: memoryview | None, pin: str | None
    ) -> Callable[[], bytes | int]:
        """Fetch one part into ``target`` (the count), or as bytes when ``target`` is None; a
        short part means the object changed."""

        def task() -> bytes | int:
            got: bytes | int
            if target is None:
                got = self._get_bytes(key, start, end, _ignore, pin)
                count = len(got)
            else:
                got = count = self._get_into(key, start, end, lambda _: target, pin)
            if count != end - start:
                raise PreconditionFailedError(
                    f"GET {key!r} in {self.root_uri}: bytes {start}-{end} gave {count} bytes; "
                    "the object changed while it was read",
                    key=key,
                )
            return got

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
        return self._read_bytes(key, start, end)

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        validate_key(key)
        validate_range(key, offset, offset)
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError(f"read_into({key!r}) needs a writable buffer, got a read-only one")
        if len(view) == 0:
            self.head(key)
            return 0
        threshold, _ = self._read_plan()
        spans = [(offset, offset + len(view))]
        (got,) = self._restarting(key, None, lambda: self._fetch(key, spans, threshold, view, None))
        return len(got)

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        """Small ranges: one GET each, concurrently. When one is larger than the split
        threshold: every range cut into parts of ``part_size``, the first part of every range
        fetched at once and each range's other parts started once its first part's headers
        tell the size and version, pinned to that version; first parts that tell two sizes or
        versions restart the read (so no two ranges come from two versions; no ``head``), by
        the rule of :data:`READ_RESTARTS`."""
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
        got = self._restarting(key, None, lambda: self._fetch(key, ranges, 0, None, None))
        return [g if isinstance(g, bytes) else bytes(g) for g in got]


def _new_buffer(size: int) -> memoryview:
    return memoryview(bytearray(size))


def _ignore(got: Got) -> None:
    """A headers callback for the parts after the first: their headers tell nothing new."""
