"""S3 streamed writes (``open_output``, ``write`` of an iterable): one PutObject when the stream
ends within a part, a multipart upload started as soon as the first part is full, part buffers
bounded per backend, and nothing left behind (no object, no unfinished upload) on failure.

Both servers, over loopback, behind a proxy that counts requests: moto, and Ceph RGW.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from datashard.errors import StoragePermissionError
from datashard.storage.config import open_backend
from datashard.storage.part_stream import FIRST_BUFFER
from datashard.storage.s3 import S3Backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import S3Server

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 takes


class Boom(Exception):
    """The producer of a stream failed."""


@pytest.fixture(params=["moto", "ceph"])
def server(request: pytest.FixtureRequest) -> tuple[S3Server, str]:
    s3: S3Server = request.getfixturevalue(f"{request.param}_s3")
    bucket: str = request.getfixturevalue(f"{request.param}_bucket")
    return s3, bucket


@pytest.fixture
def proxy(server: tuple[S3Server, str]) -> Iterator[FaultProxy]:
    with FaultProxy(server[0].endpoint_url) as p:
        yield p


def _backend(proxy: FaultProxy, server: tuple[S3Server, str], **extra: Any) -> S3Backend:
    s3, bucket = server
    options = {
        "endpoint_url": proxy.url,
        "access_key_id": s3.access_key_id,
        "secret_access_key": s3.secret_access_key,
        "region": s3.region,
        "path_style": True,
        "part_size": PART,
        "retry_first_delay": 0.001,
        "retry_max_delay": 0.01,
        **extra,
    }
    backend = open_backend(f"s3://{bucket}/root", **options)
    assert isinstance(backend, S3Backend)
    return backend


def _pending_uploads(server: tuple[S3Server, str]) -> list[Any]:
    s3, bucket = server
    uploads: list[Any] = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def _stream(backend: S3Backend, key: str, data: bytes, piece: int = 1_000_003) -> None:
    with backend.open_output(key) as out:
        for start in range(0, len(data), piece):
            out.write(data[start : start + piece])


@pytest.mark.parametrize(
    ("size", "posts", "puts"),
    [(0, 0, 1), (1000, 0, 1), (PART, 0, 1), (PART + 1, 2, 2), (4 * PART + 7, 2, 5)],
    ids=["empty", "1kB", "exactly-a-part", "a-part-and-a-byte", "five-parts"],
)
def test_stream_is_one_put_within_a_part_else_multipart(
    proxy: FaultProxy, server: tuple[S3Server, str], size: int, posts: int, puts: int
) -> None:
    data = os.urandom(size)
    with _backend(proxy, server) as backend:
        proxy.clear()
        _stream(backend, "obj", data)
        # CreateMultipartUpload and CompleteMultipartUpload are POSTs; PutObject/UploadPart PUTs
        assert (proxy.requests["POST"], proxy.requests["PUT"]) == (posts, puts)
        assert backend.read("obj") == data
        assert backend.head("obj").size == size
        assert backend.write_budget.held == 0  # every buffer given back
    assert _pending_uploads(server) == []


def test_multipart_upload_starts_when_the_first_part_is_full(
    proxy: FaultProxy, server: tuple[S3Server, str]
) -> None:
    with _backend(proxy, server) as backend:
        proxy.clear()
        out = backend.open_output("obj")
        out.write(os.urandom(PART))
        assert out.buffered_bytes == PART  # one part held, nothing sent yet
        assert sum(proxy.requests.values()) == 0
        out.write(b"x")  # more than a part: the first one goes now
        assert proxy.requests["POST"] == 1
        assert out.buffered_bytes <= 2 * PART
        out.close()
        assert backend.head("obj").size == PART + 1


def test_a_small_object_holds_a_small_buffer_grown_to_a_part_only_if_needed(
    proxy: FaultProxy, server: tuple[S3Server, str]
) -> None:
    data = os.urandom(PART + 7)
    with _backend(proxy, server) as backend:
        proxy.clear()
        small = backend.open_output("small")
        small.write(b"a" * 1000)
        assert small.buffered_bytes == FIRST_BUFFER  # not a whole part for 1,000 bytes
        big = backend.open_output("big")
        for i in range(0, PART, 100_000):  # the first part, in pieces: the buffer grows
            big.write(data[i : min(i + 100_000, PART)])
            assert FIRST_BUFFER <= big.buffered_bytes <= PART
        assert big.buffered_bytes == PART
        assert sum(proxy.requests.values()) == 0  # nothing sent until a part is full
        big.write(data[PART:])
        assert proxy.requests["POST"] == 1  # the multipart upload began
        small.close()
        big.close()
        assert backend.read("small") == b"a" * 1000
        assert backend.read("big") == data
        assert backend.write_budget.held == 0


def test_streams_together_hold_at_most_the_write_buffer(
    proxy: FaultProxy, server: tuple[S3Server, str]
) -> None:
    chunk = os.urandom(MiB)
    with _backend(proxy, server, write_buffer_size=3 * PART) as backend:
        budget = backend.write_budget
        outs = [backend.open_output(f"obj-{i}") for i in range(2)]
        for _ in range(6 * PART // MiB):  # six parts each, written in turns
            for out in outs:
                out.write(chunk)
                assert out.buffered_bytes <= 3 * PART
                assert budget.held <= 3 * PART
        for out in outs:
            out.close()
        assert budget.peak <= 3 * PART
        assert budget.held == 0
        for i in range(2):
            assert backend.read(f"obj-{i}") == chunk * (6 * PART // MiB)


def test_stream_failing_mid_upload_leaves_no_object_and_no_upload(
    proxy: FaultProxy, server: tuple[S3Server, str]
) -> None:
    with _backend(proxy, server) as backend:
        with pytest.raises(Boom), backend.open_output("obj") as out:
            out.write(os.urandom(3 * PART + 1))  # the upload has begun: parts are out
            assert proxy.requests["POST"] == 1
            raise Boom("the producer failed")
        assert not backend.exists("obj")
        assert backend.write_budget.held == 0
    assert _pending_uploads(server) == []


def test_part_refused_by_the_server_aborts_the_stream(
    proxy: FaultProxy, server: tuple[S3Server, str]
) -> None:
    proxy.fail(1, status=403, code="AccessDenied", method="PUT", path=r"partNumber=2")
    with _backend(proxy, server) as backend:
        with pytest.raises(StoragePermissionError, match="'obj'"):
            _stream(backend, "obj", os.urandom(3 * PART + 1))
        assert not backend.exists("obj")
        assert backend.write_budget.held == 0
    assert _pending_uploads(server) == []


def test_iterable_that_raises_publishes_nothing(
    proxy: FaultProxy, server: tuple[S3Server, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        yield os.urandom(2 * PART)
        raise Boom("the source failed")

    with _backend(proxy, server) as backend:
        backend.write("obj", b"old")
        with pytest.raises(Boom):
            backend.write("obj", chunks())
        assert backend.read("obj") == b"old"
    assert _pending_uploads(server) == []
