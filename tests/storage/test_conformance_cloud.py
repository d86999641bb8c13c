"""The storage conformance suite (datashard.testing.store) bound to ``az://`` on Azurite and
``gs://`` on the GCS emulator, the process race on ``put_if_absent`` included.

The back doors go around datashard entirely: the Azure SDK's own client, and
``google-cloud-storage``'s own client.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from datashard.storage.azure import AzureBackend
from datashard.storage.azure_config import AzureConfig
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.storage.gcs import GCSBackend
from datashard.storage.gcs_config import GCSConfig
from datashard.testing.server_process import free_port
from datashard.testing.servers import AzureServer, GCSServer
from datashard.testing.store import StorageConformance

#: The GCS emulator ignores preconditions (shared/notes/servers.md): it stores a second
#: ``ifGenerationMatch=0`` upload instead of answering 412. tests/storage/test_gcs.py proves that
#: datashard sends the precondition, which real GCS enforces.
GCS_IGNORES_PRECONDITIONS = (
    "gcp-storage-emulator ignores ifGenerationMatch=0 and overwrites; real GCS answers 412 "
    "(test_gcs.py proves the precondition is sent)"
)
AZURE_BACKSLASH = (
    "Azure Blob Storage (and Azurite) store '\\' in a blob name as '/': the key 'bs\\x' comes "
    "back as 'bs/x' (test_azure.py checks the order of every other tricky key)"
)
AZURITE_CONTROL_CHARACTERS = (
    "Azurite answers HTTP 500 to a listing that holds a blob name with a control character"
)


@functools.lru_cache(maxsize=8)
def _azure_service(url: str, account: str, key: str) -> Any:
    """One SDK client per server for the back door (a new client per call is slow)."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(url, credential={"account_name": account, "account_key": key})


@functools.lru_cache(maxsize=8)
def _gcs_client(endpoint: str, project: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )


class TestAzure(StorageConformance):
    """``az://`` on Azurite, a fresh container per test, shared-key credentials."""

    expected_failures = {
        "test_list_is_recursive_and_lexicographic": AZURE_BACKSLASH,
        "test_control_characters_in_keys_round_trip": AZURITE_CONTROL_CHARACTERS,
    }

    @pytest.fixture
    def backend(self, azurite: AzureServer, azure_container: str) -> Iterator[StorageBackend]:
        backend = open_backend(
            f"az://{azure_container}/root",
            account_name=azurite.account_name,
            account_key=azurite.account_key,
            account_url=azurite.endpoint,
            retry_first_delay=0.05,
            retry_max_delay=0.5,
            retry_attempts=5,
        )
        assert isinstance(backend, AzureBackend)
        with backend:
            yield backend

    @pytest.fixture
    def offline_backend(self, backend: StorageBackend) -> Iterator[StorageBackend]:
        """The same container on a port where nothing listens, with one attempt per request."""
        assert isinstance(backend.config, AzureConfig)
        dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
        twin = AzureBackend(replace(backend.config, account_url=dead, retry_attempts=1))
        with twin:
            yield twin

    def _blob(self, backend: StorageBackend, key: str) -> Any:
        cfg = backend.config
        assert isinstance(cfg, AzureConfig)
        service = _azure_service(
            cfg.account_url or "", cfg.account_name or "", cfg.account_key or ""
        )
        return service.get_blob_client(cfg.container, f"{cfg.prefix}/{key}")

    def raw_put(self, backend: StorageBackend, key: str, data: bytes) -> None:
        self._blob(backend, key).upload_blob(data, overwrite=True)

    def raw_get(self, backend: StorageBackend, key: str) -> bytes:
        data: bytes = self._blob(backend, key).download_blob().readall()
        return data


def _gcs_backend(server: GCSServer, bucket: str) -> GCSBackend:
    """``gs://<bucket>/root`` on ``server``, anonymous, with quick retries."""
    backend = open_backend(
        f"gs://{bucket}/root",
        endpoint=server.endpoint,
        project=server.project,
        anonymous=True,
        retry_first_delay=0.05,
        retry_max_delay=0.5,
        retry_attempts=5,
    )
    assert isinstance(backend, GCSBackend)
    return backend


class TestGCS(StorageConformance):
    """``gs://`` on gcp-storage-emulator, a fresh bucket per test, anonymous credentials."""

    expected_failures = {
        "test_put_if_absent_loses_to_an_existing_object": GCS_IGNORES_PRECONDITIONS,
        "test_put_if_absent_loses_to_a_written_object": GCS_IGNORES_PRECONDITIONS,
        "test_put_if_absent_loses_to_an_empty_object": GCS_IGNORES_PRECONDITIONS,
        "test_put_if_absent_loses_to_a_back_door_object": GCS_IGNORES_PRECONDITIONS,
        "test_race_exactly_one_put_if_absent_wins": GCS_IGNORES_PRECONDITIONS,
    }
    # Eight writers probing forward collide on some version in nearly every run, and then the
    # emulator lets both "create" it; a run without a collision passes.
    possible_failures = {"test_concurrent_commit_loops_lose_nothing": GCS_IGNORES_PRECONDITIONS}
    # GCS batches hold 100 deletes, so 250 keys cross batches; 1,005 objects took the emulator
    # (which slows with every object it holds) about three minutes.
    many_delete_keys = 250

    @pytest.fixture
    def backend(self, gcs_emulator: GCSServer, gcs_bucket: str) -> Iterator[StorageBackend]:
        with _gcs_backend(gcs_emulator, gcs_bucket) as backend:
            yield backend

    @pytest.fixture
    def offline_backend(self, backend: StorageBackend) -> Iterator[StorageBackend]:
        assert isinstance(backend.config, GCSConfig)
        dead = f"http://127.0.0.1:{free_port()}"
        twin = GCSBackend(replace(backend.config, endpoint=dead, retry_attempts=1))
        with twin:
            yield twin

    def _blob(self, backend: StorageBackend, key: str) -> Any:
        cfg = backend.config
        assert isinstance(cfg, GCSConfig)
        client = _gcs_client(cfg.endpoint or "", cfg.project or "")
        return client.bucket(cfg.bucket).blob(f"{cfg.prefix}/{key}")

    def raw_put(self, backend: StorageBackend, key: str, data: bytes) -> None:
        self._blob(backend, key).upload_from_string(data)

    def raw_get(self, backend: StorageBackend, key: str) -> bytes:
        data: bytes = self._blob(backend, key).download_as_bytes()
        return data


class TestFakeGCS(TestGCS):
    """``gs://`` on fake-gcs-server, which honours generation preconditions: the whole
    contract, the conditional create and its race included, with no expected failure.

    It has no JSON-API batch endpoint, so ``delete_many`` here runs the backend's fallback
    (one delete per key once a batch answer is not multipart); the batched path itself is
    covered on the other emulator above."""

    expected_failures: dict[str, str] = {}
    possible_failures: dict[str, str] = {}

    @pytest.fixture
    def backend(self, fake_gcs: GCSServer, fake_gcs_bucket: str) -> Iterator[StorageBackend]:
        with _gcs_backend(fake_gcs, fake_gcs_bucket) as backend:
            yield backend
