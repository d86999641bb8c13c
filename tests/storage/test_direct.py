"""What is specific to ``direct://``: O_DIRECT reads with alignment handled, refusal, fallback.

Generic behaviour (round trips, ranges, errors, pickling, the put_if_absent race) is covered by
the conformance suite; writes, list and delete are ``file://``'s (tests/storage/test_local.py).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import random
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import datashard.storage._aligned as aligned
from datashard.errors import ConfigError, UnsupportedOperationError
from datashard.storage.config import open_backend
from datashard.storage.direct import DirectBackend, DirectConfig

BLOCK = 8192  # a small bounce buffer, so a few KiB already span many blocks
SIZE = 300_000 + 123  # not a multiple of 4096: the last block is partial


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(42).randbytes(SIZE)


@pytest.fixture
def disk_dir() -> Iterator[str]:
    """A fresh directory where O_DIRECT works (tmp_path may be on a tmpfs that refuses it)."""
    for parent in (tempfile.gettempdir(), "/var/tmp"):
        root = tempfile.mkdtemp(prefix="datashard-direct-", dir=parent)
        if not _refuses_o_direct(root):
            break
        shutil.rmtree(root, ignore_errors=True)
    else:
        pytest.fail("no directory accepting O_DIRECT in the temp dir or /var/tmp")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def backend(disk_dir: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> DirectBackend:
    monkeypatch.setattr(aligned, "SHIFT_CHUNK", 3 * 4096)  # many chunks in the shifted path
    b = open_backend(f"direct://{disk_dir}", block_size=BLOCK)
    assert isinstance(b, DirectBackend)
    b.write("obj", data)
    return b


def _refuses_o_direct(directory: str) -> bool:
    probe = os.path.join(directory, ".probe")
    Path(probe).write_bytes(b"x")
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        return False
    except OSError as exc:
        return exc.errno == errno.EINVAL
    finally:
        os.unlink(probe)


@pytest.fixture
def refusing_dir() -> Iterator[str]:
    """A directory on a file system that refuses O_DIRECT.

    /dev/shm (tmpfs) refuses it on Linux before 6.6; newer kernels accept O_DIRECT on tmpfs, and
    then a ramfs (which still refuses) is mounted for the test. Mounting needs root; without
    either the test fails, it does not skip.
    """
    shm = tempfile.mkdtemp(prefix="datashard-shm-", dir="/dev/shm")
    if _refuses_o_direct(shm):
        yield shm
        shutil.rmtree(shm, ignore_errors=True)
        return
    shutil.rmtree(shm, ignore_errors=True)
    point = tempfile.mkdtemp(prefix="datashard-ramfs-")
    mounted = subprocess.run(
        ["mount", "-t", "ramfs", "ramfs", point], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        os.rmdir(point)
        pytest.fail(
            "no file system that refuses O_DIRECT: /dev/shm accepts it on this kernel and "
            f"mounting a ramfs failed: {mounted.stderr.strip()}"
        )
    try:
        assert _refuses_o_direct(point), "ramfs accepted O_DIRECT"
        yield point
    finally:
        subprocess.run(["umount", point], check=True)
        os.rmdir(point)


# -- alignment -------------------------------------------------------------------------------

OFFSETS = [0, 1, 511, 4095, 4096, 4097, 8191, 8192 + 100, SIZE - 4097, SIZE - 1, SIZE, SIZE + 9]
LENGTHS = [0, 1, 4095, 4096, 4097, 2 * BLOCK - 1, 2 * BLOCK + 4097, 100_000, SIZE]
#: Where the destination starts inside a page-aligned mmap (0: aligned; others: misaligned).
SHIFTS = [0, 1, 16, 4095, 4096 + 512]


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_read_into_is_exact_for_unaligned_offsets_lengths_and_buffers(
    backend: DirectBackend, data: bytes, offset: int, shift: int
) -> None:
    """Every byte asked for arrives, and not one byte past the end of the read is touched."""
    area = mmap.mmap(-1, SIZE + 3 * 4096)
    try:
        for length in LENGTHS:
            area[:] = b"\xee" * len(area)
            with memoryview(area) as whole:
                n = backend.read_into("obj", whole[shift : shift + length], offset)
            expected = data[offset : offset + length]
            assert n == len(expected), (offset, shift, length)
            assert area[shift : shift + n] == expected, (offset, shift, length)
            assert area[:shift] == b"\xee" * shift
            assert area[shift + n :] == b"\xee" * (len(area) - shift - n)
    finally:
        area.close()


@pytest.mark.parametrize("kind", ["bytearray", "memoryview-slice", "array"])
def test_read_into_any_writable_buffer(backend: DirectBackend, data: bytes, kind: str) -> None:
    import array

    buffers = {
        "bytearray": bytearray(SIZE),
        "memoryview-slice": memoryview(bytearray(SIZE + 3))[3:],
        "array": array.array("B", bytes(SIZE)),
    }
    buffer = buffers[kind]
    assert backend.read_into("obj", buffer, 0) == SIZE
    assert bytes(buffer) == data


def test_read_range_and_read_ranges_match_the_bytes(backend: DirectBackend, data: bytes) -> None:
    ranges = [(s, s + n) for s in OFFSETS for n in LENGTHS[::2]]
    assert backend.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
    for start, end in ranges[::7]:
        assert backend.read_range("obj", start, end) == data[start:end]
    assert backend.read("obj") == data


def test_threads_reading_at_once_each_get_their_own_bytes(
    backend: DirectBackend, data: bytes
) -> None:
    """Bounce buffers are per thread: four threads with different alignments never mix."""
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            start = rng.randrange(0, SIZE)
            buf = bytearray(rng.randrange(1, 3 * BLOCK))
            n = backend.read_into("obj", memoryview(buf)[seed:], start)
            if bytes(buf[seed : seed + n]) != data[start : start + len(buf) - seed]:
                failures.append(f"thread {seed} at {start}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []


def test_a_forked_child_and_its_parent_read_at_once_without_sharing_buffers(
    backend: DirectBackend, data: bytes
) -> None:
    """A data-loader worker forked after the parent read keeps its own bounce buffer."""
    assert backend.read_range("obj", 1, 2) == data[1:2]  # the parent's buffer exists now
    rounds = 300

    def loop(seed: int) -> int:
        rng = random.Random(seed)
        bad = 0
        for _ in range(rounds):
            start = rng.randrange(0, SIZE - BLOCK)
            if (
                backend.read_range("obj", start, start + BLOCK // 2 - 1)
                != data[start : start + BLOCK // 2 - 1]
            ):
                bad += 1
        return bad

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = 0 if loop(1) == 0 else 3
        finally:
            os._exit(code)
    bad = loop(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child read bytes meant for its parent"
    assert bad == 0, "the parent read bytes meant for its child"


def test_reads_bypass_the_page_cache(disk_dir: str, data: bytes) -> None:
    """After a direct:// read of an evicted file, the file is still not in the page cache."""
    b = open_backend(f"direct://{disk_dir}")
    b.write("cold", data)
    path = os.path.join(disk_dir, "cold")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert b.read("cold") == data
        assert _cached_pages(fd, len(data)) == 0
    finally:
        os.close(fd)


