"""The S3 backend beyond the shared contract: configuration, credentials, the error table, the
parallel data path, multipart writes, secrets, pickling and fork.

The generic contract (round trips, ranges, list order, the race) is the conformance suite's job
(tests/storage/test_conformance.py); these tests prove what is specific to S3, on real servers
over loopback (moto, and Ceph RGW where moto does not behave like S3: signatures, If-Match).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError

from datashard.errors import (
    BucketNotFoundError,
    ConfigError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoragePermissionError,
)
from datashard.storage.config import backend_from_env, config_from_env, open_backend
from datashard.storage.s3 import S3Backend, S3Config
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import S3Server, new_s3_bucket

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
SECRET = "Sup3rS3cretValueThatMustNeverShow"
TOKEN = "SessionTokenThatMustNeverShow0123"


def _options(server: S3Server, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
        "retry_first_delay": 0.001,
        "retry_max_delay": 0.01,
        **extra,
    }


@pytest.fixture
def moto_backend(moto_s3: S3Server, moto_bucket: str) -> Iterator[S3Backend]:
    backend = open_backend(f"s3://{moto_bucket}/root", **_options(moto_s3))
    assert isinstance(backend, S3Backend)
    with backend:
        yield backend


@pytest.fixture
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(moto_s3.endpoint_url) as p:
        yield p


def _via(proxy: FaultProxy, server: S3Server, bucket: str, **extra: Any) -> S3Backend:
    options = _options(server, endpoint_url=proxy.url, **extra)
    backend = open_backend(f"s3://{bucket}/root", **options)
    assert isinstance(backend, S3Backend)
    return backend


# -- configuration ---------------------------------------------------------------------------


def test_uri_and_options_make_a_typed_config() -> None:
    config = S3Config.from_uri(
        "s3://bucket-a/some/prefix/", endpoint_url="http://127.0.0.1:9", part_size=8 * MiB
    )
    assert (config.bucket, config.prefix, config.part_size) == ("bucket-a", "some/prefix", 8 * MiB)
    assert config.root_uri() == "s3://bucket-a/some/prefix"
    assert S3Config.from_uri("s3://bucket-a").root_uri() == "s3://bucket-a"


def test_unknown_option_and_bad_values_raise_config_error_naming_them() -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        S3Config.from_uri("s3://b", endpoint="http://x")  # the field is endpoint_url
    with pytest.raises(ConfigError, match="part_size"):
        S3Config.from_uri("s3://b", part_size=1024)
    with pytest.raises(ConfigError, match="secret_access_key"):
        S3Config.from_uri("s3://b", access_key_id="only-half")
    with pytest.raises(ConfigError, match="anonymous"):
        S3Config.from_uri("s3://b", anonymous=True, access_key_id="a", secret_access_key="b")
    with pytest.raises(ConfigError, match="prefix"):
        S3Config.from_uri("s3://b/a/../c")


def test_environment_configures_the_s3_backend(moto_s3: S3Server, moto_bucket: str) -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "s3",
        "DATASHARD_S3_ENDPOINT": moto_s3.endpoint_url,
        "DATASHARD_S3_ACCESS_KEY": moto_s3.access_key_id,
        "DATASHARD_S3_SECRET_KEY": moto_s3.secret_access_key,
        "DATASHARD_S3_BUCKET": moto_bucket,
        "DATASHARD_S3_REGION": moto_s3.region,
        "DATASHARD_S3_PREFIX": "from/env",
        "DATASHARD_S3_PATH_STYLE": "true",
        "DATASHARD_S3_READ_PART_SIZE": "1048576",
        "DATASHARD_MAX_CONCURRENCY": "7",
    }
    config = config_from_env(env)
    assert isinstance(config, S3Config)
    assert (config.prefix, config.read_part_size, config.max_concurrency) == ("from/env", MiB, 7)
    with backend_from_env(env) as backend:
        backend.write("k", b"v")
        assert backend.read("k") == b"v"
    raw = moto_s3.client().get_object(Bucket=moto_bucket, Key="from/env/k")
    assert raw["Body"].read() == b"v"
    with pytest.raises(ConfigError, match="DATASHARD_S3_ENDPOINT_URLS"):
        config_from_env({**env, "DATASHARD_S3_ENDPOINT_URLS": "x"})


def test_no_secret_in_config_or_backend_repr_or_str() -> None:
    config = S3Config.from_uri(
        "s3://b", access_key_id="AKIDVISIBLE", secret_access_key=SECRET, session_token=TOKEN
    )
    backend = S3Backend(config)
    for text in (repr(config), str(config), repr(backend), str(backend)):
        assert SECRET not in text and TOKEN not in text
    with pytest.raises(ConfigError) as info:
        S3Config.from_uri("s3://b", access_key_id="a", secret_access_key=12345)
    assert "12345" not in str(info.value)


def test_anonymous_requests_are_unsigned(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    raw = moto_s3.client()
    raw.put_object(Bucket=moto_bucket, Key="root/public", Body=b"open", ACL="public-read")
    options = {"endpoint_url": proxy.url, "anonymous": True, "path_style": True}
    with open_backend(f"s3://{moto_bucket}/root", **options) as backend:
        assert backend.read("public") == b"open"
    assert proxy.headers and all("authorization" not in h for h in proxy.headers)


def test_requester_pays_is_sent_on_every_request(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    with _via(proxy, moto_s3, moto_bucket, requester_pays=True) as backend:
        backend.write("k", b"v")
        backend.put_if_absent("k2", b"v")
        assert backend.read("k") == b"v" and backend.head("k").size == 1
        assert [m.key for m in backend.list()] == ["k", "k2"]
        backend.delete_many(["k", "k2"])
    assert len(proxy.headers) == 6
    assert all(h.get("x-amz-request-payer") == "requester" for h in proxy.headers)


def test_profile_and_default_chain_credentials_are_used(
    ceph_s3: S3Server, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ceph checks signatures, so a read that succeeds proves the keys came from the profile
    file, or from the environment (the default chain)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[bench-profile]\naws_access_key_id = {ceph_s3.access_key_id}\n"
        f"aws_secret_access_key = {ceph_s3.secret_access_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    root = f"s3://{ceph_s3.bucket}/creds"
    common = {"endpoint_url": ceph_s3.endpoint_url, "region": ceph_s3.region, "path_style": True}
    with open_backend(root, profile="bench-profile", **common) as backend:
        backend.write("k", b"from profile")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph_s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph_s3.secret_access_key)
    with open_backend(root, **common) as backend:
        assert backend.read("k") == b"from profile"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with open_backend(root, **common) as backend, pytest.raises(StoragePermissionError):
        backend.read("k")


# -- errors ----------------------------------------------------------------------------------


def test_missing_bucket_names_the_bucket(moto_s3: S3Server) -> None:
    with open_backend("s3://no-such-bucket-here/p", **_options(moto_s3)) as backend:
        for call in (
            lambda: backend.read("k"),
            lambda: backend.write("k", b"x"),
            lambda: list(backend.list()),
        ):
            with pytest.raises(BucketNotFoundError, match="no-such-bucket-here") as info:
                call()
            assert info.value.bucket == "no-such-bucket-here"
            assert isinstance(info.value, FileNotFoundError)
            assert info.value.__cause__ is not None


def test_missing_object_is_object_not_found_with_sdk_cause(moto_backend: S3Backend) -> None:
    with pytest.raises(ObjectNotFoundError, match="'nope'") as info:
        moto_backend.read("nope")
    assert info.value.key == "nope"
    assert isinstance(info.value.__cause__, ClientError)
    with pytest.raises(ObjectNotFoundError):
        moto_backend.head("nope")
    with pytest.raises(ObjectNotFoundError):
        moto_backend.read_into("nope", bytearray(10))


def test_wrong_secret_is_a_permission_error_that_never_shows_it(
    ceph_s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Ceph checks signatures (moto does not). No secret in the message, the repr, the
    traceback with its botocore cause, or any log line (datashard's at DEBUG, all at INFO)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="datashard")
    options = _options(ceph_s3, secret_access_key=SECRET, retry_attempts=3)
    with open_backend(f"s3://{ceph_s3.bucket}", **options) as backend:
        for call in (
            lambda: backend.read("k"),
            lambda: backend.write("k", b"x"),
            lambda: backend.put_if_absent("k", b"x"),
            lambda: list(backend.list()),
        ):
            with pytest.raises(StoragePermissionError) as info:
                call()
            assert isinstance(info.value, PermissionError)
            text = "".join(traceback.format_exception(info.value))
            text += repr(info.value) + str(info.value.__cause__) + repr(backend)
            assert SECRET not in text
    assert caplog.records, "expected datashard to log at least the client creation"
    assert SECRET not in caplog.text


def test_backends_in_one_process_keep_their_own_credentials(ceph_s3: S3Server) -> None:
    """Clients share the parsed S3 service model, never a credential: made in either order, a
    backend with the right secret works and one with a wrong secret is refused."""
    good_options = _options(ceph_s3)
    bad_options = _options(ceph_s3, secret_access_key=SECRET, retry_attempts=2)
    for order in ("good first", "bad first"):
        good = open_backend(f"s3://{ceph_s3.bucket}", **good_options)
        bad = open_backend(f"s3://{ceph_s3.bucket}", **bad_options)
        first, second = (good, bad) if order == "good first" else (bad, good)
        for backend in (first, second):
            if backend is good:
                backend.write("creds/k", order.encode())
                assert backend.read("creds/k") == order.encode()
            else:
                with pytest.raises(StoragePermissionError):
                    backend.read("creds/k")
        good.close()
        bad.close()


def test_making_many_clients_does_not_grow_the_shared_loader(moto_s3: S3Server) -> None:
    from datashard.storage import s3_config

    for _ in range(5):
        S3Config.from_uri("s3://b", **_options(moto_s3)).make_client()
    paths = s3_config._LOADER.search_paths
    assert len(paths) == len(set(paths)), paths


def test_unknown_access_key_and_session_token_never_show(
    ceph_s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="datashard")
    options = _options(
        ceph_s3, access_key_id="NOSUCHKEY", secret_access_key=SECRET, session_token=TOKEN
    )
    with open_backend(f"s3://{ceph_s3.bucket}", **options) as backend:
        with pytest.raises(StoragePermissionError) as info:
            backend.read("k")
    text = "".join(traceback.format_exception(info.value)) + caplog.text
    assert SECRET not in text and TOKEN not in text


# -- the data path ---------------------------------------------------------------------------


def test_read_into_is_exact_across_part_boundaries(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    data = os.urandom(300_007)
    part = 65_536
    backend = _via(proxy, moto_s3, moto_bucket, read_threshold=100_000, read_part_size=part)
    with backend:
        backend.write("obj", data)
        cases = [
            (0, len(data)),
            (0, 400_000),
            (part - 1, 2),
            (part - 1, part + 2),
            (1, 150_000),
            (299_000, 50_000),
            (len(data), 10),
            (len(data) + 5, 10),
            (12_345, 200_001),
        ]
        for offset, length in cases:
            buf = bytearray(b"\xee" * length)
            proxy.clear()
            count = backend.read_into("obj", buf, offset)
            expected = data[offset : offset + length]
            assert count == len(expected), (offset, length)
            assert buf[:count] == expected, (offset, length)
            assert buf[count:] == b"\xee" * (length - count), "bytes past the object were touched"
            if length > 100_000 and len(expected) > part:
                assert proxy.requests["GET"] == -(-len(expected) // part), (offset, length)


def test_read_into_accepts_numpy_and_memoryview_slices(moto_backend: S3Backend) -> None:
    import numpy as np

    backend = S3Backend(replace(moto_backend.config, read_threshold=1000, read_part_size=777))
    data = os.urandom(10_000)
    backend.write("obj", data)
    arr = np.zeros(2500, dtype=np.uint32)  # 10,000 bytes
    assert backend.read_into("obj", arr) == 10_000
    assert arr.tobytes() == data
    big = bytearray(20_000)
    assert backend.read_into("obj", memoryview(big)[5000:15000], 0) == 10_000
    assert big[5000:15000] == data and big[:5000] == bytes(5000)
    with pytest.raises(TypeError, match="writable"):
        backend.read_into("obj", b"read-only")


def test_large_read_and_read_ranges_match_the_object(moto_backend: S3Backend) -> None:
    backend = S3Backend(replace(moto_backend.config, read_threshold=5000, read_part_size=3000))
    data = os.urandom(40_000)
    backend.write("obj", data)
    assert backend.read("obj") == data
    assert backend.read_range("obj", 1234, 39_999) == data[1234:39_999]
    ranges = [(0, 10), (100, 30_000), (39_990, 50_000), (5, 5), (40_000, 40_100), (7, 9000)]
    assert backend.read_ranges("obj", ranges) == [data[s:e] for s, e in ranges]
    assert backend.read_ranges("obj", [(1, 3), (10, 20)]) == [data[1:3], data[10:20]]
    backend.write("empty", b"")
    assert backend.read("empty") == b"" and backend.read_range("empty", 0, 10) == b""


@pytest.fixture(params=["moto", "ceph"])
def any_s3(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(f"{request.param}_s3")
    return server


def test_object_replaced_during_a_parallel_read_is_read_again_whole(any_s3: S3Server) -> None:
    """The parts after the first are pinned to the first response's ETag (sent unquoted, which
    Ceph needs). When another writer replaces the object mid-read, a plain read starts again and
    returns the new version whole; a read pinned by the caller raises PreconditionFailedError."""
    bucket = new_s3_bucket(any_s3, "etag-pin")
    raw = any_s3.client()

    def overwrite_with(body: bytes) -> Any:
        def overwrite(method: str, path: str) -> None:
            raw.put_object(Bucket=bucket, Key="root/obj", Body=body)

        return overwrite

    with FaultProxy(any_s3.endpoint_url) as proxy:
        backend = _via(proxy, any_s3, bucket, read_threshold=1000, read_part_size=1000)
        with backend:
            backend.write("obj", b"a" * 5000)
            proxy.clear()
            assert backend.read("obj") == b"a" * 5000  # unchanged: the pinned parts match
            assert proxy.requests["GET"] == 5
            for new in (b"b" * 4500, b"c" * 5000):  # shorter, then the same size
                proxy.clear()
                proxy.delay(0.0, method="GET")  # the first GET passes untouched; before the
                proxy.call(overwrite_with(new), method="GET")  # next, a writer replaces it
                buf = bytearray(6000)
                assert backend.read_into("obj", buf) == len(new)
                assert buf[: len(new)] == new  # past the count: whatever the first pass left
                assert proxy.requests["GET"] > 5  # the first pass was abandoned
            etag = backend.head("obj").etag
            assert etag is not None
            assert backend.read_range_if_match("obj", 10, 4000, etag) == b"c" * 3990
            proxy.delay(0.0, method="GET")
            proxy.call(overwrite_with(b"d" * 5000), method="GET")
            with pytest.raises(PreconditionFailedError, match="'obj'"):
                backend.read_range_if_match("obj", 0, 5000, etag)
            with pytest.raises(PreconditionFailedError):
                backend.read_range_if_match("obj", 0, 10, etag)  # one GET, refused by the server


def test_read_tail_is_one_suffix_request(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    with _via(proxy, moto_s3, moto_bucket) as backend:
        backend.write("obj", b"0123456789")
        backend.write("empty", b"")
        proxy.clear()
        assert backend.read_tail("obj", 4) == (b"6789", 10)
        assert backend.read_tail("obj", 50) == (b"0123456789", 10)
        assert proxy.requests["GET"] == 2 and proxy.requests["HEAD"] == 0
        assert backend.read_tail("empty", 4) == (b"", 0)
        assert backend.read_tail("obj", 0) == (b"", 10)
        with pytest.raises(ObjectNotFoundError):
            backend.read_tail("missing", 4)


def test_data_gets_on_a_plain_http_path_style_endpoint_skip_boto3(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    """Range GETs of data go out signed but without boto3 (a third of its CPU a request), and
    read and fail exactly as boto3's do; other endpoints stay on boto3."""
    data = os.urandom(3 * MiB + 5)
    with _via(proxy, moto_s3, moto_bucket, read_threshold=MiB, read_part_size=MiB) as backend:
        backend.write("odd key+%20 é", data)
        proxy.clear()
        assert backend.read("odd key+%20 é") == data
        assert backend.read_ranges("odd key+%20 é", [(5, 9), (MiB, MiB + 3)]) == [
            data[5:9],
            data[MiB : MiB + 3],
        ]
        agents = [h.get("user-agent", "") for h in proxy.headers]
        assert agents and all(a.startswith("python-urllib3") for a in agents)
        with pytest.raises(ObjectNotFoundError, match="'missing'"):
            backend.read_range("missing", 0, 10)
        assert backend.read_range("odd key+%20 é", len(data) + 10, len(data) + 20) == b""
    virtual = S3Backend(S3Config(bucket=moto_bucket, endpoint_url=proxy.url, path_style=False))
    https = S3Backend(S3Config(bucket=moto_bucket, endpoint_url="https://s3.example.com"))
    for other in (virtual, https):
        with other:
            other._state()
            assert other._lean is None
    # an HTTP proxy in the environment: boto3 goes through it, so the lean requests must not
    # skip it (unless NO_PROXY exempts the endpoint)
    for no_proxy, lean in [("", False), ("127.0.0.1", True)]:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
            env.setenv("NO_PROXY", no_proxy)
            with _via(proxy, moto_s3, moto_bucket) as proxied:
                proxied._state()
                assert (proxied._lean is not None) is lean


