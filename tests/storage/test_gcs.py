"""``gs://`` behaviour beyond the conformance suite, on gcp-storage-emulator over loopback: the
precondition datashard sends (read from the emulator's request log, since the emulator ignores
it), credentials and their secrecy, missing buckets, refused requests, resumable uploads,
multi-part reads, retries through a fault-injecting proxy, pickling and the environment."""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datashard.errors import (
    BucketNotFoundError,
    ConfigError,
    StorageError,
    StoragePermissionError,
)
from datashard.storage.config import backend_from_env, open_backend
from datashard.storage.gcs import TOKEN_METADATA, GCSBackend
from datashard.storage.gcs_config import GCSConfig
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import GCSServer
from datashard.testing.store import data_of

KiB = 1024
MiB = 1024 * KiB
TOKEN = "ya29.not-a-real-token-but-secret-all-the-same"


def _backend(server: GCSServer, bucket: str, **options: Any) -> GCSBackend:
    settings: dict[str, Any] = {
        "endpoint": server.endpoint,
        "project": server.project,
        "anonymous": True,
        "retry_first_delay": 0.01,
        "retry_max_delay": 0.05,
        "retry_attempts": 4,
    }
    settings.update(options)
    backend = open_backend(f"gs://{bucket}/t", **settings)
    assert isinstance(backend, GCSBackend)
    return backend


@contextlib.contextmanager
def _open(server: GCSServer, bucket: str, **options: Any) -> Iterator[GCSBackend]:
    backend = _backend(server, bucket, **options)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def proxy(gcs_emulator: GCSServer) -> Iterator[FaultProxy]:
    with FaultProxy(gcs_emulator.endpoint) as p:
        yield p


def _log_lines(server: GCSServer, bucket: str) -> list[str]:
    """The emulator's request lines that touch ``bucket``."""
    text = Path(server.request_log_path).read_text(errors="replace")
    return [
        line for line in text.splitlines() if f"/b/{bucket}/" in line or f"/b/{bucket}?" in line
    ]


# -- the precondition --------------------------------------------------------------------------


def test_put_if_absent_sends_if_generation_match_zero(
    gcs_emulator: GCSServer, gcs_bucket: str
) -> None:
    """The emulator ignores preconditions, so prove from its request log what real GCS would
    enforce: every put_if_absent upload carries ifGenerationMatch=0, and plain writes do not."""
    with _open(gcs_emulator, gcs_bucket, single_put_size=256 * KiB, chunk_size=256 * KiB) as b:
        b.write("plain", b"overwrite me")
        plain = [line for line in _log_lines(gcs_emulator, gcs_bucket) if "upload" in line]
        b.put_if_absent("meta/v1.json", b"{}")
        b.put_if_absent("meta/big.json", data_of(600 * KiB, seed=1))
        assert b.read("meta/big.json") == data_of(600 * KiB, seed=1)
    lines = [line for line in _log_lines(gcs_emulator, gcs_bucket) if "upload" in line]
    creates = lines[len(plain) :]
    assert plain and all("ifGenerationMatch" not in line for line in plain)
    multipart = [line for line in creates if "POST" in line and "uploadType=multipart" in line]
    resumable = [line for line in creates if "POST" in line and "uploadType=resumable" in line]
    assert len(multipart) == 1 and "ifGenerationMatch=0" in multipart[0], creates
    assert len(resumable) == 1 and "ifGenerationMatch=0" in resumable[0], creates


def test_put_if_absent_tags_the_object_with_its_token(
    gcs_emulator: GCSServer, gcs_bucket: str
) -> None:
    """The token in the object metadata is what lets a retry after a lost response tell its
    own first attempt (a win) from another writer's object (a loss)."""
    with _open(gcs_emulator, gcs_bucket) as backend:
        backend.put_if_absent("meta/v1.json", b"{}")
    blob = gcs_emulator.client().bucket(gcs_bucket).get_blob("t/meta/v1.json")
    token = (blob.metadata or {}).get(TOKEN_METADATA, "")
    assert len(token) == 32
    assert backend._carries_token("meta/v1.json", token)
    assert not backend._carries_token("meta/v1.json", "0" * 32)
    assert not backend._carries_token("meta/missing.json", token)


# -- credentials -------------------------------------------------------------------------------


