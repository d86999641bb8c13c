"""Shared fixtures: real storage servers on 127.0.0.1, started on first use, stopped at the end.

Session scoped (one server per test session, started only if a test asks for it):

- ``ceph_s3`` -> :class:`~datashard.testing.servers.S3Server` (Ceph RADOS Gateway)
- ``moto_s3`` -> :class:`~datashard.testing.servers.S3Server` (moto server)
- ``azurite`` -> :class:`~datashard.testing.servers.AzureServer` (Azurite blob service)
- ``gcs_emulator`` -> :class:`~datashard.testing.servers.GCSServer` (gcp-storage-emulator)

Function scoped, a new empty bucket/container with a unique name for each test:
``ceph_bucket``, ``moto_bucket``, ``azure_container``, ``gcs_bucket`` (each a ``str``).

A server that cannot start makes every test that uses it an ERROR whose message holds the
server's log tail; it is never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The conformance suite lives in the package: let pytest explain its failed asserts.
pytest.register_assert_rewrite("datashard.testing.store")

from datashard.testing.servers import (  # noqa: E402
    AzureServer,
    GCSServer,
    S3Server,
    new_azure_container,
    new_gcs_bucket,
    new_s3_bucket,
    start_azurite,
    start_ceph,
    start_fake_gcs,
    start_gcs,
    start_moto,
    stop_server,
)


@pytest.fixture(scope="session")
def ceph_s3() -> Iterator[S3Server]:
    """Ceph RADOS Gateway (real S3) on a one-node memstore cluster; bucket ``datashard``."""
    server = start_ceph()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """moto server (S3 emulator); bucket ``datashard``."""
    server = start_moto()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzureServer]:
    """Azurite blob service with the development account; container ``datashard``."""
    server = start_azurite()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GCSServer]:
    """gcp-storage-emulator in memory; bucket ``datashard``. Ignores preconditions."""
    server = start_gcs()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[GCSServer]:
    """fake-gcs-server in memory; bucket ``datashard``. Honours generation preconditions."""
    server = start_fake_gcs()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def ceph_bucket(ceph_s3: S3Server, request: pytest.FixtureRequest) -> str:
    """A new empty bucket on ``ceph_s3`` for this test only."""
    return new_s3_bucket(ceph_s3, _prefix(request))


@pytest.fixture
def moto_bucket(moto_s3: S3Server, request: pytest.FixtureRequest) -> str:
    """A new empty bucket on ``moto_s3`` for this test only."""
    return new_s3_bucket(moto_s3, _prefix(request))


@pytest.fixture
def azure_container(azurite: AzureServer, request: pytest.FixtureRequest) -> str:
    """A new empty container on ``azurite`` for this test only."""
    return new_azure_container(azurite, _prefix(request))


@pytest.fixture
def gcs_bucket(gcs_emulator: GCSServer, request: pytest.FixtureRequest) -> str:
    """A new empty bucket on ``gcs_emulator`` for this test only."""
    return new_gcs_bucket(gcs_emulator, _prefix(request))


@pytest.fixture
def fake_gcs_bucket(fake_gcs: GCSServer, request: pytest.FixtureRequest) -> str:
    """A new empty bucket on ``fake_gcs`` for this test only."""
    return new_gcs_bucket(fake_gcs, _prefix(request))


def _prefix(request: pytest.FixtureRequest) -> str:
    """The start of a bucket name that says which test made it (helps reading server logs)."""
    name: str = request.node.name
    return name.removeprefix("test_").replace("_", "-")[:24]
