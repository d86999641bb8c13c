"""Conformance tests of the read methods: ranges, ``read_into``, ``read_tail``, conditional
reads, ``head`` and ``exists``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from datashard.errors import (
    InvalidPathError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from datashard.storage.base import ObjectMeta, StorageBackend
from datashard.testing.store.base import (
    KEY_CALLS,
    READ_CALLS,
    MiB,
    SuiteBase,
    _numpy,
    data_of,
    keys_of,
)


class ReadTests(SuiteBase):
    """Reads: every way to get bytes or metadata out of a backend."""

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

    @pytest.mark.parametrize(("start", "end"), [(0.0, 5), (0, 5.0), ("0", 5), (None, 5)])
    def test_read_range_with_non_int_bounds_raises(
        self, backend: StorageBackend, start: Any, end: Any
    ) -> None:
        backend.write("obj", b"0123456789")
        with pytest.raises(InvalidPathError) as info:
            backend.read_range("obj", start, end)
        assert type(info.value) is InvalidPathError
        with pytest.raises(InvalidPathError):
            backend.read_ranges("obj", [(start, end)])

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

    def test_read_ranges_returns_results_in_the_order_asked(self, backend: StorageBackend) -> None:
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
