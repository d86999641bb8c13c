"""The one ranged-read engine (``datashard.storage.ranged_reads``) on a backend with no SDK: the
in-memory backend plus the ``_get_into`` and ``_get_bytes`` hooks, which record every GET and can
replace the object between two of them. Every test runs with both ways of gathering a read with
no caller buffer (S3 fills one buffer; Azure and GCS join the parts' bytes). What holds here holds
for S3, Azure and GCS, which supply only those hooks."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

import pytest

from datashard.errors import ObjectNotFoundError, PreconditionFailedError
from datashard.storage.base import ObjectMeta
from datashard.storage.memory import MemoryBackend, MemoryConfig
from datashard.storage.parallel import PartPool, split_range
from datashard.storage.ranged_reads import READ_RESTARTS, Got, RangedReads, Seen, Sink


class Ranged(RangedReads, MemoryBackend):
    """The memory backend read through the engine: each GET honours ``Range`` and ``If-Match``."""

    def __init__(self, threshold: int, part_size: int, workers: int = 4) -> None:
        MemoryBackend.__init__(self, MemoryConfig(name=f"ranged-{uuid.uuid4().hex}"))
        self.plan = (threshold, part_size)
        self.pool = PartPool(workers, "test-ranged")
        self.gets: list[tuple[int, int, str | None]] = []
        self.heads = 0
        self.before_get: Callable[[int], None] = lambda n: None
        self._lock = threading.Lock()

    def _read_pool(self) -> PartPool:
        return self.pool

    def _read_plan(self) -> tuple[int, int]:
        return self.plan

    def _get_into(self, key: str, start: int, end: int, sink: Sink, pin: str | None) -> int:
        got = self._ranged_get(key, start, end, pin)
        if got is None:
            return 0
        chunk, size, etag = got
        sink(Got(len(chunk), size, etag))[: len(chunk)] = chunk
        return len(chunk)

    def _get_bytes(self, key: str, start: int, end: int, seen: Seen, pin: str | None) -> bytes:
        got = self._ranged_get(key, start, end, pin)
        if got is None:
            return b""
        chunk, size, etag = got
        seen(Got(len(chunk), size, etag))
        return chunk

    def _ranged_get(
        self, key: str, start: int, end: int, pin: str | None
    ) -> tuple[bytes, int, str | None] | None:
        with self._lock:
            self.gets.append((start, end, pin))
            n = len(self.gets)
        self.before_get(n)
        meta = MemoryBackend.head(self, key)
        if pin is not None and meta.etag != pin:
            raise PreconditionFailedError(f"{key!r}: etag is not {pin!r}", key=key)
        data = MemoryBackend.read(self, key)
        if start >= len(data):
            return None
        return data[start:end], len(data), meta.etag

    def head(self, key: str) -> ObjectMeta:
        self.heads += 1
        return MemoryBackend.head(self, key)

    def close(self) -> None:
        self.pool.close()


@pytest.fixture(params=["buffer", "join"])
def ranged(request: pytest.FixtureRequest) -> Ranged:
    backend = Ranged(threshold=1000, part_size=300)
    backend.read_gather = request.param
    return backend


def test_a_large_span_is_one_buffer_filled_by_planned_parts(ranged: Ranged) -> None:
    data = os.urandom(2500)
    ranged.write("obj", data)
    buf = bytearray(b"\xee" * 3000)
    assert ranged.read_into("obj", buf, 1) == 2499
    assert buf[:2499] == data[1:] and buf[2499:] == b"\xee" * 501
    first, *rest = ranged.gets
    assert first == (1, 301, None)  # the first part tells the size and the version
    etag = ranged.head("obj").etag
    assert sorted(rest) == [(s, e, etag) for s, e in split_range(301, 2500, 300)]
    ranged.gets.clear()
    assert ranged.read("obj") == data and len(ranged.gets) == 9
    ranged.gets.clear()
    assert ranged.read_range("obj", 10, 1010) == data[10:1010] and len(ranged.gets) == 1


def test_read_ranges_pins_every_part_of_every_range_to_one_version(ranged: Ranged) -> None:
    data = os.urandom(2500)
    ranged.write("obj", data)
    ranges = [(100, 2000), (0, 10), (2490, 3000), (5, 5), (2500, 2600)]
    assert ranged.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
    etag = ranged.head("obj").etag
    ranged.heads = 0
    firsts = sorted(g for g in ranged.gets if g[2] is None)
    # the first GET of every range that is not empty, each telling the size and version
    assert firsts == [(0, 10, None), (100, 400, None), (2490, 2790, None), (2500, 2600, None)]
    pinned = sorted(g for g in ranged.gets if g[2] is not None)
    assert pinned == [(s, e, etag) for s, e in split_range(400, 2000, 300)]
    assert ranged.heads == 0  # no request beyond the GETs
    ranged.gets.clear()
    assert ranged.read_ranges("obj", [(1, 3), (10, 20)]) == [data[1:3], data[10:20]]
    assert sorted(ranged.gets) == [(1, 3, None), (10, 20, None)]  # small: one GET each, no head
    ranged.gets.clear()
    assert ranged.read_ranges("obj", [(3000, 5000), (2600, 2700), (4, 4)]) == [b"", b"", b""]
    assert sorted(ranged.gets) == [(2600, 2700, None), (3000, 3300, None)]
    assert ranged.heads == 0


def test_read_ranges_starts_every_range_at_once_and_sends_no_head(ranged: Ranged) -> None:
    """Each range's first GET must be in flight before any of them has answered."""
    data = os.urandom(2500)
    ranged.write("obj", data)
    both_asked = threading.Barrier(2, timeout=10)
    ranged.before_get = lambda n: both_asked.wait() if n <= 2 else None
    ranges = [(0, 1200), (1500, 2500)]
    assert ranged.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
    assert sorted(ranged.gets[:2]) == [(0, 300, None), (1500, 1800, None)]
    assert ranged.heads == 0


