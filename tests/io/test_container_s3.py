"""The lazy container on a real S3 server (Ceph RGW): HTTP requests counted at a loopback proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datashard.errors import StorageError
from datashard.io.container import LazyReader, LazyWriter
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import S3Server

pytestmark = pytest.mark.s3


def _options(server: S3Server, endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
        "retry_attempts": 2,
        "retry_first_delay": 0.05,
    }


@pytest.fixture
def proxy(ceph_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(ceph_s3.endpoint_url) as p:
        yield p


@pytest.fixture
def s3(ceph_s3: S3Server, ceph_bucket: str, proxy: FaultProxy) -> Iterator[StorageBackend]:
    backend = open_backend(f"s3://{ceph_bucket}", **_options(ceph_s3, proxy.url))
    yield backend
    backend.close()


def _gets_and_heads(proxy: FaultProxy) -> tuple[int, int]:
    return proxy.requests["GET"], proxy.requests["HEAD"]


_RUNS: dict[str, Any] = {
    "runs": [{"loss": i / 10, "weights": os.urandom(20_000)} for i in range(50)],
    "meta": {"name": "exp", "tags": ["a", "b"]},
    **{f"sample-{i}": os.urandom(1024) for i in range(1000)},
}


def test_cold_lookup_costs_two_range_gets_and_nothing_else(
    s3: StorageBackend, proxy: FaultProxy
) -> None:
    with LazyWriter(s3, "runs.msgc") as w:
        w.write(_RUNS)
    proxy.clear()
    with LazyReader(s3, "runs.msgc") as r:  # suffix GET (footer + indexes), then the value
        assert r["runs"][7]["loss"] == 0.7
    assert sum(proxy.requests.values()) == proxy.requests["GET"] == 2

    size = s3.head("runs.msgc").size
    proxy.clear()
    with LazyReader(s3, "runs.msgc", size=size, tail_size=64 * 1024) as r:
        assert r["sample-500"] == _RUNS["sample-500"]
    assert sum(proxy.requests.values()) == proxy.requests["GET"] == 2


def test_cold_lookup_in_a_10k_entry_root_costs_two_range_gets(
    s3: StorageBackend, proxy: FaultProxy
) -> None:
    samples = {f"key-{i:06d}": os.urandom(1024) for i in range(10_000)}
    with LazyWriter(s3, "10k.msgc") as w:
        w.write(samples)
    proxy.clear()
    with LazyReader(s3, "10k.msgc") as r:
        assert r["key-005000"] == samples["key-005000"]
    assert sum(proxy.requests.values()) == proxy.requests["GET"] == 2


def test_warm_reader_costs_one_range_get_per_value(s3: StorageBackend, proxy: FaultProxy) -> None:
    with LazyWriter(s3, "warm.msgc") as w:
        w.write(_RUNS)
    with LazyReader(s3, "warm.msgc", tail_size=64 * 1024) as r:  # values outside the suffix
        r["meta"]
        r["runs"][3]["loss"]
        proxy.clear()
        for i in range(0, 1000, 97):
            assert r[f"sample-{i}"] == _RUNS[f"sample-{i}"]
        assert r["runs"][3]["weights"] == _RUNS["runs"][3]["weights"]
        assert _gets_and_heads(proxy) == (len(range(0, 1000, 97)) + 1, 0)


@pytest.fixture
def s3_small_parts(
    ceph_s3: S3Server, ceph_bucket: str, proxy: FaultProxy
) -> Iterator[StorageBackend]:
    options = _options(ceph_s3, proxy.url)
    options.update(multipart_threshold=5 * 1024 * 1024, part_size=5 * 1024 * 1024)
    backend = open_backend(f"s3://{ceph_bucket}", **options)
    yield backend
    backend.close()


def test_large_container_uploads_in_parts_and_round_trips(
    s3_small_parts: StorageBackend, proxy: FaultProxy, tmp_path: Path
) -> None:
    s3 = s3_small_parts
    blobs = [os.urandom(1024 * 1024) for _ in range(12)]
    proxy.clear()
    with LazyWriter(s3, "big.msgc", part_size=5 * 1024 * 1024, spool_dir=str(tmp_path)) as w:
        w.extend(blobs)
    assert proxy.requests["POST"] >= 2  # create + complete multipart upload
    assert os.listdir(tmp_path) == []
    with LazyReader(s3, "big.msgc") as r:
        assert r[11] == blobs[11]
        assert r.to_obj() == blobs


def test_upload_to_missing_bucket_fails_and_removes_the_spool(
    ceph_s3: S3Server, tmp_path: Path
) -> None:
    uri = "s3://no-such-bucket-datashard/x.msgc"
    with pytest.raises(StorageError):
        options = _options(ceph_s3, ceph_s3.endpoint_url)
        with LazyWriter(uri, spool_dir=str(tmp_path), **options) as w:
            w["a"] = os.urandom(100_000)
    assert os.listdir(tmp_path) == []


def test_upload_failing_half_way_leaves_no_object(
    s3_small_parts: StorageBackend, proxy: FaultProxy, tmp_path: Path
) -> None:
    s3 = s3_small_parts
    proxy.fail(n=1, status=403, code="AccessDenied", method="PUT", path=r"partNumber=2")
    with pytest.raises(StorageError):
        with LazyWriter(s3, "half.msgc", part_size=5 * 1024 * 1024, spool_dir=str(tmp_path)) as w:
            w.extend(os.urandom(1024 * 1024) for _ in range(12))
    assert os.listdir(tmp_path) == []
    assert not s3.exists("half.msgc")
    assert list(s3.list("")) == []
