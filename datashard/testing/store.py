"""The storage conformance suite: one set of tests that every ``StorageBackend`` must pass.

Bind it to a backend by subclassing :class:`StorageConformance` in a test module::

    class TestLocal(StorageConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            with open_backend(f"file://{tmp_path}") as b:
                yield b

        def raw_put(self, backend, key, data):       # optional back door: bypass the backend
            (Path(backend.config.path) / key).write_bytes(data)

        def raw_get(self, backend, key):
            return (Path(backend.config.path) / key).read_bytes()

Hooks a subclass may set or override:

- ``backend`` (fixture, required): a backend over a fresh, empty root for each test.
- ``offline_backend`` (fixture): a backend of the same kind whose storage cannot be reached;
  invalid keys must still raise ``InvalidPathError`` there, which proves the key is checked before
  any I/O. The default is the live backend itself.
- ``raw_put`` / ``raw_get``: write and read an object without going through the backend under
  test (plain file I/O, boto3 ...). The default goes through a second backend built from the same
  config, which proves less; say so when you keep it.
- ``race_mode``: ``"process"`` (16 processes race ``put_if_absent``) or ``"thread"`` for backends
  whose objects live inside one process (``memory://``).
- ``shared_across_processes``: ``False`` when an unpickled backend in another process sees a
  different store (``memory://``).
- ``expected_failures``: ``{"test_name": "reason"}``; those tests are marked ``xfail(strict=True)``
  (so an unexpected pass is reported too). Names are checked when the subclass is defined.

Requires pytest (a ``dev`` dependency); nothing else in datashard imports this module.
"""

from __future__ import annotations

import pathlib
import pickle
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, ClassVar

import pytest

