"""Conformance tests of streamed writes (``open_output``): what is written comes out whole,
nothing is visible before ``close``, and an aborted stream leaves nothing behind."""

from __future__ import annotations

import gc

import pytest

from datashard.errors import InvalidPathError
from datashard.storage.base import StorageBackend
from datashard.testing.store.base import INVALID_KEYS, MiB, SuiteBase, data_of, keys_of


class Boom(Exception):
    """The producer of a stream failed."""


class StreamTests(SuiteBase):
    """``open_output``: a stream is published whole on ``close`` and never in part."""

    def pending_uploads(self, backend: StorageBackend) -> int | None:
        """Unfinished uploads the service still holds under the backend's root (S3 multipart
        uploads), read through the back door; ``None`` where the service has no such list."""
        return None

    @pytest.mark.parametrize(
        ("size", "piece"),
        [(0, 1), (1, 1), (100_000, 7_919), (12 * MiB, 1_000_003)],
        ids=["empty", "1B", "100kB-odd-writes", "12MiB"],
    )
    def test_stream_round_trips(self, backend: StorageBackend, size: int, piece: int) -> None:
        data = data_of(size, seed=size)
        with backend.open_output("dir/obj") as out:
            for start in range(0, size, piece):
                assert out.write(data[start : start + piece]) == len(data[start : start + piece])
            assert out.tell() == size
        assert out.closed
        assert backend.head("dir/obj").size == size
        assert self.raw_get(backend, "dir/obj") == data

    def test_stream_is_invisible_until_closed(self, backend: StorageBackend) -> None:
        data = data_of(11 * MiB, seed=3)
        out = backend.open_output("obj")
        out.write(data[: 6 * MiB])
        out.write(data[6 * MiB :])
        assert not backend.exists("obj")
        assert keys_of(backend.list()) == []
        out.close()
        assert backend.read("obj") == data

    def test_stream_replaces_an_object_only_when_closed(self, backend: StorageBackend) -> None:
        backend.write("obj", b"old")
        with backend.open_output("obj") as out:
            out.write(b"new bytes")
            assert backend.read("obj") == b"old"
        assert backend.read("obj") == b"new bytes"

    @pytest.mark.parametrize("size", [1000, 11 * MiB], ids=["1kB", "11MiB"])
    def test_stream_failing_in_a_with_block_leaves_nothing(
        self, backend: StorageBackend, size: int
    ) -> None:
        with pytest.raises(Boom), backend.open_output("obj") as out:
            out.write(data_of(size, seed=5))
            raise Boom("the producer failed mid-stream")
        assert out.closed
        assert not backend.exists("obj")
        assert keys_of(backend.list()) == []
        assert self.pending_uploads(backend) in (None, 0)

    def test_aborted_stream_leaves_the_old_object(self, backend: StorageBackend) -> None:
        backend.write("obj", b"old contents")
        out = backend.open_output("obj")
        out.write(data_of(11 * MiB, seed=6))
        out.abort()
        out.close()  # a no-op after abort: never publishes
        assert backend.read("obj") == b"old contents"
        assert keys_of(backend.list()) == ["obj"]
        assert self.pending_uploads(backend) in (None, 0)

    def test_stream_dropped_without_close_publishes_nothing(self, backend: StorageBackend) -> None:
        out = backend.open_output("obj")
        out.write(b"half of a file")
        del out
        gc.collect()
        assert not backend.exists("obj")
        assert keys_of(backend.list()) == []

    def test_closed_stream_refuses_writes(self, backend: StorageBackend) -> None:
        with backend.open_output("obj") as out:
            out.write(b"abc")
        with pytest.raises(ValueError, match="obj"):
            out.write(b"more")
        with pytest.raises(TypeError):
            backend.open_output("other").write("text")
        assert backend.read("obj") == b"abc"
        assert not backend.exists("other")

    @pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
    def test_open_output_refuses_invalid_keys_before_any_io(
        self, offline_backend: StorageBackend, key: object
    ) -> None:
        with pytest.raises(InvalidPathError):
            offline_backend.open_output(key)  # type: ignore[arg-type]
