"""The row-group loader and the ranged reader on Azure (Azurite) and GCS (its emulator)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datashard.io.loader import RowGroupLoader
from datashard.io.ranged import RangedReader, ReaderConfig
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.testing.faults import FaultyBackend
from datashard.testing.servers import AzureServer, GCSServer

FILES, GROUPS, ROWS = 2, 3, 1_000


@pytest.fixture(params=["azure", "gcs"])
def cloud(request: pytest.FixtureRequest) -> StorageBackend:
    run = uuid.uuid4().hex[:8]
    options: dict[str, Any]
    if request.param == "azure":
        azurite: AzureServer = request.getfixturevalue("azurite")
        container: str = request.getfixturevalue("azure_container")
        options = {
            "account_name": azurite.account_name,
            "account_key": azurite.account_key,
            "account_url": azurite.endpoint,
        }
        return open_backend(f"az://{container}/loader-{run}", **options)
    gcs: GCSServer = request.getfixturevalue("gcs_emulator")
    bucket: str = request.getfixturevalue("gcs_bucket")
    options = {"endpoint": gcs.endpoint, "project": gcs.project, "anonymous": True}
    return open_backend(f"gs://{bucket}/loader-{run}", **options)


def _files(backend: StorageBackend) -> list[str]:
    keys = []
    for f in range(FILES):
        ids = np.arange(f * GROUPS * ROWS, (f + 1) * GROUPS * ROWS, dtype=np.int64)
        sink = io.BytesIO()
        pq.write_table(pa.table({"id": ids, "y": ids % 13}), sink, row_group_size=ROWS)
        backend.write(f"data/{f}.parquet", sink.getvalue())
        keys.append(f"data/{f}.parquet")
    return keys


def test_loader_reads_every_row_once_per_epoch_with_one_footer_read_each(
    cloud: StorageBackend,
) -> None:
    backend = FaultyBackend(cloud)
    keys = _files(backend)
    halves = [
        RowGroupLoader(
            [(backend, k) for k in keys], columns=["id"], rank=r, world_size=2, shuffle=True, seed=3
        )
        for r in range(2)
    ]
    total = FILES * GROUPS * ROWS
    for epoch in range(2):
        ids = [i for h in halves for b in h.iter_epoch(epoch) for i in b.column("id").to_pylist()]
        assert sorted(ids) == list(range(total))
    assert [h.footers.fetches for h in halves] == [FILES, FILES]


def test_ranged_reader_lets_pyarrow_read_a_cloud_object(cloud: StorageBackend) -> None:
    keys = _files(cloud)
    reader = RangedReader(cloud, keys[1], ReaderConfig("range"))
    table = pq.ParquetFile(reader).read(columns=["y"])
    expected = [i % 13 for i in range(GROUPS * ROWS, 2 * GROUPS * ROWS)]
    assert table.column("y").to_pylist() == expected