def _cached_pages(fd: int, size: int) -> int:
    """Pages of the file resident in the page cache (``mincore`` over a mapping)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(ctypes.c_void_p(addr), size, vec) == 0
        return sum(b & 1 for b in vec.raw)
    finally:
        libc.munmap(ctypes.c_void_p(addr), size)


# -- refusal and fallback --------------------------------------------------------------------


def test_a_file_system_refusing_o_direct_raises_unsupported_naming_it(refusing_dir: str) -> None:
    b = open_backend(f"direct://{refusing_dir}")
    b.write("k", b"hello")  # writes are buffered: they work anywhere
    assert [m.key for m in b.list()] == ["k"] and b.head("k").size == 5
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: b.read("k"),
        "read_range": lambda: b.read_range("k", 0, 2),
        "read_ranges": lambda: b.read_ranges("k", [(0, 2)]),
        "read_into": lambda: b.read_into("k", bytearray(5)),
    }
    for name, call in calls.items():
        with pytest.raises(UnsupportedOperationError) as info:
            call()
        message = str(info.value)
        assert "O_DIRECT" in message and refusing_dir in message, name
        assert "tmpfs" in message or "ramfs" in message, message
        assert "fallback=True" in message
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EINVAL


def test_fallback_reads_buffered_and_warns_once(
    refusing_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = open_backend(f"direct://{refusing_dir}", fallback=True)
    b.write("k", b"hello world")
    with caplog.at_level(logging.WARNING, logger="datashard.storage.direct"):
        assert b.read("k") == b"hello world"
        assert b.read_range("k", 6, 99) == b"world"
        buf = bytearray(5)
        assert b.read_into("k", buf, 6) == 5 and buf == b"world"
    warnings = [r for r in caplog.records if "O_DIRECT" in r.getMessage()]
    assert len(warnings) == 1
    assert "fallback=True" in warnings[0].getMessage()


def test_a_directory_is_not_found_not_unsupported(backend: DirectBackend) -> None:
    """ext4 answers O_DIRECT on a directory with EINVAL too; that is a missing object."""
    backend.write("dir/x", b"1")
    with pytest.raises(FileNotFoundError):
        backend.read("dir")


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [0, 1000, 4096 + 1])
def test_block_size_must_be_a_multiple_of_4096(tmp_path: Path, block_size: int) -> None:
    with pytest.raises(ConfigError, match="block_size"):
        open_backend(f"direct://{tmp_path}", block_size=block_size)


def test_direct_uri_forms(tmp_path: Path) -> None:
    b = open_backend(f"direct://{tmp_path}")
    assert isinstance(b.config, DirectConfig)
    assert (b.config.block_size, b.config.fallback) == (4 << 20, False)
    assert b.uri_for("a/b") == f"direct://{tmp_path}/a/b"
    with pytest.raises(ConfigError, match="absolute"):
        open_backend("direct://relative")
