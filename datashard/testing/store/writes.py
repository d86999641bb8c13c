"""Conformance tests of writes: round trips, atomic overwrite, ``put_if_absent`` and the race."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from datashard.errors import ObjectExistsError
from datashard.storage.base import StorageBackend
from datashard.testing.race import (
    commit_loops,
    commit_payload,
    qualified_name,
    race_put_if_absent,
    version_key,
)
from datashard.testing.store.base import (
    MiB,
    SuiteBase,
    _numpy,
    data_of,
    keys_of,
)


class WriteTests(SuiteBase):
    """Writes: what goes in comes out, whole, and one creator wins."""

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

    @pytest.mark.parametrize("existed", [False, True], ids=["new", "overwrite"])
    def test_object_is_invisible_while_being_written(
        self, backend: StorageBackend, existed: bool
    ) -> None:
        """While a chunked write is half done, readers and ``list`` see the old state only:
        no partial object, no temp file, no upload in progress."""
        if existed:
            backend.write("dir/obj", b"old")
        halfway, resume = threading.Event(), threading.Event()
        chunk = data_of(MiB, seed=3)

        def chunks() -> Iterator[bytes]:
            yield chunk
            halfway.set()
            if not resume.wait(60):
                raise TimeoutError("the test never resumed the write")
            yield chunk

        with ThreadPoolExecutor(max_workers=1) as pool:
            writing = pool.submit(backend.write, "dir/obj", chunks())
            try:
                assert halfway.wait(60), "the write never consumed its first chunk"
                assert keys_of(backend.list()) == (["dir/obj"] if existed else [])
                if existed:
                    assert backend.read("dir/obj") == b"old"
                    assert backend.head("dir/obj").size == 3
                else:
                    assert not backend.exists("dir/obj")
            finally:
                resume.set()
            writing.result(timeout=120)
        assert backend.read("dir/obj") == chunk + chunk
        assert keys_of(backend.list()) == ["dir/obj"]

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

    def test_overwrite_is_atomic_for_concurrent_large_reads(self, backend: StorageBackend) -> None:
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

    def test_concurrent_commit_loops_lose_nothing(self, backend: StorageBackend) -> None:
        """8 writers (processes, or threads for ``race_mode = "thread"``) each append 5
        versions to one log by probing forward with ``put_if_absent``, the way table commits
        claim metadata versions: versions 1-40 each hold exactly one writer's commit, every
        writer won 5 times, and nothing else was written."""
        writers, commits = 8, 5
        results = commit_loops(backend, writers, commits, mode=self.race_mode)
        report = "\n".join(
            f"writer {r.writer}: won {r.won} in {r.attempts} attempts {r.error}" for r in results
        )
        assert [r.error for r in results] == [""] * writers, report
        assert [len(r.won) for r in results] == [commits] * writers, report
        owner = {v: r.writer for r in results for v in r.won}
        assert sorted(owner) == list(range(1, writers * commits + 1)), report
        for r in results:
            for nth, version in enumerate(r.won):
                assert backend.read(version_key(version)) == commit_payload(r.writer, nth)
        expected = [version_key(v) for v in range(1, writers * commits + 1)]
        assert keys_of(backend.list("log/")) == expected

    def test_one_backend_serves_many_threads(self, backend: StorageBackend) -> None:
        """16 threads share one backend that has not made a client yet (a fresh unpickled copy):
        each writes, reads and creates its own keys at once; nothing is lost or mixed."""
        shared = pickle.loads(pickle.dumps(backend))
        barrier = threading.Barrier(16)

        def work(i: int) -> tuple[bytes, bytes]:
            barrier.wait(60)
            mine = data_of(1000 + i, seed=i)
            shared.write(f"t/{i:02d}/w", mine)
            shared.put_if_absent(f"t/{i:02d}/p", mine[::-1])
            return shared.read(f"t/{i:02d}/w"), shared.read_range(f"t/{i:02d}/p", 0, 10**6)

        try:
            with ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(work, range(16)))
        finally:
            shared.close()
        for i, (written, created) in enumerate(results):
            assert written == data_of(1000 + i, seed=i), i
            assert created == data_of(1000 + i, seed=i)[::-1], i
        expected = sorted(f"t/{i:02d}/{kind}" for i in range(16) for kind in "pw")
        assert keys_of(backend.list("t/")) == expected

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
