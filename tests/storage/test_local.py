"""What is specific to ``file://`` (and the writes ``direct://`` inherits from it).

The generic round trips, range edges, invalid keys, pickling and the 16-process put_if_absent
race live in the shared conformance suite (tests/storage/test_conformance.py); this module
covers atomicity on disk, temp files, directory layout, OS errors and configuration.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from datashard.errors import (
    ConfigError,
    InvalidPathError,
    ObjectExistsError,
    StorageError,
    UnsupportedOperationError,
)
from datashard.storage.config import backend_from_env, config_from_env, open_backend
from datashard.storage.direct import DirectBackend
from datashard.storage.local import TEMP_PREFIX, LocalBackend, LocalConfig

MiB = 1 << 20


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    b = open_backend(f"file://{tmp_path}/root")
    assert isinstance(b, LocalBackend)
    yield b
    b.close()


def files_on_disk(root: str) -> list[str]:
    """Every file under ``root`` (temp files included), relative, sorted."""
    found = []
    for dirpath, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(dirpath, n), root) for n in names]
    return sorted(found)


# -- atomic write ----------------------------------------------------------------------------

OBJECT_SIZE = 4 * MiB


def _payload(generation: int) -> bytes:
    """An object whose first 32 bytes are the BLAKE2 digest of the rest."""
    body = bytes([generation % 251]) * (OBJECT_SIZE - 48 - generation % 7) + os.urandom(16)
    return hashlib.blake2b(body, digest_size=32).digest() + body


_REWRITER = textwrap.dedent(
    """
    import hashlib, os, sys
    from datashard.storage.config import open_backend
    uri, key, rounds, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    backend = open_backend(uri)
    for generation in range(1, rounds + 1):
        body = bytes([generation % 251]) * (size - 48 - generation % 7) + os.urandom(16)
        data = hashlib.blake2b(body, digest_size=32).digest() + body
        backend.write(key, (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)))
    print(rounds)
    """
)


@pytest.mark.parametrize("scheme", ["file", "direct"])
def test_reader_never_sees_a_partial_object_while_another_process_rewrites_it(
    tmp_path: Path, scheme: str
) -> None:
    """One process rewrites a 4 MiB object 20 times (streamed in 1 MiB chunks) while this
    process reads it in a loop: every read is some whole generation, checksum intact."""
    uri = f"{scheme}://{tmp_path}"
    backend = open_backend(uri)
    backend.write("obj", _payload(0))
    writer = subprocess.Popen(
        [sys.executable, "-c", _REWRITER, uri, "obj", "20", str(OBJECT_SIZE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    reads, deadline = 0, time.monotonic() + 60
    try:
        while (writer.poll() is None or reads < 5) and reads < 5000 and time.monotonic() < deadline:
            data = backend.read("obj") if reads % 2 else _read_via_into(backend, "obj")
            assert len(data) >= OBJECT_SIZE - 32 - 6, f"read {reads} saw {len(data)} bytes"
            digest = hashlib.blake2b(data[32:], digest_size=32).digest()
            assert digest == data[:32], f"read {reads} saw a torn object"
            reads += 1
    finally:
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0 and out.strip() == "20"
    assert reads >= 5
    assert files_on_disk(str(tmp_path)) == ["obj"]


def _read_via_into(backend: object, key: str) -> bytes:
    assert isinstance(backend, LocalBackend)
    buf = bytearray(OBJECT_SIZE)
    return bytes(buf[: backend.read_into(key, buf)])


def test_failed_streamed_write_keeps_the_old_object_and_leaves_no_temp_file(
    backend: LocalBackend,
) -> None:
    backend.write("k", b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new" * 1000
        raise RuntimeError("the producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        backend.write("k", chunks())
    assert backend.read("k") == b"old"
    assert files_on_disk(backend.root) == ["k"]


def test_write_streams_chunks_without_joining_them(backend: LocalBackend) -> None:
    """64 MiB written as 64 chunks never holds more than a few chunks in memory."""

    def chunks() -> Iterator[bytes]:
        for i in range(64):
            yield bytes([i]) * MiB

    tracemalloc.start()
    try:
        backend.write("big", chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"write held {peak / MiB:.0f} MiB at once"
    assert backend.head("big").size == 64 * MiB
    assert backend.read_range("big", 63 * MiB, 63 * MiB + 3) == bytes([63]) * 3


def test_write_refuses_str(backend: LocalBackend) -> None:
    with pytest.raises(TypeError, match="encode"):
        backend.write("k", "text")  # type: ignore[arg-type]
    assert files_on_disk(backend.root) == []


# -- put_if_absent and temp files --------------------------------------------------------------


def test_put_if_absent_leaves_no_temp_file_on_win_or_loss(backend: LocalBackend) -> None:
    backend.put_if_absent("meta/v1.json", b"winner")
    with pytest.raises(ObjectExistsError):
        backend.put_if_absent("meta/v1.json", b"loser")
    assert backend.read("meta/v1.json") == b"winner"
    assert files_on_disk(backend.root) == ["meta/v1.json"]
    assert os.stat(os.path.join(backend.root, "meta", "v1.json")).st_nlink == 1


def test_temp_files_are_never_listed(backend: LocalBackend) -> None:
    """A temp file left by a crashed writer does not show up as an object."""
    backend.write("d/a", b"1")
    Path(backend.root, "d", f"{TEMP_PREFIX}crashed").write_bytes(b"half")
    Path(backend.root, f"{TEMP_PREFIX}crashed").write_bytes(b"half")
    assert [m.key for m in backend.list()] == ["d/a"]
    assert [m.key for m in backend.list("d/.datashard")] == []


@pytest.mark.parametrize("key", [f"{TEMP_PREFIX}x", f"a/{TEMP_PREFIX}x", f"{TEMP_PREFIX}d/x"])
def test_keys_that_look_like_temp_files_are_refused(backend: LocalBackend, key: str) -> None:
    with pytest.raises(InvalidPathError, match="reserves"):
        backend.write(key, b"x")
    with pytest.raises(InvalidPathError):
        backend.read(key)
    assert files_on_disk(backend.root) == []


# -- list order and layout -------------------------------------------------------------------

#: Names where a directory walk in name order differs from key order ("a.txt" < "a/b" because
#: "." < "/", and "a/b" < "a0" because "/" < "0").
WALK_TRAPS = ["a.txt", "a/b", "a/c/d", "a-z", "a0", "a b/x", "A", "é/x", "\U0001f600", "\uff01/y"]


def test_list_is_lexicographic_by_full_key_not_by_directory_walk(backend: LocalBackend) -> None:
    for key in reversed(WALK_TRAPS):
        backend.write(key, key.encode())
    assert [m.key for m in backend.list()] == sorted(WALK_TRAPS)
    assert [m.key for m in backend.list("a")] == sorted(k for k in WALK_TRAPS if k[0] == "a")
    assert [m.key for m in backend.list("a/")] == ["a/b", "a/c/d"]
    assert [m.key for m in backend.list("a/c")] == ["a/c/d"]
    assert [m.size for m in backend.list("a/")] == [3, 5]


def test_list_prefix_has_string_semantics(backend: LocalBackend) -> None:
    for key in ["t/b", "t/bc", "t/b2/x", "t/a", "u"]:
        backend.write(key, b"x")
    assert [m.key for m in backend.list("t/b")] == ["t/b", "t/b2/x", "t/bc"]
    assert [m.key for m in backend.list("t/b2/")] == ["t/b2/x"]
    assert [m.key for m in backend.list("missing/dir/")] == []


def test_delete_prunes_empty_directories_but_never_the_root(backend: LocalBackend) -> None:
    backend.write("x/y/z/obj", b"1")
    backend.write("x/keep", b"2")
    backend.delete("x/y/z/obj")
    assert sorted(os.listdir(backend.root)) == ["x"]
    assert os.listdir(os.path.join(backend.root, "x")) == ["keep"]
    backend.delete_many(["x/keep", "x/missing"])
    assert os.path.isdir(backend.root) and os.listdir(backend.root) == []


_CHURN = textwrap.dedent(
    """
    import sys
    from datashard.storage.config import open_backend
    backend = open_backend(sys.argv[1])
    name, rounds = sys.argv[2], int(sys.argv[3])
    for i in range(rounds):
        key = f"deep/dir/{name}-{i % 3}"
        backend.write(key, name.encode())
        if backend.read(key) != name.encode():
            raise SystemExit(f"read back the wrong bytes for {key}")
        backend.delete(key)
    print(rounds)
    """
)


def test_writers_and_pruning_deletes_in_one_directory_never_fail(tmp_path: Path) -> None:
    """Two processes each write, read back and delete their own keys in one directory 200
    times: a delete pruning the directory under the other's write never surfaces as an error."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHURN, f"file://{tmp_path}", name, "200"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p", "q")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, outputs, strict=True)] == [
        (0, "200"),
        (0, "200"),
    ], [err[-2000:] for _, err in outputs]
    assert files_on_disk(str(tmp_path)) == []
    assert os.listdir(tmp_path) == []