def test_read_ranges_whose_first_answers_tell_two_versions_start_again(ranged: Ranged) -> None:
    """Same size, another version: neither range may come from the old one."""
    old, new = b"a" * 2000, b"b" * 2000
    ranged.write("obj", old)
    first_read = threading.Event()
    get = ranged._ranged_get

    def replaced_between_the_first_gets(
        key: str, start: int, end: int, pin: str | None
    ) -> tuple[bytes, int, str | None] | None:
        if start == 1000 and not first_read.is_set():
            assert first_read.wait(10)  # the range from 0 has seen the old version
            ranged.write("obj", new)
        got = get(key, start, end, pin)
        if start == 0:
            first_read.set()
        return got

    ranged._ranged_get = replaced_between_the_first_gets  # type: ignore[method-assign]
    assert ranged.read_ranges("obj", [(0, 200), (1000, 2100)]) == [new[:200], new[1000:]]
    assert [g for g in ranged.gets if g[0] == 0] == [(0, 200, None)] * 2  # read again


def test_a_range_past_the_end_of_one_version_but_not_another_starts_again(
    ranged: Ranged,
) -> None:
    old, new = b"a" * 1000, b"b" * 2000
    ranged.write("obj", old)
    past_end_seen = threading.Event()
    get = ranged._ranged_get

    def grown_between_the_first_gets(
        key: str, start: int, end: int, pin: str | None
    ) -> tuple[bytes, int, str | None] | None:
        if start == 0 and pin is None and MemoryBackend.read(ranged, "obj") == old:
            assert past_end_seen.wait(10)
            ranged.write("obj", new)
        got = get(key, start, end, pin)
        if start == 1500:
            past_end_seen.set()
        return got

    ranged._ranged_get = grown_between_the_first_gets  # type: ignore[method-assign]
    assert ranged.read_ranges("obj", [(0, 1200), (1500, 1600)]) == [new[:1200], new[1500:1600]]
    assert len([g for g in ranged.gets if g == (0, 300, None)]) == 2  # read again


