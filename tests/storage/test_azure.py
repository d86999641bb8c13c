"""``az://`` behaviour beyond the conformance suite, on Azurite over loopback: credentials and
their secrecy, missing containers, wrong keys, staged block uploads, multi-part reads, retries
through a fault-injecting proxy, pickling and configuration from the environment."""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from datashard.errors import (
    BucketNotFoundError,
    ConfigError,
    ObjectExistsError,
    StorageError,
    StoragePermissionError,
)
from datashard.storage.azure import AzureBackend, BlocksDiscardedError, utf8_ordered
from datashard.storage.azure_config import AzureConfig
from datashard.storage.base import ObjectMeta
from datashard.storage.config import backend_from_env, open_backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import AzureServer
from datashard.testing.store import TRICKY_KEYS, data_of

KiB = 1024
MiB = 1024 * KiB


def _backend(azurite: AzureServer, container: str, **options: Any) -> AzureBackend:
    settings: dict[str, Any] = {
        "account_name": azurite.account_name,
        "account_key": azurite.account_key,
        "account_url": azurite.endpoint,
        "retry_first_delay": 0.01,
        "retry_max_delay": 0.05,
        "retry_attempts": 4,
    }
    settings.update(options)
    backend = open_backend(f"az://{container}/t", **settings)
    assert isinstance(backend, AzureBackend)
    return backend


@contextlib.contextmanager
def _open(azurite: AzureServer, container: str, **options: Any) -> Iterator[AzureBackend]:
    backend = _backend(azurite, container, **options)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def backend(azurite: AzureServer, azure_container: str) -> Iterator[AzureBackend]:
    with _open(azurite, azure_container) as b:
        yield b


@pytest.fixture
def proxy(azurite: AzureServer) -> Iterator[FaultProxy]:
    upstream = azurite.endpoint.rsplit("/", 1)[0]
    with FaultProxy(upstream) as p:
        yield p


def _through(
    proxy: FaultProxy, azurite: AzureServer, container: str
) -> contextlib.AbstractContextManager[AzureBackend]:
    return _open(azurite, container, account_url=f"{proxy.url}/{azurite.account_name}")


def _errors_of(backend: AzureBackend) -> list[StorageError]:
    """The errors a user meets most: a missing object, then a missing container."""
    errors: list[StorageError] = []
    for call in (lambda: backend.read("missing"), lambda: backend.head("missing")):
        try:
            call()
        except StorageError as exc:
            errors.append(exc)
    other = AzureBackend(replace(backend.config, container="no-such-container-x1"))
    try:
        other.write("k", b"x")
    except StorageError as exc:
        errors.append(exc)
    return errors


# -- credentials -------------------------------------------------------------------------------