def test_token_never_appears_in_repr_errors_or_logs(
    gcs_emulator: GCSServer, gcs_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[StorageError] = []
    with _open(gcs_emulator, gcs_bucket, anonymous=False, token=TOKEN) as backend:
        backend.write("k", b"value")
        assert backend.read("k") == b"value"
        for call in (lambda: backend.read("missing"), lambda: backend.head("missing")):
            with pytest.raises(StorageError) as info:
                call()
            errors.append(info.value)
        texts = [repr(backend), str(backend), repr(backend.config), caplog.text]
        texts += [str(e) for e in errors] + [repr(e) for e in errors]
    for text in texts:
        assert TOKEN not in text
        assert TOKEN[5:25] not in text


def test_bad_service_account_json_error_hides_its_contents(gcs_bucket: str) -> None:
    secret = '{"type": "service_account", "private_key": "-----BEGIN SECRET-----"}'
    backend = open_backend(f"gs://{gcs_bucket}", credentials_json=secret)
    assert "BEGIN SECRET" not in repr(backend.config)
    with pytest.raises(ConfigError) as info:
        backend.read("k")
    assert "BEGIN SECRET" not in str(info.value)
    assert "credentials_json" in str(info.value)
    missing = open_backend(f"gs://{gcs_bucket}", service_account_file="/nonexistent/key.json")
    with pytest.raises(ConfigError, match="/nonexistent/key.json"):
        missing.head("k")


def test_refused_requests_are_permission_errors_not_retried(
    gcs_emulator: GCSServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    """The emulator checks no credentials; a proxy answers 401/403 as real GCS would."""
    with _open(gcs_emulator, gcs_bucket, endpoint=proxy.url) as backend:
        backend.write("k", b"x")
        calls: dict[str, Callable[[], object]] = {
            "read": lambda: backend.read("k"),
            "head": lambda: backend.head("k"),
            "write": lambda: backend.write("k", b"y"),
            "put_if_absent": lambda: backend.put_if_absent("new", b"y"),
            "list": lambda: list(backend.list()),
        }
        for status in (401, 403):
            for name, call in calls.items():
                proxy.fail(n=1, status=status, code="AccessDenied")
                with pytest.raises(StoragePermissionError) as info:
                    call()
                assert isinstance(info.value, PermissionError), name
                assert info.value.__cause__ is not None, name
                if status == 403:  # a 401 makes google-auth try to refresh the credentials
                    assert "HTTP 403" in str(info.value), name
        assert backend._gate.retries == 0
        assert backend.read("k") == b"x"


def test_missing_bucket_is_bucket_not_found_naming_it(gcs_emulator: GCSServer) -> None:
    with _open(gcs_emulator, "no-such-bucket-7") as backend:
        calls: dict[str, Callable[[], object]] = {
            "read": lambda: backend.read("k"),
            "head": lambda: backend.head("k"),
            "write": lambda: backend.write("k", b"x"),
            "put_if_absent": lambda: backend.put_if_absent("k", b"x"),
            "list": lambda: list(backend.list()),
            "delete": lambda: backend.delete("k"),
            "delete_many": lambda: backend.delete_many(["k", "l"]),
        }
        for name, call in calls.items():
            with pytest.raises(BucketNotFoundError) as info:
                call()
            assert info.value.bucket == "no-such-bucket-7", name
            assert "no-such-bucket-7" in str(info.value), name


def test_missing_sdk_raises_config_error_naming_the_extra() -> None:
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('google.cloud', 'google.auth')):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from datashard.errors import ConfigError\n"
        "from datashard.storage.config import open_backend\n"
        "b = open_backend('gs://box/p', anonymous=True)\n"
        "try:\n"
        "    b.read('k')\n"
        "except ConfigError as exc:\n"
        "    print('ConfigError:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "pip install google-cloud-storage" in out


# -- uploads -----------------------------------------------------------------------------------


def _chunks(data: bytes) -> Iterator[bytes]:
    sizes = [1, 100 * KiB, 7, 300 * KiB + 3, 5]
    start, n = 0, 0
    while start < len(data):
        size = sizes[n % len(sizes)]
        yield data[start : start + size]
        start, n = start + size, n + 1


def test_chunk_iterable_is_a_resumable_upload(gcs_emulator: GCSServer, gcs_bucket: str) -> None:
    data = data_of(MiB + 300 * KiB + 11, seed=3)
    with _open(gcs_emulator, gcs_bucket, chunk_size=256 * KiB) as backend:
        backend.write("big.bin", _chunks(data))
        assert backend.read("big.bin") == data
        assert backend.head("big.bin").size == len(data)
    lines = [
        line for line in _log_lines(gcs_emulator, gcs_bucket) if "uploadType=resumable" in line
    ]
    assert sum("POST" in line for line in lines) == 1
    assert sum("PUT" in line for line in lines) == math.ceil(len(data) / (256 * KiB))


def test_resumable_upload_resumes_after_a_lost_chunk_response(
    gcs_emulator: GCSServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    data = data_of(MiB + 5, seed=4)
    options = {"endpoint": proxy.url, "chunk_size": 256 * KiB, "single_put_size": 256 * KiB}
    with _open(gcs_emulator, gcs_bucket, **options) as backend:
        proxy.drop_response(n=1, method="PUT")  # the chunk lands; its answer is lost
        backend.write("a.bin", data)
        assert backend.read("a.bin") == data
        # the second chunk never arrives (not the first: the emulator then claims to hold one
        # byte, where real GCS answers the status query without a Range)
        proxy.call(lambda method, path: proxy.reset(n=1, method="PUT"), n=1, method="PUT")
        backend.write("b.bin", _chunks(data))
        assert backend.read("b.bin") == data
        assert backend._gate.retries == 2


# -- reads -------------------------------------------------------------------------------------


def test_read_into_across_part_boundaries(gcs_emulator: GCSServer, gcs_bucket: str) -> None:
    part = 64 * KiB
    data = data_of(10 * part + 37, seed=5)
    with _open(gcs_emulator, gcs_bucket, part_size=part, max_concurrency=4) as backend:
        backend.write("obj", data)
        assert backend.read("obj") == data
        for offset, length in [(0, len(data)), (1, 3 * part), (part - 1, 2), (5 * part + 3, 10**6)]:
            buf = bytearray(length)
            expected = data[offset : offset + length]
            assert backend.read_into("obj", buf, offset=offset) == len(expected)
            assert bytes(buf[: len(expected)]) == expected
        ranges = [(part - 5, 3 * part + 5), (0, 1), (9 * part, 11 * part)]
        assert backend.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
        assert backend.read_tail("obj", part + 1) == (data[-(part + 1) :], len(data))


def test_parts_run_concurrently_within_max_concurrency(
    gcs_emulator: GCSServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    part = 64 * KiB
    data = data_of(32 * part, seed=9)
    options = {"endpoint": proxy.url, "part_size": part, "max_concurrency": 3}
    with _open(gcs_emulator, gcs_bucket, **options) as backend:
        backend.write("obj", data)
        proxy.clear()
        buf = bytearray(len(data))
        assert backend.read_into("obj", buf) == len(data) and buf == data
        assert proxy.requests["GET"] == 32
        assert 1 < proxy.max_in_flight <= 3


def test_throttling_and_cut_downloads_are_retried(
    gcs_emulator: GCSServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    data = data_of(300 * KiB, seed=8)
    with _open(gcs_emulator, gcs_bucket, endpoint=proxy.url) as backend:
        backend.write("obj", data)
        proxy.fail(n=2, status=503, code="SlowDown", method="GET")
        assert backend.read("obj") == data
        proxy.fail(n=1, status=429, code="SlowDown", method="GET")
        assert backend.head("obj").size == len(data)
        proxy.cut_body(after_bytes=1000, n=1, method="GET")
        assert backend.read("obj") == data
        proxy.reset(n=1, method="POST")
        backend.write("obj2", data)
        assert backend.read("obj2") == data
        assert backend._gate.retries == 5


# -- pickling, configuration -------------------------------------------------------------------


def test_pickled_backend_carries_config_not_clients(
    gcs_emulator: GCSServer, gcs_bucket: str
) -> None:
    with _open(gcs_emulator, gcs_bucket) as backend:
        backend.write("k", b"v")
        blob = pickle.dumps(backend)
    clone = pickle.loads(blob)
    assert clone._client is None
    assert clone.read("k") == b"v"
    assert len(blob) < 4000
    clone.close()


def test_backend_from_env(gcs_emulator: GCSServer, gcs_bucket: str) -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "gcs",
        "DATASHARD_GCS_BUCKET": gcs_bucket,
        "DATASHARD_GCS_PREFIX": "from/env",
        "DATASHARD_GCS_ENDPOINT": gcs_emulator.endpoint,
        "DATASHARD_GCS_ANONYMOUS": "true",
        "DATASHARD_GCS_PART_SIZE": str(MiB),
    }
    with backend_from_env(env) as backend:
        assert isinstance(backend, GCSBackend)
        assert backend.root_uri == f"gs://{gcs_bucket}/from/env"
        assert backend.config.part_size == MiB
        backend.write("x", b"env")
        assert backend.read("x") == b"env"
    with pytest.raises(ConfigError, match="DATASHARD_GCS_COLOUR"):
        backend_from_env({**env, "DATASHARD_GCS_COLOUR": "blue"})
    with pytest.raises(ConfigError, match="256 KiB"):
        backend_from_env({**env, "DATASHARD_GCS_CHUNK_SIZE": "1000"})


def test_storage_emulator_host_is_honoured(
    gcs_emulator: GCSServer, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like Google's clients: the endpoint, and anonymous access when nothing else is set."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint.removeprefix("http://"))
    backend = open_backend(f"gs://{gcs_bucket}/emu", project=gcs_emulator.project)
    assert isinstance(backend.config, GCSConfig) and backend.config.endpoint is None
    with backend:
        backend.write("x", b"emulated")
        assert backend.read("x") == b"emulated"
        assert [m.key for m in backend.list()] == ["x"]
