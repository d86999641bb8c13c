"""The storage conformance suite (datashard.testing.store) bound to every backend."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.storage.memory import MemoryBackend
from datashard.testing.store import StorageConformance


class TestMemory(StorageConformance):
    """``memory://``: objects live in this process, so its race runs 16 threads and a pickled
    copy in another process sees an empty store. The back door is a second backend on the same
    named store (there is nothing under the backend to reach more directly)."""

    race_mode = "thread"
    shared_across_processes = False

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        backend = open_backend(f"memory://conformance-{uuid.uuid4().hex}")
        assert isinstance(backend, MemoryBackend)
        yield backend
        backend.clear()
        backend.close()


def _root_of(backend: StorageBackend) -> Path:
    return Path(backend.config.path)  # type: ignore[attr-defined]


class _FileBackdoor(StorageConformance):
    """Back door for the file-system backends: plain file I/O under the root directory."""

    def raw_put(self, backend: StorageBackend, key: str, data: bytes) -> None:
        path = _root_of(backend) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def raw_get(self, backend: StorageBackend, key: str) -> bytes:
        return (_root_of(backend) / key).read_bytes()

    @pytest.fixture
    def offline_backend(self, backend: StorageBackend) -> Iterator[StorageBackend]:
        """A twin whose root is a regular file: any file-system call under it fails."""
        root = _root_of(backend).with_name(_root_of(backend).name + "-offline")
        root.mkdir()
        twin = type(backend)(replace(backend.config, path=str(root)))  # type: ignore[call-arg]
        root.rmdir()
        root.write_bytes(b"not a directory")
        yield twin
        twin.close()
        root.unlink()


#: The file systems cannot hold an object at a key that is also a prefix of other keys.
_FS_PREFIX_CLASH = (
    "a POSIX file system cannot hold a file 'a/b' and a directory 'a/b' at once; local.py "
    "documents UnsupportedOperationError for this"
)


class TestLocal(_FileBackdoor):
    """``file://`` on pytest's tmp_path."""

    expected_failures = {"test_key_can_be_an_object_and_a_prefix": _FS_PREFIX_CLASH}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[StorageBackend]:
        root = tmp_path / "root"
        root.mkdir()
        with open_backend(f"file://{root}") as backend:
            yield backend


def _disk_dir() -> Path:
    """A directory on a disk-backed file system (O_DIRECT is refused by tmpfs, where /tmp is)."""
    for candidate in (Path("/var/tmp"), Path(__file__).resolve().parents[2] / ".servers"):
        try:
            kind = subprocess.run(
                ["stat", "-f", "-c", "%T", str(candidate)], capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            continue
        if kind and kind not in ("tmpfs", "ramfs"):
            return candidate
    raise RuntimeError("no disk-backed directory for direct:// tests (tried /var/tmp, .servers)")


class TestDirect(_FileBackdoor):
    """``direct://`` (O_DIRECT reads) on a disk-backed directory under /var/tmp."""

    expected_failures = {"test_key_can_be_an_object_and_a_prefix": _FS_PREFIX_CLASH}

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        base = Path(tempfile.mkdtemp(prefix="datashard-direct-", dir=_disk_dir()))
        root = base / "root"
        root.mkdir()
        try:
            with open_backend(f"direct://{root}") as backend:
                yield backend
        finally:
            shutil.rmtree(base, ignore_errors=True)