def test_account_key_never_appears_in_repr_errors_or_logs(
    azurite: AzureServer, azure_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with _open(azurite, azure_container) as backend:
        backend.write("k", b"value")
        assert backend.read("k") == b"value"
        errors = _errors_of(backend)
        texts = [repr(backend), str(backend), repr(backend.config), caplog.text]
        texts += [str(e) for e in errors] + [repr(e) for e in errors]
    assert len(errors) == 3
    for text in texts:
        assert azurite.account_key not in text
        assert azurite.account_key[:20] not in text


def test_sas_token_works_and_never_appears_in_repr_errors_or_logs(
    azurite: AzureServer, azure_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(
        azurite.account_name,
        azure_container,
        account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    signature = dict(part.split("=", 1) for part in sas.split("&"))["sig"]
    caplog.set_level(logging.DEBUG)
    with _open(azurite, azure_container, account_key=None, sas_token=sas) as backend:
        backend.put_if_absent("meta/v1.json", b"{}")
        assert [m.key for m in backend.list()] == ["meta/v1.json"]
        assert backend.read("meta/v1.json") == b"{}"
        errors = _errors_of(backend)
        texts = [repr(backend), repr(backend.config), caplog.text] + [str(e) for e in errors]
    for text in texts:
        assert sas not in text
        assert signature not in text


def test_connection_string_works_and_stays_out_of_repr(
    azurite: AzureServer, azure_container: str
) -> None:
    backend = open_backend(f"az://{azure_container}", connection_string=azurite.connection_string)
    with backend:
        backend.write("a/b", b"through the connection string")
        assert backend.read("a/b") == b"through the connection string"
        assert azurite.connection_string not in repr(backend.config)
        assert azurite.account_key not in repr(backend.config)


def test_wrong_account_key_is_a_permission_error_not_retried(
    azurite: AzureServer, azure_container: str
) -> None:
    wrong = "A" * 20 + azurite.account_key[20:]
    with _open(azurite, azure_container, account_key=wrong) as backend:
        calls: dict[str, Callable[[], object]] = {
            "read": lambda: backend.read("k"),
            "write": lambda: backend.write("k", b"x"),
            "put_if_absent": lambda: backend.put_if_absent("k", b"x"),
            "list": lambda: list(backend.list()),
        }
        for name, call in calls.items():
            with pytest.raises(StoragePermissionError) as info:
                call()
            assert isinstance(info.value, PermissionError), name
            assert info.value.__cause__ is not None, name
            assert "check the account key" in str(info.value), name
            assert wrong not in str(info.value)
        assert backend._gate.retries == 0


def test_missing_container_is_bucket_not_found_naming_it(
    azurite: AzureServer, azure_container: str
) -> None:
    with _open(azurite, "no-such-container-7") as backend:
        calls: dict[str, Callable[[], object]] = {
            "read": lambda: backend.read("k"),
            "head": lambda: backend.head("k"),
            "write": lambda: backend.write("k", b"x"),
            "put_if_absent": lambda: backend.put_if_absent("k", b"x"),
            "list": lambda: list(backend.list()),
            "delete": lambda: backend.delete("k"),
        }
        for name, call in calls.items():
            with pytest.raises(BucketNotFoundError) as info:
                call()
            assert info.value.bucket == "no-such-container-7", name
            assert "no-such-container-7" in str(info.value), name
            assert isinstance(info.value, FileNotFoundError)


def test_missing_sdk_raises_config_error_naming_the_extra() -> None:
    """Without azure-storage-blob the module imports; the first request says what to install."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'azure' or name.startswith('azure.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from datashard.errors import ConfigError\n"
        "from datashard.storage.config import open_backend\n"
        "b = open_backend('az://box/p', account_name='acct', anonymous=True)\n"
        "try:\n"
        "    b.read('k')\n"
        "except ConfigError as exc:\n"
        "    print('ConfigError:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "ConfigError:" in out
    assert "pip install azure-storage-blob azure-identity" in out


# -- uploads -----------------------------------------------------------------------------------


def _blocks(azurite: AzureServer, container: str, name: str) -> tuple[int, int]:
    blob = azurite.client().get_blob_client(container, name)
    committed, uncommitted = blob.get_block_list("all")
    return len(committed), len(uncommitted)


def test_chunk_iterable_is_uploaded_as_staged_blocks(
    azurite: AzureServer, azure_container: str
) -> None:
    data = data_of(5 * MiB + 12345, seed=3)
    sizes = [1, 300 * KiB, 7, MiB + 3, 2 * MiB, 5]
    cuts: list[bytes] = []
    start = 0
    while start < len(data):
        size = sizes[len(cuts) % len(sizes)]
        cuts.append(data[start : start + size])
        start += size
    with _open(azurite, azure_container, block_size=MiB) as backend:
        backend.write("big.bin", iter(cuts))
        assert backend.read("big.bin") == data
        assert backend.head("big.bin").size == len(data)
    assert _blocks(azurite, azure_container, "t/big.bin") == (math.ceil(len(data) / MiB), 0)


def test_large_bytes_are_uploaded_as_staged_blocks(
    azurite: AzureServer, azure_container: str
) -> None:
    data = data_of(3 * MiB + 1, seed=4)
    with _open(azurite, azure_container, block_size=MiB, single_put_size=MiB) as backend:
        backend.write("big.bin", memoryview(data))
        assert backend.read("big.bin") == data
        backend.put_if_absent("created.bin", data)
        assert backend.read("created.bin") == data
        with pytest.raises(ObjectExistsError):
            backend.put_if_absent("created.bin", b"second writer")
        assert backend.read("created.bin") == data
    assert _blocks(azurite, azure_container, "t/big.bin") == (4, 0)


def test_concurrent_block_uploads_to_one_key_never_mix(
    azurite: AzureServer, azure_container: str
) -> None:
    """Block IDs are unique per upload: two writers staging blocks of one blob at once leave
    one writer's bytes, never a mix. A commit discards the other upload's staged blocks: bytes
    are staged again; a stream cannot be, and its writer gets BlocksDiscardedError."""
    versions = [data_of(3 * MiB, seed=10 + i) for i in range(2)]
    outcomes: list[str] = []

    def write(payload: Any) -> None:
        try:
            target.write("obj", payload)
            outcomes.append("ok")
        except BlocksDiscardedError as exc:
            assert "another writer" in str(exc)
            outcomes.append("discarded")

    options = {"block_size": 256 * KiB, "single_put_size": 256 * KiB}
    with _open(azurite, azure_container, **options) as target:
        for streams in (False, True):
            outcomes.clear()
            payloads: list[Any] = [
                (v[i : i + 100 * KiB] for i in range(0, len(v), 100 * KiB)) if streams else v
                for v in versions
            ]
            threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert target.read("obj") in versions
            assert "ok" in outcomes
            if not streams:
                assert outcomes == ["ok", "ok"]


# -- reads -------------------------------------------------------------------------------------


def test_read_into_across_part_boundaries(azurite: AzureServer, azure_container: str) -> None:
    part = 64 * KiB
    data = data_of(10 * part + 37, seed=5)
    with _open(azurite, azure_container, part_size=part, max_concurrency=4) as backend:
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


def test_read_of_a_blob_overwritten_between_parts_is_never_mixed(
    azurite: AzureServer, azure_container: str, proxy: FaultProxy
) -> None:
    """The parts after the first are pinned to the first part's ETag: an overwrite between
    them makes the read start over and return the new bytes whole."""
    part = 64 * KiB
    old, new = data_of(4 * part, seed=6), data_of(4 * part, seed=7)
    with _through(proxy, azurite, azure_container) as backend:
        backend.write("obj", old)
        writer = _backend(azurite, azure_container)
        fired: list[str] = []

        def overwrite(method: str, path: str) -> None:
            if not fired:
                fired.append(path)
                writer.write("obj", new)

        proxy.call(overwrite, n=1, method="GET")
        slow = AzureBackend(replace(backend.config, part_size=part, max_concurrency=1))
        # the first GET overwrites the blob before it is served: it returns the new bytes
        assert slow.read("obj") == new
        proxy.clear()
        writer.write("obj", old)
        state = {"gets": 0}

        def overwrite_second(method: str, path: str) -> None:
            state["gets"] += 1
            if state["gets"] == 2:
                writer.write("obj", new)

        proxy.call(overwrite_second, n=3, method="GET")
        assert slow.read("obj") in (old, new)
        assert fired


def test_parts_run_concurrently_within_max_concurrency(
    azurite: AzureServer, azure_container: str, proxy: FaultProxy
) -> None:
    part = 64 * KiB
    data = data_of(32 * part, seed=9)
    with _through(proxy, azurite, azure_container) as backend:
        backend.write("obj", data)
        limited = AzureBackend(replace(backend.config, part_size=part, max_concurrency=3))
        proxy.clear()
        buf = bytearray(len(data))
        assert limited.read_into("obj", buf) == len(data) and buf == data
        assert proxy.requests["GET"] == 32
        assert 1 < proxy.max_in_flight <= 3
        limited.close()


# -- retries -----------------------------------------------------------------------------------


def test_lost_response_of_put_if_absent_is_recognised_as_a_win(
    azurite: AzureServer, azure_container: str, proxy: FaultProxy
) -> None:
    with _through(proxy, azurite, azure_container) as backend:
        proxy.drop_response(n=1, method="PUT")
        backend.put_if_absent("meta/v2.json", b"mine")  # no ObjectExistsError
        assert backend.read("meta/v2.json") == b"mine"
        assert proxy.forwarded["PUT"] == 2
        assert backend._gate.retries == 1


def test_retried_put_if_absent_still_loses_to_another_writer(
    azurite: AzureServer, azure_container: str, proxy: FaultProxy
) -> None:
    with _through(proxy, azurite, azure_container) as backend:
        _backend(azurite, azure_container).put_if_absent("meta/v2.json", b"theirs")
        proxy.fail(n=1, status=503, code="ServerBusy", method="PUT")
        with pytest.raises(ObjectExistsError):
            backend.put_if_absent("meta/v2.json", b"mine")
        assert backend.read("meta/v2.json") == b"theirs"
        assert backend._gate.retries == 1


def test_throttling_and_cut_downloads_are_retried(
    azurite: AzureServer, azure_container: str, proxy: FaultProxy
) -> None:
    data = data_of(300 * KiB, seed=8)
    with _through(proxy, azurite, azure_container) as backend:
        backend.write("obj", data)
        proxy.fail(n=2, status=503, code="ServerBusy", method="GET")
        assert backend.read("obj") == data
        proxy.cut_body(after_bytes=1000, n=1, method="GET")
        assert backend.read("obj") == data
        proxy.reset(n=1, method="PUT")
        backend.write("obj2", data)
        assert backend.read("obj2") == data
        # 2 throttled GETs + 1 reset PUT; a cut body may be re-read by the SDK's downloader
        assert backend._gate.retries >= 3


# -- listing, pickling, configuration ----------------------------------------------------------


def test_list_is_in_utf8_order_although_azurite_sorts_utf16(backend: AzureBackend) -> None:
    keys = [k for k in TRICKY_KEYS if "\\" not in k] + ["\ufffd", "\U0001f600x", "\ue000"]
    for key in keys:
        backend.write(key, b"x")
    assert [m.key for m in backend.list()] == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_utf8_ordered_reorders_utf16_listings_and_keeps_utf8_ones() -> None:
    keys = ["a", "a\U0001f600", "a\uff01", "b", "\U0001f600", "\U0001f600a", "\uff01", "\ufffd"]
    utf16 = sorted(keys, key=lambda k: k.encode("utf-16-be"))
    utf8 = sorted(keys, key=lambda k: k.encode("utf-8"))
    assert utf16 != utf8
    for order in (utf16, utf8):
        metas = [ObjectMeta(key=k, size=0) for k in order]
        assert [m.key for m in utf8_ordered(iter(metas))] == utf8


def test_pickled_backend_carries_config_not_clients(backend: AzureBackend) -> None:
    backend.write("k", b"v")
    blob = pickle.dumps(backend)
    clone = pickle.loads(blob)
    assert clone._client is None
    assert clone.read("k") == b"v"
    assert len(blob) < 4000
    clone.close()


def test_backend_from_env(azurite: AzureServer, azure_container: str) -> None:
    env = {
        "DATASHARD_STORAGE_TYPE": "azure",
        "DATASHARD_AZURE_CONTAINER": azure_container,
        "DATASHARD_AZURE_PREFIX": "from/env",
        "DATASHARD_AZURE_ACCOUNT": azurite.account_name,
        "DATASHARD_AZURE_KEY": azurite.account_key,
        "DATASHARD_AZURE_ENDPOINT": azurite.endpoint,
        "DATASHARD_AZURE_PART_SIZE": str(MiB),
        "DATASHARD_MAX_CONCURRENCY": "3",
    }
    with backend_from_env(env) as backend:
        assert isinstance(backend, AzureBackend)
        assert backend.root_uri == f"az://{azure_container}/from/env"
        assert backend.config.part_size == MiB
        assert backend.config.max_concurrency == 3
        backend.write("x", b"env")
        assert backend.read("x") == b"env"
        assert azurite.account_key not in repr(backend.config)
    with pytest.raises(ConfigError, match="DATASHARD_AZURE_COLOUR"):
        backend_from_env({**env, "DATASHARD_AZURE_COLOUR": "blue"})


def test_abfs_uris_name_the_account_and_round_trip() -> None:
    config = AzureConfig.from_uri("abfss://tables@acct.dfs.core.windows.net/warehouse/db")
    assert (config.container, config.account_name, config.prefix) == (
        "tables",
        "acct",
        "warehouse/db",
    )
    assert config.root_uri() == "abfss://tables@acct.dfs.core.windows.net/warehouse/db"
    backend = AzureBackend(config)
    uri = backend.uri_for("t/metadata/v1.metadata.json")
    assert (
        uri == "abfss://tables@acct.dfs.core.windows.net/warehouse/db/t/metadata/v1.metadata.json"
    )
    assert backend.key_for(uri) == "t/metadata/v1.metadata.json"
    assert AzureConfig.from_uri("az://tables", account_name="acct").root_uri() == "az://tables"
    with pytest.raises(ConfigError, match="contradicts"):
        AzureConfig.from_uri("abfs://tables@acct.dfs.core.windows.net", account_name="other")
    with pytest.raises(ConfigError, match="container name"):
        AzureConfig.from_uri("az://Bad_Name", account_name="acct")