def test_object_and_directory_of_the_same_name_raise_unsupported(backend: LocalBackend) -> None:
    """A file system cannot hold both ``a`` and ``a/b``: say so, do not report a lost race."""
    backend.write("a", b"file")
    with pytest.raises(UnsupportedOperationError, match="both"):
        backend.write("a/b", b"x")
    backend.write("d/e", b"x")
    with pytest.raises(UnsupportedOperationError, match="both"):
        backend.write("d", b"x")
    with pytest.raises(UnsupportedOperationError, match="both"):
        backend.put_if_absent("d", b"x")
    assert files_on_disk(backend.root) == ["a", "d/e"]


def test_etag_changes_on_every_write_and_is_stable_between(backend: LocalBackend) -> None:
    backend.write("k", b"same")
    first = backend.head("k")
    assert backend.head("k").etag == first.etag
    assert next(iter(backend.list("k"))).etag == first.etag
    backend.write("k", b"same")
    assert backend.head("k").etag != first.etag
    assert first.last_modified is not None and first.last_modified.tzinfo is not None


# -- OS errors -------------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import os, resource, signal, sys
    from datashard.storage.config import open_backend
    root, action, as_nobody = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    backend = open_backend("file://" + root)
    if as_nobody:  # after every import: the interpreter may live where nobody cannot read
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    if action == "limit":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        if action == "read":
            backend.read("secret/obj")
        elif action == "list":
            list(backend.list("secret/"))
        else:
            backend.write("open/obj", b"x" * (2 << 20))
    except Exception as exc:
        cause = exc.__cause__
        print(type(exc).__name__, isinstance(exc, PermissionError),
              getattr(cause, "errno", None), str(exc).replace(" ", "_"))
    else:
        print("no-error")
    """
)


def _probe(root: str, action: str, as_nobody: bool) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, root, action, "1" if as_nobody else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.split()


@pytest.fixture
def shared_root() -> Iterator[str]:
    """A root that another user can traverse (tmp_path lives under a 0700 directory)."""
    root = tempfile.mkdtemp(prefix="datashard-perm-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_permission_denied_raises_storage_permission_error(shared_root: str) -> None:
    """A file and a directory the reader may not open give StoragePermissionError (also a
    PermissionError) carrying EACCES. Root bypasses file modes, so as root the probe runs in a
    child process that switches to user ``nobody`` (dropping every capability) before it
    touches the store; otherwise it runs as this user."""
    as_nobody = os.geteuid() == 0
    backend = open_backend(f"file://{shared_root}")
    backend.write("secret/obj", b"private")
    backend.write("open/keep", b"x")
    os.chmod(os.path.join(shared_root, "secret", "obj"), 0o600)
    os.chmod(os.path.join(shared_root, "open"), 0o755 if as_nobody else 0o555)
    if as_nobody:
        os.chown(os.path.join(shared_root, "secret", "obj"), 0, 0)
    read = _probe(shared_root, "read", as_nobody)
    assert read[:3] == ["StoragePermissionError", "True", "13"], read
    assert "'secret/obj'" in read[3]
    write = _probe(shared_root, "write", as_nobody)
    assert write[:3] == ["StoragePermissionError", "True", "13"], write
    os.chmod(os.path.join(shared_root, "secret"), 0o700 if as_nobody else 0o000)
    try:
        listed = _probe(shared_root, "list", as_nobody)
    finally:
        os.chmod(os.path.join(shared_root, "secret"), 0o755)
    assert listed[:3] == ["StoragePermissionError", "True", "13"], listed
    assert files_on_disk(shared_root) == ["open/keep", "secret/obj"]


def test_a_failing_disk_write_raises_storage_error_with_the_os_error_as_cause(
    shared_root: str,
) -> None:
    """A write the OS refuses part-way (here RLIMIT_FSIZE: EFBIG; ENOSPC and EIO take the same
    path) raises a plain StorageError whose cause is the OSError, keeps the old object and
    leaves no temp file."""
    backend = open_backend(f"file://{shared_root}")
    backend.write("open/obj", b"old")
    result = _probe(shared_root, "limit", as_nobody=False)
    assert result[:3] == ["StorageError", "False", "27"], result
    assert "'open/obj'" in result[3]
    assert backend.read("open/obj") == b"old"
    assert files_on_disk(shared_root) == ["open/obj"]


def test_storage_error_keeps_the_os_error_as_cause(backend: LocalBackend) -> None:
    backend.write("a", b"x")
    with pytest.raises(StorageError) as info:
        backend.read("a/b")  # ENOTDIR: a parent is a file
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.key == "a/b"


# -- configuration ---------------------------------------------------------------------------


def test_env_selects_local_with_a_path(tmp_path: Path) -> None:
    env = {"DATASHARD_STORAGE_TYPE": "local", "DATASHARD_LOCAL_PATH": str(tmp_path / "wh")}
    backend = backend_from_env(env)
    assert type(backend) is LocalBackend
    assert backend.root_uri == f"file://{tmp_path}/wh"
    backend.write("t/x", b"1")
    assert (tmp_path / "wh" / "t" / "x").read_bytes() == b"1"


def test_env_default_is_warehouse_under_the_cwd_made_absolute_at_config_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_from_env({})
    rel = config_from_env({"DATASHARD_STORAGE_TYPE": "local", "DATASHARD_LOCAL_PATH": "rel/wh"})
    monkeypatch.chdir("/")
    assert isinstance(config, LocalConfig) and isinstance(rel, LocalConfig)
    assert config.path == str(tmp_path / "datashard-warehouse")
    assert rel.path == str(tmp_path / "rel" / "wh")


def test_env_direct_selects_direct_with_its_settings(tmp_path: Path) -> None:
    backend = backend_from_env(
        {
            "DATASHARD_STORAGE_TYPE": "direct",
            "DATASHARD_DIRECT_PATH": str(tmp_path),
            "DATASHARD_DIRECT_BLOCK_SIZE": "65536",
            "DATASHARD_DIRECT_FALLBACK": "true",
        }
    )
    assert isinstance(backend, DirectBackend)
    assert (backend.config.block_size, backend.config.fallback) == (65536, True)
    assert backend.root_uri == f"direct://{tmp_path}"


def test_unknown_env_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DATASHARD_LOCAL_PAHT"):
        config_from_env({"DATASHARD_STORAGE_TYPE": "local", "DATASHARD_LOCAL_PAHT": "/x"})


@pytest.mark.parametrize(
    ("uri", "path"),
    [("file:///data/wh", "/data/wh"), ("file://localhost/data/wh", "/data/wh"), ("/a/b/", "/a/b")],
)
def test_uri_forms(uri: str, path: str) -> None:
    backend = open_backend(uri)
    assert isinstance(backend, LocalBackend) and backend.root == path
    assert backend.uri_for("t/x") == f"file://{path}/t/x"


@pytest.mark.parametrize("uri", ["file://relative/path", "file://host/abs"])
def test_uri_without_an_absolute_path_is_a_config_error(uri: str) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        open_backend(uri)


def test_unknown_option_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="block_size"):
        open_backend(f"file://{tmp_path}", block_size=4096)


# -- durability switch -----------------------------------------------------------------------


def _fsyncs(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> int:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    backend.write("a/b/one", b"1")
    backend.put_if_absent("a/b/two", b"2")
    backend.delete_many(["a/b/one"])
    monkeypatch.setattr(os, "fsync", real)
    return len(calls)


def test_fsync_is_on_by_default_and_off_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durable = open_backend(f"file://{tmp_path}/durable")
    assert isinstance(durable, LocalBackend) and durable.config.fsync is True
    # files, their directories, and the new parents a write made
    assert _fsyncs(durable, monkeypatch) >= 6
    fast = backend_from_env(
        {
            "DATASHARD_STORAGE_TYPE": "local",
            "DATASHARD_LOCAL_PATH": str(tmp_path / "fast"),
            "DATASHARD_LOCAL_FSYNC": "false",
        }
    )
    assert isinstance(fast, LocalBackend) and fast.config.fsync is False
    assert _fsyncs(fast, monkeypatch) == 0
    assert fast.read("a/b/two") == b"2" and [m.key for m in fast.list("")] == ["a/b/two"]
    with pytest.raises(ConfigError, match=r"LocalConfig\.fsync expects bool, got 'sometimes'"):
        open_backend(f"file://{tmp_path}/x", fsync="sometimes")


def test_a_durable_stream_starts_its_write_back_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 8 MiB written, a durable stream asks the kernel to start writing them out, so the
    fsync at ``close`` waits for little; with ``fsync=False`` it never asks."""
    import datashard.storage.local as local

    asked: list[tuple[int, int]] = []
    real = local.start_writeback

    def recording(fd: int, offset: int, length: int) -> None:
        asked.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(local, "start_writeback", recording)
    data = os.urandom(20 << 20)
    for fsync, expected in ((True, [(0, 8 << 20), (8 << 20, 8 << 20)]), (False, [])):
        asked.clear()
        backend = open_backend(f"file://{tmp_path}/{fsync}", fsync=fsync)
        with backend.open_output("data/f.parquet") as out:
            for start in range(0, len(data), 1 << 20):
                out.write(data[start : start + (1 << 20)])
        assert asked == expected
        assert backend.read("data/f.parquet") == data
