"""The storage conformance suite (datashard.testing.store) bound to every backend."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.storage.memory import MemoryBackend
from datashard.storage.s3 import S3Backend, S3Config
from datashard.testing.servers import S3Server, new_s3_bucket
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


class TestLocalNoFsync(_FileBackdoor):
    """``file://`` with ``fsync=False``: not crash-durable, but every guarantee a running system
    sees (atomic writes, exclusive creates between processes, listing) must still hold."""

    expected_failures = {"test_key_can_be_an_object_and_a_prefix": _FS_PREFIX_CLASH}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[StorageBackend]:
        root = tmp_path / "root"
        root.mkdir()
        with open_backend(f"file://{root}", fsync=False) as backend:
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


def _s3_settings(server: S3Server) -> dict[str, Any]:
    """Endpoint and credentials of a server fixture, as S3Config options."""
    return {
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
    }


#: endpoint -> a plain boto3 client (the back door), one per server for the session.
_RAW_CLIENTS: dict[str, Any] = {}


class _S3Binding(StorageConformance):
    """An S3 server; the back door is plain boto3 on the same bucket."""

    @pytest.fixture
    def s3_server(self) -> S3Server:
        raise NotImplementedError

    @pytest.fixture
    def root_uri(self, s3_server: S3Server) -> str:
        raise NotImplementedError

    #: Extra S3Config options of this binding.
    options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def backend(self, s3_server: S3Server, root_uri: str) -> Iterator[StorageBackend]:
        _RAW_CLIENTS.setdefault(s3_server.endpoint_url, s3_server.client())
        settings = {**_s3_settings(s3_server), **self.options}
        with open_backend(root_uri, **settings) as backend:
            yield backend
        # Objects stay under the test's own bucket or prefix; no other test reads them.

    @pytest.fixture
    def offline_backend(self, backend: StorageBackend) -> Iterator[StorageBackend]:
        """A twin pointed at a closed port, with one attempt and short timeouts."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        assert isinstance(backend.config, S3Config)
        config = replace(
            backend.config,
            endpoint_url=f"http://127.0.0.1:{port}",
            retry_attempts=1,
            connect_timeout=0.5,
            read_timeout=0.5,
        )
        with S3Backend(config) as twin:
            yield twin

    def _raw(self, backend: StorageBackend, key: str) -> tuple[Any, dict[str, str]]:
        config: Any = backend.config
        full = f"{config.prefix}/{key}" if config.prefix else key
        return _RAW_CLIENTS[config.endpoint_url], {"Bucket": config.bucket, "Key": full}

    def raw_put(self, backend: StorageBackend, key: str, data: bytes) -> None:
        client, where = self._raw(backend, key)
        client.put_object(Body=data, **where)

    def raw_get(self, backend: StorageBackend, key: str) -> bytes:
        client, where = self._raw(backend, key)
        body: bytes = client.get_object(**where)["Body"].read()
        return body

    def pending_uploads(self, backend: StorageBackend) -> int:
        """Multipart uploads begun and neither completed nor aborted under the root."""
        config: Any = backend.config
        client = _RAW_CLIENTS[config.endpoint_url]
        prefix = f"{config.prefix}/" if config.prefix else ""
        found = client.list_multipart_uploads(Bucket=config.bucket, Prefix=prefix)
        return len(found.get("Uploads", []))


@pytest.mark.s3
class TestS3Moto(_S3Binding):
    """``s3://`` on moto server over loopback: a fresh bucket per test, objects at its root."""

    expected_failures = {
        "test_control_characters_in_keys_round_trip": (
            "moto server answers 404 to a PutObject whose key holds a newline, from plain boto3 "
            "too (an emulator bug; Ceph RGW stores such keys)"
        ),
    }

    @pytest.fixture
    def s3_server(self, moto_s3: S3Server) -> S3Server:
        return moto_s3

    @pytest.fixture
    def root_uri(self, s3_server: S3Server) -> str:
        return f"s3://{new_s3_bucket(s3_server, 'conformance')}"


@pytest.mark.s3
class TestS3Ceph(_S3Binding):
    """``s3://`` on Ceph RADOS Gateway over loopback: a fresh prefix per test in the server's
    bucket. Small part sizes, so the 10-12 MiB objects of the suite go through many concurrent
    range GETs and multipart uploads on a real server (moto runs the defaults)."""

    options = {
        "read_threshold": 1 << 20,
        "read_part_size": 1 << 20,
        "multipart_threshold": 5 << 20,
        "part_size": 5 << 20,
    }

    @pytest.fixture
    def s3_server(self, ceph_s3: S3Server) -> S3Server:
        return ceph_s3

    @pytest.fixture
    def root_uri(self, s3_server: S3Server) -> str:
        return f"s3://{s3_server.bucket}/conformance/{uuid.uuid4().hex}"
