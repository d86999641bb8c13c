"""Retries, limits and lost responses of the S3 backend, against real servers that really fail.

A :class:`~datashard.testing.faultproxy.FaultProxy` sits between the backend and the server
(moto, or Ceph RGW for the conditional PUT) and injects 503s, resets, cut-off bodies and lost
responses; it counts every request, so each test can prove how many attempts were made.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from datashard.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectNotFoundError,
    StoragePermissionError,
    TransientStorageError,
)
from datashard.storage.config import open_backend
from datashard.storage.s3 import S3Backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import S3Server

pytestmark = pytest.mark.s3


def _backend(proxy: FaultProxy, server: S3Server, root: str, **extra: Any) -> S3Backend:
    options: dict[str, Any] = {
        "endpoint_url": proxy.url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
        "retry_attempts": 5,
        "retry_first_delay": 0.001,
        "retry_max_delay": 0.005,
        **extra,
    }
    backend = open_backend(root, **options)
    assert isinstance(backend, S3Backend)
    return backend


@pytest.fixture
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(moto_s3.endpoint_url) as p:
        yield p


@pytest.fixture
def backend(proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str) -> Iterator[S3Backend]:
    with _backend(proxy, moto_s3, f"s3://{moto_bucket}/r") as b:
        b.write("obj", b"payload")
        proxy.clear()
        yield b


# -- what is retried -------------------------------------------------------------------------


def test_slowdown_503s_are_retried_until_success(backend: S3Backend, proxy: FaultProxy) -> None:
    proxy.fail(3, status=503, code="SlowDown", method="GET")
    assert backend.read("obj") == b"payload"
    assert proxy.requests["GET"] == 4
    assert proxy.forwarded["GET"] == 1
    assert backend.gate.retries == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "InternalError"), (503, "ServiceUnavailable"), (400, "RequestTimeout")],
)
def test_server_errors_and_request_timeouts_are_retried(
    backend: S3Backend, proxy: FaultProxy, status: int, code: str
) -> None:
    proxy.fail(2, status=status, code=code, method="PUT")
    backend.write("new", b"x")
    assert proxy.requests["PUT"] == 3
    assert backend.read("new") == b"x"


def test_connection_resets_are_retried_for_reads_and_writes(
    backend: S3Backend, proxy: FaultProxy
) -> None:
    proxy.reset(2, method="PUT")
    proxy.reset(2, method="GET")
    backend.write("w", b"written")
    assert backend.read("w") == b"written"
    assert (proxy.requests["PUT"], proxy.requests["GET"]) == (3, 3)


def test_a_body_cut_mid_download_is_fetched_again(backend: S3Backend, proxy: FaultProxy) -> None:
    data = bytes(range(256)) * 400
    backend.write("big", data)
    proxy.clear()
    proxy.cut_body(after_bytes=1000, n=2, method="GET")
    buf = bytearray(len(data))
    with S3Backend(replace(backend.config, read_threshold=10_000, read_part_size=10_000)) as parted:
        assert parted.read_into("big", buf) == len(data)
    assert buf == data
    assert proxy.requests["GET"] == 11 + 2  # 11 parts, two of them twice


def test_exhausted_attempts_raise_transient_error_with_the_sdk_cause(
    backend: S3Backend, proxy: FaultProxy
) -> None:
    proxy.fail(100, status=503, code="SlowDown")
    with pytest.raises(TransientStorageError, match="'obj'") as info:
        backend.read("obj")
    assert proxy.requests["GET"] == 5  # retry_attempts
    assert isinstance(info.value.__cause__, ClientError)


def test_botocore_itself_does_not_retry(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    with _backend(proxy, moto_s3, f"s3://{moto_bucket}", retry_attempts=1) as b:
        proxy.fail(100, status=503, code="SlowDown")
        with pytest.raises(TransientStorageError):
            b.head("k")
        proxy.reset(100)
        with pytest.raises(TransientStorageError):
            b.read("k")
    assert (proxy.requests["HEAD"], proxy.requests["GET"]) == (1, 1)


def test_lost_responses_of_a_multipart_upload_still_write_the_object(any_s3: S3Server) -> None:
    """A part upload and the completion land but their answers are lost: the retries (the
    completion's may meet NoSuchUpload, which then means done) still give one whole object."""
    mib = 1024 * 1024
    data = bytes(range(256)) * (11 * mib // 256)
    options = {"multipart_threshold": 5 * mib, "part_size": 5 * mib}
    root = f"s3://{any_s3.bucket}/lost-multipart/{threading.get_ident()}-{id(data)}"
    with FaultProxy(any_s3.endpoint_url) as proxy, _backend(proxy, any_s3, root, **options) as b:
        proxy.drop_response(1, method="PUT", path=r"partNumber=2")
        proxy.drop_response(1, method="POST", path=r"uploadId=")
        b.write("big", data)
        assert proxy.injected["drop_response"] == 2
        assert (proxy.requests["PUT"], proxy.requests["POST"]) == (4, 3)
        assert b.read("big") == data


# -- what is not -----------------------------------------------------------------------------


def test_permanent_errors_are_not_retried(backend: S3Backend, proxy: FaultProxy) -> None:
    proxy.fail(100, status=403, code="AccessDenied", method="GET")
    with pytest.raises(StoragePermissionError):
        backend.read("obj")
    assert proxy.requests["GET"] == 1
    proxy.clear()
    with pytest.raises(ObjectNotFoundError):
        backend.read("missing")  # a real 404 from the server
    assert proxy.requests["GET"] == 1
    proxy.clear()
    with pytest.raises(ObjectExistsError):
        backend.put_if_absent("obj", b"again")  # a real 412
    assert proxy.requests["PUT"] == 1


def test_conditional_request_conflict_is_a_lost_race(backend: S3Backend, proxy: FaultProxy) -> None:
    """AWS answers 409 ConditionalRequestConflict while another conditional write of the key is
    in flight: this caller did not create the object."""
    proxy.fail(1, status=409, code="ConditionalRequestConflict", method="PUT")
    with pytest.raises(ObjectExistsError, match="'contended'"):
        backend.put_if_absent("contended", b"x")
    assert (proxy.requests["PUT"], proxy.requests["HEAD"]) == (1, 0)


# -- lost responses of the conditional create ------------------------------------------------


@pytest.fixture(params=["moto", "ceph"])
def any_s3(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(f"{request.param}_s3")
    return server


def test_lost_response_of_a_winning_conditional_put_is_reported_as_a_win(
    any_s3: S3Server,
) -> None:
    """The PUT lands, its response is lost, the retry meets 412 from our own object: win."""
    with FaultProxy(any_s3.endpoint_url) as proxy:
        root = f"s3://{any_s3.bucket}/lost-response/{threading.get_ident()}-{id(proxy)}"
        with _backend(proxy, any_s3, root) as b:
            proxy.drop_response(1, method="PUT")
            b.put_if_absent("v1.json", b"ours")  # no ObjectExistsError
            assert b.read("v1.json") == b"ours"
            assert proxy.forwarded["PUT"] == 2  # the lost one landed; the retry met a 412
            assert proxy.requests["HEAD"] == 1  # one HEAD to read the token back
            with pytest.raises(ObjectExistsError):
                b.put_if_absent("v1.json", b"second caller")


def test_lost_response_is_detected_with_a_single_request_slot(any_s3: S3Server) -> None:
    """With ``max_concurrency=1`` the token check runs inside the PUT's own slot: no deadlock."""
    with FaultProxy(any_s3.endpoint_url) as proxy:
        root = f"s3://{any_s3.bucket}/lost-one-slot/{threading.get_ident()}-{id(proxy)}"
        with _backend(proxy, any_s3, root, max_concurrency=1) as b:
            proxy.drop_response(1, method="PUT")
            done: list[BaseException | None] = []

            def put() -> None:
                try:
                    b.put_if_absent("v1.json", b"ours")
                    done.append(None)
                except BaseException as exc:  # reported below
                    done.append(exc)

            worker = threading.Thread(target=put, daemon=True)
            worker.start()
            worker.join(timeout=60)
            assert done == [None], "put_if_absent hung or failed with one request slot"
            assert b.read("v1.json") == b"ours"
            assert proxy.requests["HEAD"] == 1


def test_lost_response_when_another_writer_won_is_still_a_loss(
    any_s3: S3Server,
) -> None:
    with FaultProxy(any_s3.endpoint_url) as proxy:
        root = f"s3://{any_s3.bucket}/lost-loss/{threading.get_ident()}-{id(proxy)}"
        with _backend(proxy, any_s3, root) as winner, _backend(proxy, any_s3, root) as loser:
            winner.put_if_absent("v1.json", b"winner")
            proxy.drop_response(1, method="PUT")
            with pytest.raises(ObjectExistsError, match="v1.json"):
                loser.put_if_absent("v1.json", b"loser")
            assert winner.read("v1.json") == b"winner"


# -- limits ----------------------------------------------------------------------------------


def test_requests_in_flight_never_exceed_max_concurrency(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    with _backend(proxy, moto_s3, f"s3://{moto_bucket}", max_concurrency=3) as b:
        for i in range(8):
            b.write(f"k{i}", b"v")
        proxy.clear()
        proxy.delay(0.05, n=100, method="GET")
        threads = [threading.Thread(target=b.read, args=(f"k{i % 8}",)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert proxy.requests["GET"] == 16
        assert proxy.max_in_flight == 3
        # one backend's parallel read obeys the same limit
        b.write("big", bytes(100_000))
        proxy.clear()
        with S3Backend(replace(b.config, read_threshold=1000, read_part_size=5000)) as parted:
            proxy.delay(0.02, n=100, method="GET")
            assert len(parted.read("big")) == 100_000
        assert proxy.requests["GET"] == 20
        assert proxy.max_in_flight == 3


def test_write_rate_limit_spaces_out_requests(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    """At 10 writes/s (bursts of 10), no window of t seconds holds more than 10 + 10 t PUTs
    (plus one for arrival jitter). Slowness can only make the bound easier to meet."""
    rate = 10.0
    with _backend(proxy, moto_s3, f"s3://{moto_bucket}", write_rate_limit=rate) as b:
        threads = [threading.Thread(target=b.write, args=(f"k{i}", b"v")) for i in range(25)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    times = sorted(t for t, method, _ in proxy.arrivals if method == "PUT")
    assert len(times) == 25
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= rate + rate * (times[j] - times[i]) + 1, (i, j)


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_endpoint_with_nothing_listening_fails_within_the_deadline_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: 32 tries with sleeps up to 32 s, more than 150 s with no word above DEBUG."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    backend = open_backend(
        "s3://bucket/p",
        endpoint_url=endpoint,
        access_key_id="k",
        secret_access_key="s",
        region="us-east-1",
        path_style=True,
        retry_first_delay=0.2,
        retry_deadline=2.0,
    )
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="datashard.storage.retry"):
        with pytest.raises(TransientStorageError) as info:
            backend.read("obj")
    spent = time.monotonic() - started
    message = str(info.value)
    assert endpoint in message and "s3://bucket/p" in message
    assert "retry_deadline=2 s" in message and "gave up after" in message
    assert spent < 15  # the deadline bounds it (the sleeps alone would have taken minutes)
    retries = [r for r in caplog.records if r.levelno == logging.INFO]
    assert retries and all(endpoint in r.getMessage() for r in retries)
    assert "k" not in {w for r in retries for w in r.getMessage().split()}  # no credentials


def test_a_retry_deadline_that_is_not_positive_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="retry_deadline must be > 0"):
        open_backend("memory://x", retry_deadline=0)