from datashard.errors import (
    InvalidPathError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from datashard.storage.base import ObjectMeta, StorageBackend
from datashard.testing.race import RaceMode, qualified_name, race_put_if_absent, read_object
from datashard.testing.race import run_in_process as _run_in_process

MiB = 1024 * 1024

#: Keys that every method must refuse with ``InvalidPathError``.
INVALID_KEYS: tuple[object, ...] = (
    "",
    ".",
    "..",
    "../x",
    "a/../b",
    "a/./b",
    "a/..",
    "/a",
    "//a",
    "a//b",
    "a/",
    "a\x00b",
    "\x00",
    None,
    b"a",
    1,
    pathlib.PurePosixPath("a"),
)

#: Prefixes ``list`` must refuse (a trailing ``/`` is fine for a prefix, so it is not here).
INVALID_PREFIXES: tuple[object, ...] = ("..", "../", "a/../b", "/a", "a//", "a\x00", None, b"a")

#: Keys whose lexicographic order a directory walk or a URL-encoding slip gets wrong.
TRICKY_KEYS: tuple[str, ...] = (
    "a-b",
    "a.b",
    "a/b-c",
    "a/b/c",
    "a/b0",
    "a b",
    "a+b",
    "a%20b",
    "a=b",
    "a~b",
    "ab",
    "ac/x",
    "A",
    "Z/z",
    "_",
    "é",
    "日本/語",
    "\uff01",
    "\U0001f600",
    "e\u0301",
    "AB",
    "q?x",
    "h#x",
    "amp&x",
    "lt<x>",
    'quote"x',
    "apos'x",
    "star*x",
    "bs\\x",
    "colon:x",
    "sp ",
    " lead",
)

Call = Callable[[StorageBackend, Any], object]

#: One call per public method, each taking the key under test.
KEY_CALLS: dict[str, Call] = {
    "read": lambda b, k: b.read(k),
    "read_range": lambda b, k: b.read_range(k, 0, 1),
    "read_ranges": lambda b, k: b.read_ranges(k, [(0, 1)]),
    "read_into": lambda b, k: b.read_into(k, bytearray(4)),
    "read_tail": lambda b, k: b.read_tail(k, 4),
    "read_range_if_match": lambda b, k: b.read_range_if_match(k, 0, 1, "etag"),
    "head": lambda b, k: b.head(k),
    "exists": lambda b, k: b.exists(k),
    "write": lambda b, k: b.write(k, b"x"),
    "write_chunks": lambda b, k: b.write(k, iter([b"x", b"y"])),
    "put_if_absent": lambda b, k: b.put_if_absent(k, b"x"),
    "delete": lambda b, k: b.delete(k),
    "delete_many": lambda b, k: b.delete_many(["ok-key", k]),
    "uri_for": lambda b, k: b.uri_for(k),
}

#: Every read method, for the missing-key tests.
READ_CALLS: dict[str, Call] = {
    name: KEY_CALLS[name]
    for name in ("read", "read_range", "read_ranges", "read_into", "read_tail", "head")
}


def data_of(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def keys_of(metas: Iterator[ObjectMeta]) -> list[str]:
    return [m.key for m in metas]


def _numpy() -> Any:
    return pytest.importorskip("numpy")


class StorageConformance:
    """The contract of :class:`~datashard.storage.base.StorageBackend`, as tests."""

    #: ``"process"``: the race runs in 16 processes; ``"thread"``: in 16 threads of this process.
    race_mode: ClassVar[RaceMode] = "process"
    #: How many writers race ``put_if_absent``.
    race_writers: ClassVar[int] = 16
    #: Whether a backend unpickled in another process sees the same objects.
    shared_across_processes: ClassVar[bool] = True
    #: ``{"test_name": "why this backend fails it"}``: marked ``xfail(strict=True)``.
    expected_failures: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, reason in cls.expected_failures.items():
            if not name.startswith("test_") or not callable(getattr(cls, name, None)):
                raise TypeError(f"{cls.__name__}.expected_failures names no test: {name!r}")
            if not reason:
                raise TypeError(f"{cls.__name__}.expected_failures[{name!r}] needs a reason")

    # -- hooks ------------------------------------------------------------------------------

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        raise NotImplementedError("bind the suite: define a `backend` fixture in the subclass")

    @pytest.fixture
    def offline_backend(self, backend: StorageBackend) -> StorageBackend:
        return backend

    def raw_put(self, backend: StorageBackend, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` without ``backend``: the default uses a twin backend."""
        type(backend)(backend.config).write(key, data)

    def raw_get(self, backend: StorageBackend, key: str) -> bytes:
        """The stored bytes of ``key`` read without ``backend``: the default uses a twin."""
        return type(backend)(backend.config).read(key)

    def _raw_put_all(self, backend: StorageBackend, keys: list[str]) -> None:
        """Empty objects under ``keys`` through the back door, a few at a time."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(self.raw_put, backend, key, b"") for key in keys]:
                future.result()

    @pytest.fixture(autouse=True)
    def _apply_expected_failures(self, request: pytest.FixtureRequest) -> None:
        name = getattr(request.node, "originalname", None) or request.node.name
        reason = self.expected_failures.get(name)
        if reason:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))

    # -- round trips ------------------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 1000, 10 * MiB], ids=["empty", "1B", "1kB", "10MiB"])
    def test_write_then_read_returns_the_same_bytes(
        self, backend: StorageBackend, size: int
    ) -> None:
        data = data_of(size, seed=size)
        backend.write("obj", data)
        got = backend.read("obj")
        assert isinstance(got, bytes)
        assert len(got) == size
        assert got == data
        assert self.raw_get(backend, "obj") == data

    @pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "memoryview-slice"])
    def test_write_accepts_every_bytes_like(self, backend: StorageBackend, kind: str) -> None:
        data = data_of(3000, seed=1)
        arg: object = {
            "bytes": data,
            "bytearray": bytearray(data),
            "memoryview": memoryview(data),
            "memoryview-slice": memoryview(b"junk" + data + b"junk")[4:-4],
        }[kind]
        backend.write("obj", arg)  # type: ignore[arg-type]
        assert backend.read("obj") == data

    def test_write_of_numpy_array_stores_its_bytes(self, backend: StorageBackend) -> None:
        np = _numpy()
        array = np.arange(1000, dtype=np.float32)
        backend.write("obj", memoryview(array).cast("B"))
        assert backend.read("obj") == array.tobytes()

    @pytest.mark.parametrize(
        "chunks",
        [
            pytest.param([], id="no-chunks"),
            pytest.param([b""], id="one-empty-chunk"),
            pytest.param([b"ab", b"", b"cd", b"e"], id="small-chunks-with-empty"),
            pytest.param([bytearray(b"ab"), memoryview(b"cd")], id="bytes-like-chunks"),
        ],
    )
    def test_write_of_chunks_stores_their_concatenation(
        self, backend: StorageBackend, chunks: list[bytes]
    ) -> None:
        backend.write("obj", iter(chunks))
        assert backend.read("obj") == b"".join(bytes(c) for c in chunks)

    def test_write_of_a_generator_of_many_megabytes_round_trips(
        self, backend: StorageBackend
    ) -> None:
        """12 MiB in 1 MiB chunks: below S3's 5 MiB part minimum per chunk, so the backend
        must buffer them into valid parts."""
        data = data_of(12 * MiB, seed=12)

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(data), MiB):
                yield data[start : start + MiB]

        backend.write("big", chunks())
        assert backend.head("big").size == len(data)
        assert backend.read("big") == data

    def test_failed_chunk_stream_leaves_the_old_object(self, backend: StorageBackend) -> None:
        backend.write("obj", b"old contents")

        class Boom(Exception):
            pass

        def chunks() -> Iterator[bytes]:
            yield b"new " * 1000
            raise Boom("the producer failed")

        with pytest.raises(Boom):
            backend.write("obj", chunks())
        assert backend.read("obj") == b"old contents"
        assert keys_of(backend.list()) == ["obj"]

    def test_failed_chunk_stream_creates_nothing(self, backend: StorageBackend) -> None:
        class Boom(Exception):
            pass

        def chunks() -> Iterator[bytes]:
            yield b"partial " * 1000
            raise Boom("the producer failed")

        with pytest.raises(Boom):
            backend.write("new/obj", chunks())
        assert not backend.exists("new/obj")
        assert keys_of(backend.list()) == []

    def test_write_of_str_is_refused(self, backend: StorageBackend) -> None:
        with pytest.raises(TypeError):
            backend.write("obj", "text")  # type: ignore[arg-type]
        assert not backend.exists("obj")

    def test_nested_keys_round_trip(self, backend: StorageBackend) -> None:
        backend.write("a/b/c/d.bin", b"deep")
        backend.write("a/b/e.bin", b"shallow")
        assert backend.read("a/b/c/d.bin") == b"deep"
        assert backend.read("a/b/e.bin") == b"shallow"

    def test_back_door_object_is_readable(self, backend: StorageBackend) -> None:
        data = data_of(5000, seed=5)
        self.raw_put(backend, "dir/raw", data)
        assert backend.exists("dir/raw")
        assert backend.read("dir/raw") == data
        assert backend.head("dir/raw").size == len(data)
        assert keys_of(backend.list()) == ["dir/raw"]

    # -- overwrite --------------------------------------------------------------------------

    def test_overwrite_with_shorter_data_leaves_no_tail(self, backend: StorageBackend) -> None:
        backend.write("obj", b"x" * 10_000)
        backend.write("obj", b"short")
        assert backend.read("obj") == b"short"
        assert backend.head("obj").size == 5
        assert keys_of(backend.list()) == ["obj"]

    def _overwrite_under_readers(self, backend: StorageBackend, size: int, writes: int) -> None:
        """Two reader threads read ``obj`` while this thread overwrites it ``writes`` times;
        every read must return one whole version and raise nothing."""
        versions = [bytes([65 + i]) * (size + i) for i in range(2)]
        backend.write("obj", versions[0])
        done = threading.Event()
        bad: list[str] = []

        def reader() -> None:
            for _ in range(500):
                if done.is_set():
                    return
                try:
                    got = backend.read("obj")
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    bad.append(f"read raised {qualified_name(exc)}: {exc}")
                    return
                if got not in versions:
                    bad.append(f"read {len(got)} bytes that are neither version")
                    return

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for i in range(writes):
                backend.write("obj", versions[(i + 1) % 2])
        finally:
            done.set()
            for t in threads:
                t.join(timeout=120)
        assert bad == [], "\n".join(bad)
        assert backend.read("obj") == versions[writes % 2]
        assert keys_of(backend.list()) == ["obj"]

    def test_overwrite_is_atomic_for_concurrent_readers(self, backend: StorageBackend) -> None:
        """Readers racing an overwriter see the old bytes or the new, never a mix or nothing."""
        self._overwrite_under_readers(backend, 256 * 1024, writes=20)

    def test_overwrite_is_atomic_for_concurrent_large_reads(
        self, backend: StorageBackend
    ) -> None:
        """The same with 3 MiB objects, which backends may fetch as several concurrent range
        requests: a plain ``read`` still returns one whole version and does not fail because
        the object changed under it (there is no etag the caller pinned)."""
        self._overwrite_under_readers(backend, 3 * 1024 * 1024, writes=8)

    def test_overwrite_changes_head_size_and_etag(self, backend: StorageBackend) -> None:
        backend.write("obj", b"first version")
        before = backend.head("obj")
        backend.write("obj", b"second, longer version")
        after = backend.head("obj")
        assert after.size == len(b"second, longer version")
        if before.etag is not None or after.etag is not None:
            assert before.etag != after.etag

    # -- read_range / read_ranges -----------------------------------------------------------

    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            (0, 10, slice(0, 10)),
            (3, 7, slice(3, 7)),
            (0, 1000, slice(0, 1000)),
            (990, 1000, slice(990, 1000)),
            (5, 5, slice(5, 5)),
            (0, 0, slice(0, 0)),
            (1000, 1000, slice(1000, 1000)),
            (990, 5000, slice(990, 1000)),
            (0, 10**12, slice(0, 1000)),
            (999, 1001, slice(999, 1000)),
            (1000, 2000, slice(1000, 1000)),
            (5000, 6000, slice(5000, 5000)),
        ],
    )
    def test_read_range_returns_the_clamped_slice(
        self, backend: StorageBackend, start: int, end: int, expected: slice
    ) -> None:
        data = data_of(1000, seed=7)
        backend.write("obj", data)
        got = backend.read_range("obj", start, end)
        assert isinstance(got, bytes)
        assert got == data[expected]

    @pytest.mark.parametrize(("start", "end"), [(0, 0), (0, 10), (5, 10), (10, 5)])
    def test_read_range_of_empty_object_is_empty(
        self, backend: StorageBackend, start: int, end: int
    ) -> None:
        backend.write("empty", b"")
        if end < start:
            with pytest.raises(InvalidPathError):
                backend.read_range("empty", start, end)
        else:
            assert backend.read_range("empty", start, end) == b""

    @pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4), (-10, -5), (0, -1), (3, 2)])
    def test_read_range_with_negative_or_inverted_bounds_raises(
        self, backend: StorageBackend, start: int, end: int
    ) -> None:
        backend.write("obj", b"0123456789")
        with pytest.raises(InvalidPathError) as info:
            backend.read_range("obj", start, end)
        assert type(info.value) is InvalidPathError
        with pytest.raises(InvalidPathError):
            backend.read_ranges("obj", [(0, 2), (start, end)])

    def test_read_range_across_large_object(self, backend: StorageBackend) -> None:
        data = data_of(10 * MiB, seed=10)
        backend.write("big", data)
        ranges = [
            (0, 1),
            (MiB - 1, MiB + 1),
            (MiB, 2 * MiB),
            (MiB, 9 * MiB),
            (4 * MiB - 1, 4 * MiB),
            (8 * MiB - 3, 8 * MiB + 3),
            (8 * MiB, 10 * MiB),
            (0, 8 * MiB),
            (0, 8 * MiB + 1),
            (10 * MiB - 1, 10 * MiB + 5),
            (0, 10 * MiB + 1),
        ]
        for start, end in ranges:
            assert backend.read_range("big", start, end) == data[start:end], (start, end)

    def test_read_ranges_returns_results_in_the_order_asked(
        self, backend: StorageBackend
    ) -> None:
        data = data_of(2000, seed=8)
        backend.write("obj", data)
        ranges = [(1500, 1600), (0, 10), (5, 5), (1990, 3000), (0, 10), (100, 50_000), (40, 45)]
        assert backend.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
        assert backend.read_ranges("obj", []) == []

    def test_read_ranges_of_large_object(self, backend: StorageBackend) -> None:
        data = data_of(10 * MiB, seed=11)
        backend.write("big", data)
        ranges = [(9 * MiB, 10 * MiB), (0, 3 * MiB), (4 * MiB + 1, 4 * MiB + 2), (0, 10 * MiB)]
        assert backend.read_ranges("big", ranges) == [data[s:e] for s, e in ranges]

    # -- read_into --------------------------------------------------------------------------

    def test_read_into_exact_buffer(self, backend: StorageBackend) -> None:
        data = data_of(4096, seed=9)
        backend.write("obj", data)
        buf = bytearray(4096)
        assert backend.read_into("obj", buf) == 4096
        assert bytes(buf) == data

    def test_read_into_larger_buffer_returns_the_count(self, backend: StorageBackend) -> None:
        data = data_of(1000, seed=9)
        backend.write("obj", data)
        buf = bytearray(5000)
        assert backend.read_into("obj", buf) == 1000
        assert bytes(buf[:1000]) == data

    def test_read_into_smaller_buffer_fills_it(self, backend: StorageBackend) -> None:
        data = data_of(1000, seed=9)
        backend.write("obj", data)
        buf = bytearray(300)
        assert backend.read_into("obj", buf) == 300
        assert bytes(buf) == data[:300]

    @pytest.mark.parametrize(
        ("offset", "buf_len", "expected"),
        [(0, 100, 100), (900, 100, 100), (950, 100, 50), (1000, 100, 0), (5000, 100, 0)],
    )
    def test_read_into_from_offset(
        self, backend: StorageBackend, offset: int, buf_len: int, expected: int
    ) -> None:
        data = data_of(1000, seed=9)
        backend.write("obj", data)
        buf = bytearray(buf_len)
        assert backend.read_into("obj", buf, offset=offset) == expected
        assert bytes(buf[:expected]) == data[offset : offset + expected]

    def test_read_into_negative_offset_raises(self, backend: StorageBackend) -> None:
        backend.write("obj", b"0123456789")
        with pytest.raises(InvalidPathError):
            backend.read_into("obj", bytearray(4), offset=-1)

    def test_read_into_empty_object_reads_nothing(self, backend: StorageBackend) -> None:
        backend.write("empty", b"")
        buf = bytearray(b"untouched")
        assert backend.read_into("empty", buf) == 0
        assert buf == bytearray(b"untouched")

    def test_read_into_numpy_array(self, backend: StorageBackend) -> None:
        np = _numpy()
        expected = np.arange(100_000, dtype=np.float64)
        backend.write("obj", expected.tobytes())
        out = np.zeros(100_000, dtype=np.float64)
        assert backend.read_into("obj", out) == expected.nbytes
        assert np.array_equal(out, expected)

    def test_read_into_two_dimensional_numpy_array(self, backend: StorageBackend) -> None:
        np = _numpy()
        expected = np.arange(600, dtype=np.int32).reshape(20, 30)
        backend.write("obj", expected.tobytes())
        out = np.zeros((20, 30), dtype=np.int32)
        assert backend.read_into("obj", out) == expected.nbytes
        assert np.array_equal(out, expected)

    def test_read_into_read_only_buffer_raises_type_error(self, backend: StorageBackend) -> None:
        """Like ``io.BytesIO.readinto``: a read-only buffer is a ``TypeError``, and its bytes are
        left alone (an O_DIRECT or socket read must never write into immutable memory)."""
        backend.write("obj", b"0123456789")
        target = bytes(10)
        with pytest.raises(TypeError):
            backend.read_into("obj", target)
        assert target == bytes(10)

    def test_read_into_memoryview_slice_fills_only_that_slice(
        self, backend: StorageBackend
    ) -> None:
        backend.write("obj", b"0123456789")
        target = bytearray(b"." * 30)
        assert backend.read_into("obj", memoryview(target)[10:20]) == 10
        assert target == bytearray(b"." * 10 + b"0123456789" + b"." * 10)

    def test_read_into_large_object(self, backend: StorageBackend) -> None:
        data = data_of(10 * MiB + 123, seed=13)
        backend.write("big", data)
        buf = bytearray(len(data))
        assert backend.read_into("big", buf) == len(data)
        assert buf == data
        part = bytearray(3 * MiB)
        assert backend.read_into("big", part, offset=7 * MiB) == 3 * MiB
        assert part == data[7 * MiB : 10 * MiB]

    # -- read_tail / read_range_if_match ----------------------------------------------------

    @pytest.mark.parametrize("length", [0, 1, 10, 999, 1000, 1001, 10**9])
    def test_read_tail_returns_the_last_bytes_and_the_size(
        self, backend: StorageBackend, length: int
    ) -> None:
        data = data_of(1000, seed=14)
        backend.write("obj", data)
        tail, size = backend.read_tail("obj", length)
        assert isinstance(tail, bytes)
        assert size == 1000
        assert tail == data[max(0, len(data) - length) :]

    def test_read_tail_of_empty_object(self, backend: StorageBackend) -> None:
        backend.write("empty", b"")
        assert backend.read_tail("empty", 0) == (b"", 0)
        assert backend.read_tail("empty", 100) == (b"", 0)

    def test_read_tail_of_large_object(self, backend: StorageBackend) -> None:
        data = data_of(10 * MiB, seed=15)
        backend.write("big", data)
        assert backend.read_tail("big", 9 * MiB + 7) == (data[-(9 * MiB + 7) :], 10 * MiB)

    def test_read_tail_negative_length_raises(self, backend: StorageBackend) -> None:
        backend.write("obj", b"0123456789")
        with pytest.raises(InvalidPathError) as info:
            backend.read_tail("obj", -1)
        assert type(info.value) is InvalidPathError

    def test_read_range_if_match_with_current_etag(self, backend: StorageBackend) -> None:
        data = data_of(1000, seed=16)
        backend.write("obj", data)
        etag = backend.head("obj").etag
        if etag is None:
            pytest.skip("this backend reports no etag")
        assert backend.read_range_if_match("obj", 10, 20, etag) == data[10:20]
        assert backend.read_range_if_match("obj", 990, 5000, etag) == data[990:]
        assert backend.read_range_if_match("obj", 0, 0, etag) == b""

    def test_read_range_if_match_after_overwrite_raises(self, backend: StorageBackend) -> None:
        """A reader pinned to one version never gets bytes of the next one."""
        backend.write("obj", b"version one, long enough")
        etag = backend.head("obj").etag
        if etag is None:
            pytest.skip("this backend reports no etag")
        backend.write("obj", b"version two, long enough")
        with pytest.raises(PreconditionFailedError) as info:
            backend.read_range_if_match("obj", 0, 10, etag)
        assert type(info.value) is PreconditionFailedError
        assert info.value.key == "obj"

    def test_read_range_if_match_of_deleted_object_is_not_found(
        self, backend: StorageBackend
    ) -> None:
        backend.write("obj", b"here")
        etag = backend.head("obj").etag
        if etag is None:
            pytest.skip("this backend reports no etag")
        backend.delete("obj")
        with pytest.raises(ObjectNotFoundError) as info:
            backend.read_range_if_match("obj", 0, 2, etag)
        assert type(info.value) is ObjectNotFoundError

    def test_read_range_if_match_of_large_object(self, backend: StorageBackend) -> None:
        data = data_of(10 * MiB, seed=17)
        backend.write("big", data)
        etag = backend.head("big").etag
        if etag is None:
            pytest.skip("this backend reports no etag")
        assert backend.read_range_if_match("big", MiB, 10 * MiB, etag) == data[MiB:]

    # -- head / exists ----------------------------------------------------------------------

    def test_head_reports_key_and_size(self, backend: StorageBackend) -> None:
        backend.write("dir/obj", b"x" * 1234)
        meta = backend.head("dir/obj")
        assert isinstance(meta, ObjectMeta)
        assert meta.key == "dir/obj"
        assert meta.size == 1234
        assert meta.etag is None or (isinstance(meta.etag, str) and meta.etag != "")
        assert meta.version is None or isinstance(meta.version, str)

    def test_head_last_modified_is_timezone_aware(self, backend: StorageBackend) -> None:
        backend.write("obj", b"x")
        modified = backend.head("obj").last_modified
        assert isinstance(modified, datetime)
        assert modified.tzinfo is not None and modified.utcoffset() is not None

    def test_head_of_empty_object(self, backend: StorageBackend) -> None:
        backend.write("empty", b"")
        assert backend.head("empty").size == 0

    def test_exists(self, backend: StorageBackend) -> None:
        assert backend.exists("obj") is False
        backend.write("obj", b"x")
        assert backend.exists("obj") is True
        backend.delete("obj")
        assert backend.exists("obj") is False

    def test_a_prefix_is_not_an_object(self, backend: StorageBackend) -> None:
        """``a`` is only a prefix of ``a/b``: reading it is ObjectNotFoundError, like any miss."""
        backend.write("a/b", b"x")
        assert backend.exists("a") is False
        for name, call in READ_CALLS.items():
            with pytest.raises(ObjectNotFoundError) as info:
                call(backend, "a")
            assert type(info.value) is ObjectNotFoundError, name
        backend.delete("a")
        assert backend.read("a/b") == b"x"

    def test_key_below_an_object_is_missing(self, backend: StorageBackend) -> None:
        """``obj/child`` when ``obj`` is an object: a plain miss on every read method."""
        backend.write("obj", b"x")
        assert backend.exists("obj/child") is False
        for name, call in READ_CALLS.items():
            with pytest.raises(ObjectNotFoundError) as info:
                call(backend, "obj/child")
            assert type(info.value) is ObjectNotFoundError, name
        backend.delete("obj/child")
        assert backend.read("obj") == b"x"

    def test_long_key_round_trips_or_is_refused_as_invalid(self, backend: StorageBackend) -> None:
        """A 300-byte segment (object stores allow 1,024-byte keys; many file systems only
        255-byte names): it works, or every write raises ``InvalidPathError`` itself, never a
        "not found"."""
        key = "long/" + "x" * 300
        for name, call in (("write", KEY_CALLS["write"]), ("put", KEY_CALLS["put_if_absent"])):
            try:
                call(backend, key)
            except InvalidPathError as exc:
                assert type(exc) is InvalidPathError, name
                assert not backend.exists(key)
            else:
                assert backend.read(key) == b"x", name
                assert keys_of(backend.list("long/")) == [key], name
                backend.delete(key)

    def test_control_characters_in_keys_round_trip(self, backend: StorageBackend) -> None:
        keys = ["nl\nx", "tab\tx", "cr\rx", "del\x7fx", "bell\x07x"]
        for key in keys:
            backend.write(key, key.encode())
        for key in keys:
            assert backend.read(key) == key.encode()
        assert keys_of(backend.list()) == sorted(keys)

    # -- put_if_absent ----------------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 100, 3 * MiB])
    def test_put_if_absent_creates_a_missing_object(
        self, backend: StorageBackend, size: int
    ) -> None:
        data = data_of(size, seed=size)
        backend.put_if_absent("meta/v1.json", data)
        assert backend.read("meta/v1.json") == data
        assert self.raw_get(backend, "meta/v1.json") == data

    def test_put_if_absent_loses_to_an_existing_object(self, backend: StorageBackend) -> None:
        backend.put_if_absent("meta/v1.json", b"first")
        with pytest.raises(ObjectExistsError) as info:
            backend.put_if_absent("meta/v1.json", b"second")
        exc = info.value
        assert type(exc) is ObjectExistsError
        assert isinstance(exc, FileExistsError)
        assert exc.key == "meta/v1.json"
        assert "meta/v1.json" in str(exc)
        assert backend.read("meta/v1.json") == b"first"
        assert keys_of(backend.list()) == ["meta/v1.json"]

    def test_put_if_absent_loses_to_a_written_object(self, backend: StorageBackend) -> None:
        backend.write("obj", b"written")
        with pytest.raises(ObjectExistsError):
            backend.put_if_absent("obj", b"other")
        assert backend.read("obj") == b"written"

    def test_put_if_absent_loses_to_an_empty_object(self, backend: StorageBackend) -> None:
        backend.put_if_absent("obj", b"")
        with pytest.raises(ObjectExistsError):
            backend.put_if_absent("obj", b"not empty")
        assert backend.read("obj") == b""

    def test_put_if_absent_loses_to_a_back_door_object(self, backend: StorageBackend) -> None:
        self.raw_put(backend, "obj", b"from outside")
        with pytest.raises(ObjectExistsError):
            backend.put_if_absent("obj", b"mine")
        assert self.raw_get(backend, "obj") == b"from outside"

    def test_put_if_absent_wins_again_after_delete(self, backend: StorageBackend) -> None:
        backend.put_if_absent("obj", b"one")
        backend.delete("obj")
        backend.put_if_absent("obj", b"two")
        assert backend.read("obj") == b"two"

    def test_deleted_prefix_leaves_no_trace(self, backend: StorageBackend) -> None:
        """After ``p/q`` is deleted, ``p`` is a free key: no leftover directory blocks it."""
        backend.write("p/q", b"x")
        backend.delete("p/q")
        assert keys_of(backend.list()) == []
        backend.put_if_absent("p", b"now an object")
        assert backend.read("p") == b"now an object"
        assert keys_of(backend.list()) == ["p"]

    def test_key_can_be_an_object_and_a_prefix(self, backend: StorageBackend) -> None:
        """Object stores hold ``a/b`` and ``a/b/c`` side by side."""
        backend.write("a/b", b"object")
        backend.write("a/b/c", b"below it")
        assert backend.read("a/b") == b"object"
        assert backend.read("a/b/c") == b"below it"
        assert keys_of(backend.list("a/")) == ["a/b", "a/b/c"]

    def test_race_exactly_one_put_if_absent_wins(self, backend: StorageBackend) -> None:
        """16 writers ``put_if_absent`` one key at the same instant, each with its own payload:
        exactly one wins, every other gets ``ObjectExistsError``, and the stored bytes are the
        winner's. Writers are separate processes (started through forkserver or spawn, each with
        its own client, released together by a barrier) unless the binding sets
        ``race_mode = "thread"``: ``memory://`` objects live in one process, so its race runs
        16 threads of this process instead."""
        key = "metadata/v00002.metadata.json"
        result = race_put_if_absent(backend, key, self.race_writers, mode=self.race_mode)
        report = result.describe()
        assert result.errors == [], report
        assert len(result.winners) == 1, report
        assert len(result.losers) == self.race_writers - 1, report
        expected = f"{ObjectExistsError.__module__}.{ObjectExistsError.__qualname__}"
        assert {r.exc_type for r in result.losers} == {expected}, report
        winner = result.winners[0].index
        assert backend.read(key) == result.payloads[winner]
        assert self.raw_get(backend, key) == result.payloads[winner]
        assert keys_of(backend.list()) == [key]

    # -- list -------------------------------------------------------------------------------

    def test_list_is_recursive_and_lexicographic(self, backend: StorageBackend) -> None:
        for key in reversed(TRICKY_KEYS):
            backend.write(key, bytes(TRICKY_KEYS.index(key)))
        listed = list(backend.list())
        assert [m.key for m in listed] == sorted(TRICKY_KEYS)
        assert [m.size for m in listed] == [TRICKY_KEYS.index(m.key) for m in listed]

    def test_list_order_matches_utf8_byte_order(self, backend: StorageBackend) -> None:
        keys = ["\uff01", "\U0001f600", "\u00e9", "z", "\ufffd"]
        for key in keys:
            backend.write(key, b"x")
        expected = sorted(keys, key=lambda k: k.encode("utf-8"))
        assert keys_of(backend.list()) == expected

    def test_list_reports_sizes_matching_head(self, backend: StorageBackend) -> None:
        for i in range(5):
            backend.write(f"d/{i}", b"y" * (i * 100))
        for meta in backend.list("d/"):
            assert meta.size == backend.head(meta.key).size
            assert meta.key == backend.head(meta.key).key

    def test_list_with_prefix_is_a_string_prefix(self, backend: StorageBackend) -> None:
        for key in ("a/x", "a/y/z", "ab/y", "a.b", "abc", "b/a"):
            backend.write(key, b"x")
        assert keys_of(backend.list("a/")) == ["a/x", "a/y/z"]
        assert keys_of(backend.list("ab")) == ["ab/y", "abc"]
        assert keys_of(backend.list("ab/")) == ["ab/y"]
        assert keys_of(backend.list("a")) == ["a.b", "a/x", "a/y/z", "ab/y", "abc"]
        assert keys_of(backend.list("a/y")) == ["a/y/z"]
        assert keys_of(backend.list("a/x")) == ["a/x"]
        assert keys_of(backend.list("a/x/")) == []

    def test_list_prefix_with_special_characters(self, backend: StorageBackend) -> None:
        keys = ["a+b/1", "a b/2", "a%20b/3", "é/4", "q?/5", "h#/6", "e\u0301/7", "a&b/8"]
        for key in keys:
            backend.write(key, b"x")
        for key in keys:
            prefix = key.split("/")[0]
            assert keys_of(backend.list(prefix)) == [key], prefix
            assert keys_of(backend.list(prefix + "/")) == [key], prefix

    def test_list_of_missing_prefix_is_empty(self, backend: StorageBackend) -> None:
        assert keys_of(backend.list()) == []
        assert keys_of(backend.list("")) == []
        assert keys_of(backend.list("nope/")) == []
        backend.write("some/obj", b"x")
        assert keys_of(backend.list("nope/")) == []
        assert keys_of(backend.list("some/obj/deeper")) == []
        assert keys_of(backend.list("som")) == ["some/obj"]

    def test_list_sees_many_objects(self, backend: StorageBackend) -> None:
        """More keys than one small page: 1,005 crosses S3's 1,000-key list page."""
        keys = [f"many/{i:05d}" for i in range(1005)]
        backend.delete_many([])  # a no-op must be fine
        self._raw_put_all(backend, keys)
        assert keys_of(backend.list("many/")) == keys

    # -- delete -----------------------------------------------------------------------------

    def test_delete_is_idempotent(self, backend: StorageBackend) -> None:
        backend.delete("never-existed")
        backend.write("obj", b"x")
        backend.delete("obj")
        backend.delete("obj")
        assert not backend.exists("obj")
        with pytest.raises(ObjectNotFoundError):
            backend.read("obj")

    def test_delete_while_listing_removes_everything(self, backend: StorageBackend) -> None:
        """The usual clean-up loop: delete each key as ``list`` yields it."""
        keys = ["d/a/1", "d/a/2", "d/b/1", "d/c/1", "d/c/2/x", "d/e", "keep"]
        for key in keys:
            backend.write(key, b"x")
        seen = []
        for meta in backend.list("d/"):
            seen.append(meta.key)
            backend.delete(meta.key)
        assert seen == keys[:-1]
        assert keys_of(backend.list()) == ["keep"]

    def test_delete_removes_only_that_key(self, backend: StorageBackend) -> None:
        for key in ("d/x", "d/xy", "d/x.y", "d/w/x", "x"):
            backend.write(key, b"x")
        backend.delete("d/x")
        assert keys_of(backend.list()) == ["d/w/x", "d/x.y", "d/xy", "x"]

    def test_delete_many_ignores_missing_keys(self, backend: StorageBackend) -> None:
        for key in ("k/1", "k/2", "k/3", "keep"):
            backend.write(key, b"x")
        backend.delete_many(["k/1", "missing", "k/3", "k/1", "also/missing"])
        assert keys_of(backend.list()) == ["k/2", "keep"]
        backend.delete_many(iter(["k/2"]))
        assert keys_of(backend.list()) == ["keep"]

    def test_delete_many_of_tricky_keys(self, backend: StorageBackend) -> None:
        for key in TRICKY_KEYS:
            backend.write(key, b"x")
        backend.write("keep", b"x")
        backend.delete_many(TRICKY_KEYS)
        assert keys_of(backend.list()) == ["keep"]

    def test_delete_many_of_many_keys(self, backend: StorageBackend) -> None:
        """1,005 keys: more than one S3 ``DeleteObjects`` batch of 1,000."""
        keys = [f"k/{i:05d}" for i in range(1005)]
        self._raw_put_all(backend, [*keys, "other"])
        backend.delete_many(keys)
        assert keys_of(backend.list()) == ["other"]

    def test_delete_many_with_an_invalid_key_deletes_nothing(
        self, backend: StorageBackend
    ) -> None:
        backend.write("ok-key", b"x")
        with pytest.raises(InvalidPathError):
            backend.delete_many(["ok-key", "bad//key"])
        assert backend.read("ok-key") == b"x"

    # -- invalid keys -----------------------------------------------------------------------

    @pytest.mark.parametrize("method", sorted(KEY_CALLS))
    def test_invalid_keys_raise_before_any_io(
        self, backend: StorageBackend, offline_backend: StorageBackend, method: str
    ) -> None:
        """Every malformed key raises ``InvalidPathError`` itself (not a subclass, not a
        storage error), on the live backend and on one whose storage cannot be reached."""
        call = KEY_CALLS[method]
        failures: list[str] = []
        for target_name, target in (("live", backend), ("offline", offline_backend)):
            for key in INVALID_KEYS:
                try:
                    call(target, key)
                except InvalidPathError as exc:
                    if type(exc) is not InvalidPathError:
                        failures.append(f"{target_name} {key!r}: {qualified_name(exc)}")
                except Exception as exc:  # noqa: BLE001 - collected and reported below
                    failures.append(f"{target_name} {key!r}: {qualified_name(exc)}: {exc}")
                else:
                    failures.append(f"{target_name} {key!r}: no error")
        assert failures == [], "\n".join(failures)
        assert keys_of(backend.list()) == []

    def test_invalid_prefixes_raise(
        self, backend: StorageBackend, offline_backend: StorageBackend
    ) -> None:
        failures: list[str] = []
        for target_name, target in (("live", backend), ("offline", offline_backend)):
            for prefix in INVALID_PREFIXES:
                try:
                    list(target.list(prefix))  # type: ignore[arg-type]
                except InvalidPathError as exc:
                    if type(exc) is not InvalidPathError:
                        failures.append(f"{target_name} {prefix!r}: {qualified_name(exc)}")
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"{target_name} {prefix!r}: {qualified_name(exc)}: {exc}")
                else:
                    failures.append(f"{target_name} {prefix!r}: no error")
        assert failures == [], "\n".join(failures)

    # -- missing objects --------------------------------------------------------------------

    @pytest.mark.parametrize("method", sorted(READ_CALLS))
    def test_missing_key_raises_object_not_found(
        self, backend: StorageBackend, method: str
    ) -> None:
        backend.write("other", b"x")
        with pytest.raises(ObjectNotFoundError) as info:
            READ_CALLS[method](backend, "no/such/key")
        exc = info.value
        assert type(exc) is ObjectNotFoundError
        assert isinstance(exc, FileNotFoundError)
        assert exc.key == "no/such/key"
        assert "no/such/key" in str(exc)

    # -- identity, pickling -----------------------------------------------------------------

    def test_uri_for_and_key_for_round_trip(self, backend: StorageBackend) -> None:
        for key in ("obj", "a/b/c", "日本/語"):
            uri = backend.uri_for(key)
            assert uri.startswith(backend.root_uri + "/")
            assert backend.key_for(uri) == key
        with pytest.raises(InvalidPathError):
            backend.key_for("elsewhere://x/y")

    def test_pickled_backend_reads_the_same_objects(self, backend: StorageBackend) -> None:
        backend.write("shared/obj", b"visible to the copy")
        clone = pickle.loads(pickle.dumps(backend))
        try:
            assert type(clone) is type(backend)
            assert clone.root_uri == backend.root_uri
            assert clone.read("shared/obj") == b"visible to the copy"
            clone.write("shared/from-clone", b"back")
            assert backend.read("shared/from-clone") == b"back"
        finally:
            clone.close()

    def test_pickled_backend_in_another_process(self, backend: StorageBackend) -> None:
        """A worker process gets the backend pickled. Shared backends read what the parent
        wrote; ``memory://`` (``shared_across_processes = False``) opens that process's own,
        empty store of the same name, so the object is missing there."""
        backend.write("shared/obj", b"from the parent")
        outcome = _run_in_process(read_object, backend, "shared/obj")
        if self.shared_across_processes:
            assert outcome == ("ok", b"from the parent")
        else:
            expected = f"{ObjectNotFoundError.__module__}.{ObjectNotFoundError.__qualname__}"
            assert outcome[:2] == ("raised", expected)

    def test_backend_is_a_context_manager(self, backend: StorageBackend) -> None:
        clone = pickle.loads(pickle.dumps(backend))
        with clone as entered:
            assert entered is clone
            entered.write("ctx", b"x")
        assert backend.read("ctx") == b"x"

    def test_repr_names_the_root(self, backend: StorageBackend) -> None:
        text = repr(backend)
        assert backend.root_uri in text
        assert type(backend).__name__ in text