def test_listings_on_a_plain_http_path_style_endpoint_skip_boto3(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    """Listings go out signed but without boto3 too: keys with odd characters come back as
    written, pages follow one another past 1,000 keys, sizes, ETags and times as boto3 gives."""
    odd = ["p/odd key+%20 é", "p/a&b=c?d", "p/tab\tx", "p/~tilde/deeper"]
    many = [f"p/many/{i:05d}" for i in range(1005)]
    with _via(proxy, moto_s3, moto_bucket) as backend:
        for key in odd:
            backend.write(key, key.encode())
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: backend.write(k, b"x"), many))
        proxy.clear()
        listed = list(backend.list("p/"))
        assert [m.key for m in listed] == sorted([*odd, *many])
        assert proxy.requests["GET"] == 2  # two pages
        agents = [h.get("user-agent", "") for h in proxy.headers]
        assert agents and all(a.startswith("python-urllib3") for a in agents)
        by_key = {m.key: m for m in listed}
        for key in odd:
            head = backend.head(key)
            assert by_key[key].size == len(key.encode()) == head.size
            assert by_key[key].etag == head.etag
            assert by_key[key].last_modified is not None and head.last_modified is not None
            assert abs(by_key[key].last_modified - head.last_modified) < timedelta(seconds=1)
        assert list(backend.list("p/none-")) == []
    missing = _via(proxy, moto_s3, "no-such-bucket-here")
    with missing, pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        list(missing.list("p/"))


