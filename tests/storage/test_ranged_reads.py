"""The one ranged-read engine (``datashard.storage.ranged_reads``) on a backend with no SDK: the
in-memory backend plus one ``_get_into`` hook, which records every GET and can replace the object
between two of them. What holds here holds for S3, Azure and GCS, which supply only that hook."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

import pytest

from datashard.errors import ObjectNotFoundError, PreconditionFailedError
from datashard.storage.memory import MemoryBackend, MemoryConfig
from datashard.storage.parallel import PartPool, split_range
from datashard.storage.ranged_reads import READ_RESTARTS, Got, RangedReads, Sink


class Ranged(RangedReads, MemoryBackend):
    """The memory backend read through the engine: each GET honours ``Range`` and ``If-Match``."""

    def __init__(self, threshold: int, part_size: int, workers: int = 4) -> None:
        MemoryBackend.__init__(self, MemoryConfig(name=f"ranged-{uuid.uuid4().hex}"))
        self.plan = (threshold, part_size)
        self.pool = PartPool(workers, "test-ranged")
        self.gets: list[tuple[int, int, str | None]] = []
        self.before_get: Callable[[int], None] = lambda n: None
        self._lock = threading.Lock()

    def _read_pool(self) -> PartPool:
        return self.pool

    def _read_plan(self) -> tuple[int, int]:
        return self.plan

    def _get_into(self, key: str, start: int, end: int, sink: Sink, pin: str | None) -> int:
        with self._lock:
            self.gets.append((start, end, pin))
            n = len(self.gets)
        self.before_get(n)
        meta = self.head(key)
        if pin is not None and meta.etag != pin:
            raise PreconditionFailedError(f"{key!r}: etag is not {pin!r}", key=key)
        data = MemoryBackend.read(self, key)
        if start >= len(data):
            return 0
        chunk = data[start:end]
        sink(Got(len(chunk), len(data), meta.etag))[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self.pool.close()


@pytest.fixture
def ranged() -> Ranged:
    return Ranged(threshold=1000, part_size=300)


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
    ranges = [(0, 10), (100, 2000), (2490, 3000), (5, 5), (2500, 2600)]
    assert ranged.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
    etag = ranged.head("obj").etag
    assert {pin for _, _, pin in ranged.gets} == {etag}
    assert len(ranged.gets) == 1 + 7 + 1  # (0, 10), seven parts of (100, 2000), (2490, 2500)
    ranged.gets.clear()
    assert ranged.read_ranges("obj", [(1, 3), (10, 20)]) == [data[1:3], data[10:20]]
    assert sorted(ranged.gets) == [(1, 3, None), (10, 20, None)]  # small: one GET each, no head


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
        ranged._read_span("obj", 0, 2000, None, etag)
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
