"""Azure and GCS streamed writes (``open_output``): one plain upload when the stream ends within a
block, else staged blocks (Azure) or a resumable upload (GCS) started when the first block is full;
block buffers bounded per backend; nothing published on failure.

On Azurite and fake-gcs-server over loopback, behind a proxy that counts requests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.storage.part_stream import PartStream
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import AzureServer, GCSServer

MiB = 1024 * 1024
BLOCK = 1 * MiB  # small blocks: many of them in a few MiB (GCS needs a multiple of 256 KiB)


class Boom(Exception):
    """The producer of a stream failed."""


@pytest.fixture(params=["azure", "gcs"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxied(
    kind: str, request: pytest.FixtureRequest
) -> Iterator[tuple[StorageBackend, FaultProxy]]:
    if kind == "azure":
        azurite: AzureServer = request.getfixturevalue("azurite")
        container: str = request.getfixturevalue("azure_container")
        with FaultProxy(azurite.endpoint.rsplit("/", 1)[0]) as proxy:
            backend = open_backend(
                f"az://{container}/root",
                account_name=azurite.account_name,
                account_key=azurite.account_key,
                account_url=f"{proxy.url}/{azurite.account_name}",
                block_size=BLOCK,
                **_limits(),
            )
            with backend:
                yield backend, proxy
        return
    gcs: GCSServer = request.getfixturevalue("fake_gcs")
    bucket: str = request.getfixturevalue("fake_gcs_bucket")
    with FaultProxy(gcs.endpoint) as proxy:
        backend = open_backend(
            f"gs://{bucket}/root",
            endpoint=proxy.url,
            project=gcs.project,
            anonymous=True,
            chunk_size=BLOCK,
            **_limits(),
        )
        with backend:
            yield backend, proxy


def _limits() -> dict[str, Any]:
    return {"retry_first_delay": 0.01, "retry_max_delay": 0.1, "retry_attempts": 3}


def _requests(proxy: FaultProxy) -> tuple[int, int]:
    return proxy.requests["POST"], proxy.requests["PUT"]


@pytest.mark.parametrize(
    ("size", "blocks"),
    [(0, 0), (1000, 0), (BLOCK, 0), (BLOCK + 1, 2), (6 * BLOCK + 7, 7)],
    ids=["empty", "1kB", "exactly-a-block", "a-block-and-a-byte", "seven-blocks"],
)
def test_stream_is_one_upload_within_a_block_else_blocks(
    proxied: tuple[StorageBackend, FaultProxy], kind: str, size: int, blocks: int
) -> None:
    backend, proxy = proxied
    data = os.urandom(size)
    proxy.clear()
    with backend.open_output("obj") as out:
        for start in range(0, size, 300_007):
            out.write(data[start : start + 300_007])
    if blocks == 0:  # Put Blob (a PUT) on Azure; a one-request upload (a POST) on GCS
        expected = (0, 1) if kind == "azure" else (1, 0)
    else:  # Azure: Put Block each, then Put Block List; GCS: start (POST), then a PUT each
        expected = (0, blocks + 1) if kind == "azure" else (1, blocks)
    assert _requests(proxy) == expected
    assert backend.read("obj") == data
    assert backend.write_budget.held == 0  # type: ignore[attr-defined]


def test_streams_together_hold_at_most_the_write_buffer(kind: str, request: Any) -> None:
    options = {"block_size": BLOCK} if kind == "azure" else {"chunk_size": BLOCK}
    backend = _plain(kind, request, write_buffer_size=3 * BLOCK, **options)
    chunk = os.urandom(BLOCK // 4)
    with backend:
        budget = backend.write_budget  # type: ignore[attr-defined]
        outs = [backend.open_output(f"obj-{i}") for i in range(2)]
        for _ in range(24):  # six blocks each, written in turns
            for out in outs:
                out.write(chunk)
                assert isinstance(out, PartStream)
                assert out.buffered_bytes <= 3 * BLOCK
        for out in outs:
            out.close()
        assert budget.peak <= 3 * BLOCK
        assert budget.held == 0
        assert backend.read("obj-1") == chunk * 24


def test_stream_failing_mid_upload_publishes_nothing(kind: str, request: Any) -> None:
    options = {"block_size": BLOCK} if kind == "azure" else {"chunk_size": BLOCK}
    with _plain(kind, request, **options) as backend:
        backend.write("obj", b"old")
        with pytest.raises(Boom), backend.open_output("obj") as out:
            out.write(os.urandom(3 * BLOCK + 1))  # blocks are out
            raise Boom("the producer failed")
        assert backend.read("obj") == b"old"
        assert [m.key for m in backend.list()] == ["obj"]
        assert backend.write_budget.held == 0  # type: ignore[attr-defined]


def _plain(kind: str, request: Any, **options: Any) -> StorageBackend:
    if kind == "azure":
        azurite: AzureServer = request.getfixturevalue("azurite")
        container: str = request.getfixturevalue("azure_container")
        return open_backend(
            f"az://{container}/root",
            account_name=azurite.account_name,
            account_key=azurite.account_key,
            account_url=azurite.endpoint,
            **_limits(),
            **options,
        )
    gcs: GCSServer = request.getfixturevalue("fake_gcs")
    bucket: str = request.getfixturevalue("fake_gcs_bucket")
    return open_backend(
        f"gs://{bucket}/root",
        endpoint=gcs.endpoint,
        project=gcs.project,
        anonymous=True,
        **_limits(),
        **options,
    )
