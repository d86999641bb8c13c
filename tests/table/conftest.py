"""Fixtures for table tests: warehouses on a local directory, moto S3 and Ceph RGW.

``warehouse`` is parametrized over the three; a test takes it and gets a :class:`Warehouse`
holding a fresh, empty storage root and a picklable backend for it (sent to worker processes as
is). ``local_wh`` is a local one only; ``make_local_wh`` makes more of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend


@dataclass
class Warehouse:
    kind: str
    uri: str
    options: dict[str, Any]
    backend: StorageBackend
    pyiceberg_props: dict[str, str]

    def keys(self) -> list[str]:
        return [m.key for m in self.backend.list("")]

    def snapshot_of_storage(self) -> dict[str, bytes]:
        """Every object's bytes (to prove a rejected operation changed nothing)."""
        return {k: self.backend.read(k) for k in self.keys()}


def local_warehouse(tmp_path: Path) -> Warehouse:
    uri = f"file://{tmp_path}/wh"
    return Warehouse("local", uri, {}, open_backend(uri), {})


def s3_warehouse(server: Any, bucket: str) -> Warehouse:
    options = {
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
    }
    uri = f"s3://{bucket}/wh-{uuid.uuid4().hex[:8]}"
    props = {
        "s3.endpoint": server.endpoint_url,
        "s3.access-key-id": server.access_key_id,
        "s3.secret-access-key": server.secret_access_key,
        "s3.region": server.region,
        "s3.force-virtual-addressing": "false",
    }
    return Warehouse(server.kind, uri, options, open_backend(uri, **options), props)


@pytest.fixture(params=["local", "moto", "ceph"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """A fresh warehouse on each backend kind."""
    if request.param == "local":
        return local_warehouse(tmp_path)
    server = request.getfixturevalue(f"{request.param}_s3")
    bucket = request.getfixturevalue(f"{request.param}_bucket")
    return s3_warehouse(server, bucket)


@pytest.fixture
def local_wh(tmp_path: Path) -> Warehouse:
    return local_warehouse(tmp_path)


@pytest.fixture
def make_local_wh() -> Callable[[Path], Warehouse]:
    return local_warehouse


@pytest.fixture
def ceph_wh(request: pytest.FixtureRequest) -> Warehouse:
    """A fresh warehouse on Ceph RGW."""
    return s3_warehouse(request.getfixturevalue("ceph_s3"), request.getfixturevalue("ceph_bucket"))