def test_a_retried_first_get_that_finds_another_version_starts_the_read_again(
    ranged: Ranged,
) -> None:
    """The other parts, pinned to the first answer, are done when the first GET is retried
    (as the request gate does after a cut body) and finds a new object of the same size."""
    old, new = b"a" * 2000, b"b" * 2000
    ranged.write("obj", old)
    pinned_done: list[int] = []
    get = ranged._ranged_get

    def counted(
        key: str, start: int, end: int, pin: str | None
    ) -> tuple[bytes, int, str | None] | None:
        got = get(key, start, end, pin)
        if pin is not None:
            pinned_done.append(start)
        return got

    ranged._ranged_get = counted  # type: ignore[method-assign]
    retried = {"done": False}

    def with_one_retry(hook: Callable[..., object]) -> Callable[..., object]:
        def first_get(
            key: str, start: int, end: int, told: Callable[[Got], object], pin: str | None
        ) -> object:
            if start == 0 and pin is None and not retried["done"]:
                retried["done"] = True
                told(Got(end - start, len(old), ranged.head("obj").etag))  # headers, body cut
                for _ in range(1000):  # the pinned parts all finish
                    if len(pinned_done) == 6:
                        break
                    threading.Event().wait(0.01)
                ranged.write("obj", new)  # then the object is replaced, before the retry
            return hook(key, start, end, told, pin)

        return first_get

    ranged._get_into = with_one_retry(ranged._get_into)  # type: ignore[method-assign,assignment]
    ranged._get_bytes = with_one_retry(ranged._get_bytes)  # type: ignore[method-assign,assignment]
    assert ranged.read("obj") == new  # not new[:300] + old[300:]
    assert len(pinned_done) > 6  # the second pass read its parts again


def test_read_ranges_of_an_object_replaced_mid_read_come_from_one_version(ranged: Ranged) -> None:
    old, new = b"a" * 2000, b"b" * 2000
    ranged.write("obj", old)
    ranged.before_get = lambda n: ranged.write("obj", new) if n == 2 else None
    assert ranged.read_ranges("obj", [(0, 1500), (1500, 2000)]) == [new[:1500], new[1500:]]
    assert ranged.gets[-1][2] == ranged.head("obj").etag


def test_a_read_with_no_buffer_gets_each_part_once(ranged: Ranged) -> None:
    data = os.urandom(700)
    ranged.write("obj", data)
    assert ranged.read_range("obj", 0, 2**62) == data and len(ranged.gets) == 3
    ranged.gets.clear()
    assert ranged.read_range("obj", 650, 900) == data[650:] and ranged.gets == [(650, 900, None)]


def test_an_object_replaced_mid_read_is_read_again_whole(ranged: Ranged) -> None:
    old, new = b"a" * 2000, b"b" * 1800
    ranged.write("obj", old)
    ranged.before_get = lambda n: ranged.write("obj", new) if n == 2 else None
    assert ranged.read("obj") == new
    assert len(ranged.gets) > 7  # the first pass was abandoned


def test_restarts_stop_after_the_budget_and_a_pinned_read_never_restarts(ranged: Ranged) -> None:
    ranged.write("obj", b"a" * 2000)
    flip = {"n": 0}

    def replace_before_every_part(n: int) -> None:
        if ranged.gets[-1][2] is not None:  # a pinned part: the object changes just before it
            flip["n"] += 1
            ranged.write("obj", bytes([flip["n"] % 256]) * 2000)

    ranged.before_get = replace_before_every_part
    with pytest.raises(PreconditionFailedError, match="'obj'"):
        ranged.read("obj")
    firsts = [g for g in ranged.gets if g[:2] == (0, 300) and g[2] is None]
    assert len(firsts) == READ_RESTARTS + 1
    ranged.before_get = lambda n: None
    etag = ranged.head("obj").etag
    assert etag is not None
    ranged.gets.clear()
    ranged.before_get = replace_before_every_part
    with pytest.raises(PreconditionFailedError):  # pinned by the caller (read_range_if_match)
        ranged._read_bytes("obj", 0, 2000, etag)
    assert ranged.gets[0] == (0, 300, etag)
    assert len([g for g in ranged.gets if g[:2] == (0, 300)]) == 1


def test_a_read_nested_in_a_pool_worker_runs_its_parts_in_that_thread() -> None:
    """One worker, busy with the outer task: the inner read must not wait for a free one."""
    ranged = Ranged(threshold=100, part_size=100, workers=1)
    data = os.urandom(1000)
    ranged.write("obj", data)
    try:
        outer = ranged.pool.run([lambda: ranged.read("obj"), lambda: ranged.read("obj")])
        assert outer == [data, data]
    finally:
        ranged.close()


def test_missing_objects_and_empty_spans(ranged: Ranged) -> None:
    with pytest.raises(ObjectNotFoundError):
        ranged.read("missing")
    with pytest.raises(ObjectNotFoundError):
        ranged.read_into("missing", bytearray(0))
    ranged.write("empty", b"")
    assert ranged.read("empty") == b"" and ranged.read_range("empty", 0, 10) == b""
    assert ranged.read_into("empty", bytearray(10)) == 0