@pytest.mark.parametrize("server", ["moto", "ceph"])
def test_single_writes_heads_and_deletes_on_a_plain_http_path_style_endpoint_skip_boto3(
    server: str, request: pytest.FixtureRequest
) -> None:
    """PUTs, conditional creates, HEADs and DELETEs go out signed but without boto3 and behave
    as boto3's do (errors included); multipart uploads stay on boto3."""
    s3: S3Server = request.getfixturevalue(f"{server}_s3")
    bucket = new_s3_bucket(s3, "lean-writes")
    key = "odd key+%20 é/v1.json"
    with (
        FaultProxy(s3.endpoint_url) as proxy,
        _via(proxy, s3, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as backend,
    ):
        backend.write("plain", b"0123456789")
        with backend.open_output("streamed") as out:  # a part buffer's view, sent whole
            out.write(b"abc" * 1000)
        backend.put_if_absent(key, b"first")
        with pytest.raises(ObjectExistsError, match="v1.json"):
            backend.put_if_absent(key, b"second")
        head = backend.head(key)
        listed = {m.key: m for m in backend.list("")}
        assert (head.size, head.etag) == (5, listed[key].etag)
        assert head.last_modified is not None and head.last_modified.tzinfo is not None
        assert abs(head.last_modified - listed[key].last_modified) < timedelta(seconds=1)
        with pytest.raises(ObjectNotFoundError, match="'missing'"):
            backend.head("missing")
        backend.delete("plain")
        backend.delete("never-written")  # no error, as on every backend
        assert backend.read("streamed") == b"abc" * 1000 and backend.read(key) == b"first"
        assert sorted(listed) == sorted(["plain", "streamed", key])
        assert not backend.exists("plain")
        agents = [h.get("user-agent", "") for h in proxy.headers]
        assert len(agents) >= 10 and all(a.startswith("python-urllib3") for a in agents)

        proxy.clear()
        proxy.fail(1, status=403, code="AccessDenied", method="PUT")
        with pytest.raises(StoragePermissionError, match="'denied'"):
            backend.write("denied", b"x")
        assert not backend.exists("denied")

        proxy.clear()
        backend.write("big", os.urandom(6 * MiB))  # a multipart upload: boto3's
        assert any(h.get("user-agent", "").startswith("Boto3") for h in proxy.headers)
        assert backend.head("big").size == 6 * MiB


# -- writes ----------------------------------------------------------------------------------


def test_iterable_of_chunks_is_a_multipart_upload(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    backend = _via(proxy, moto_s3, moto_bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(13 * MiB + 17)
    chunks = (data[i : i + 999_983] for i in range(0, len(data), 999_983))
    with backend:
        backend.write("big", chunks)
        # create + complete are POSTs; three parts are PUTs
        assert (proxy.requests["POST"], proxy.requests["PUT"]) == (2, 3)
        assert backend.read("big") == data
        proxy.clear()
        backend.write("small", iter([b"ab", b"cd"]))  # ends under the threshold: one PutObject
        assert (proxy.requests["POST"], proxy.requests["PUT"]) == (0, 1)
        assert backend.read("small") == b"abcd"
        backend.write("none", iter([]))
        assert backend.read("none") == b""


def test_failed_multipart_upload_is_aborted_and_leaves_no_object(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    backend = _via(proxy, moto_s3, moto_bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    proxy.fail(1, status=403, code="AccessDenied", method="PUT", path=r"partNumber=2")
    with backend, pytest.raises(StoragePermissionError, match="'big'"):
        backend.write("big", os.urandom(11 * MiB))
    raw = moto_s3.client()
    assert raw.list_multipart_uploads(Bucket=moto_bucket).get("Uploads", []) == []
    assert not backend.exists("big")


def test_delete_many_removes_batches_over_a_thousand(
    proxy: FaultProxy, moto_s3: S3Server, moto_bucket: str
) -> None:
    keys = [f"d/{i:04d}" for i in range(1003)]
    raw = moto_s3.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: raw.put_object(Bucket=moto_bucket, Key=f"root/{k}"), keys))
    with _via(proxy, moto_s3, moto_bucket) as backend:
        backend.delete_many(keys + ["d/missing"])
        assert proxy.requests["POST"] == 2  # two DeleteObjects batches
        assert list(backend.list("d/")) == []


def test_delete_many_reports_each_refused_key(ceph_s3: S3Server) -> None:
    """A bucket policy (enforced by Ceph) denies deletes under keep/: the other keys go, and one
    error names every refused key with its S3 code."""
    bucket = new_s3_bucket(ceph_s3, "delete-refused")
    raw = ceph_s3.client()
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{bucket}/root/keep/*",
            }
        ],
    }
    raw.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    with open_backend(f"s3://{bucket}/root", **_options(ceph_s3)) as backend:
        for key in ("keep/a", "keep/b", "go/c"):
            backend.write(key, b"x")
        with pytest.raises(StoragePermissionError) as info:
            backend.delete_many(["keep/a", "go/c", "keep/b"])
        message = str(info.value)
        assert "2 of 3" in message and "'keep/a' (AccessDenied)" in message
        assert "'keep/b' (AccessDenied)" in message
        assert info.value.key == "keep/a"
        assert [m.key for m in backend.list()] == ["keep/a", "keep/b"]


# -- processes -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_backend_works_in_child_processes(moto_backend: S3Backend, method: str) -> None:
    """A used backend, forked or pickled into another process, makes its own client there."""
    moto_backend.write("k", b"hello")
    assert moto_backend.read("k") == b"hello"  # the parent's client exists now
    state = pickle.dumps(moto_backend)
    assert len(state) < 4096 and SECRET.encode() not in state
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        assert list(pool.map(moto_backend.read, ["k"] * 4)) == [b"hello"] * 4
    assert pickle.loads(state).read("k") == b"hello"


def test_new_bucket_helper_gives_an_empty_bucket(moto_s3: S3Server) -> None:
    bucket = new_s3_bucket(moto_s3, "s3-empty")
    with open_backend(f"s3://{bucket}", **_options(moto_s3)) as backend:
        assert list(backend.list()) == []


def test_listed_and_headed_times_are_aware_and_agree(any_s3: S3Server) -> None:
    """A listing's ``LastModified`` (ISO 8601, read without dateutil) and a HEAD's (an HTTP
    date, read by botocore) are timezone-aware and name the same second: the grace periods of
    the upkeep and ``remove_orphan_files`` compare them with the clock."""
    bucket = new_s3_bucket(any_s3, "times")
    with open_backend(f"s3://{bucket}/root", **_options(any_s3)) as backend:
        backend.write("t/a", b"x")
        listed = next(iter(backend.list("t/"))).last_modified
        headed = backend.head("t/a").last_modified
    assert listed is not None and headed is not None
    assert listed.utcoffset() == headed.utcoffset() == timedelta(0)
    assert abs(listed - headed) < timedelta(seconds=1)
    assert abs(listed - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_a_timestamp_in_another_form_goes_to_botocore() -> None:
    from datashard.storage.s3_config import response_time as _timestamp

    utc = datetime(2026, 12, 3, 12, 0, 1, tzinfo=timezone.utc)
    assert _timestamp("2026-12-03T12:00:01.000Z") == utc
    assert _timestamp("Thu, 03 Dec 2026 12:00:01 GMT") == utc
    assert _timestamp("2026-12-03T13:00:01+01:00") == utc
    assert _timestamp("1796299201") == utc  # epoch seconds
