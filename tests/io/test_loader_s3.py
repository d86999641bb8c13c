"""The row-group loader on a real S3 server (Ceph RGW), requests counted at a loopback proxy,
and on table snapshots."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datashard import Schema, create_table
from datashard.io.loader import RowGroupLoader
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.faults import FaultyBackend
from datashard.testing.servers import S3Server

FILES, GROUPS, ROWS = 3, 4, 2_000  # row groups per file, rows per row group


def _s3(server: S3Server, bucket: str, endpoint: str, **extra: Any) -> StorageBackend:
    return open_backend(
        f"s3://{bucket}/loader",
        endpoint_url=endpoint,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        region=server.region,
        path_style=True,
        **extra,
    )


def _files(backend: StorageBackend) -> list[str]:
    keys = []
    for f in range(FILES):
        ids = np.arange(f * GROUPS * ROWS, (f + 1) * GROUPS * ROWS, dtype=np.int64)
        table = pa.table({"id": ids, "x": ids * 2.0, "pad": [b"p" * 100] * len(ids)})
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=ROWS, compression="NONE")
        key = f"data/{f}.parquet"
        backend.write(key, sink.getvalue())
        keys.append(key)
    return keys


@pytest.fixture
def proxy(ceph_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(ceph_s3.endpoint_url) as running:
        yield running


def test_second_epoch_makes_no_footer_request_on_s3(
    ceph_s3: S3Server, ceph_bucket: str, proxy: FaultProxy
) -> None:
    backend = _s3(ceph_s3, ceph_bucket, proxy.url)
    keys = _files(backend)
    sizes = {k: backend.head(k).size for k in keys}
    loader = RowGroupLoader([(backend, k, sizes[k]) for k in keys], columns=["id", "x"])
    groups = FILES * GROUPS

    proxy.requests.clear()
    first = [i for b in loader.iter_epoch(0) for i in b.column("id").to_pylist()]
    assert sorted(first) == list(range(FILES * GROUPS * ROWS))
    # one footer GET per file, then one GET per row group (id and x are adjacent: coalesced,
    # and a row group's chunks are far below the parallel-read threshold: one request)
    assert proxy.requests == {"GET": FILES + groups}

    proxy.requests.clear()
    second = [i for b in loader.iter_epoch(1) for i in b.column("id").to_pylist()]
    assert sorted(second) == sorted(first)
    assert proxy.requests == {"GET": groups}  # epoch two: no footer request at all
    assert loader.footers.fetches == FILES


def test_only_the_chosen_columns_bytes_cross_the_wire(ceph_s3: S3Server, ceph_bucket: str) -> None:
    backend = FaultyBackend(_s3(ceph_s3, ceph_bucket, ceph_s3.endpoint_url))
    keys = _files(backend)
    loader = RowGroupLoader([(backend, k) for k in keys], columns=["x"], coalesce_gap=0)
    got = loader.to_arrow()
    assert got.column_names == ["x"]
    assert got.column("x").to_pylist() == [i * 2.0 for i in range(FILES * GROUPS * ROWS)]
    expected_spans = []
    for key in keys:
        md = pq.read_metadata(io.BytesIO(backend.inner.read(key)))
        for rg in range(md.num_row_groups):
            chunk = md.row_group(rg).column(1)  # x
            start = min(chunk.data_page_offset, chunk.dictionary_page_offset or 1 << 62)
            expected_spans.append((key, start, start + chunk.total_compressed_size))
    assert backend.count("read_into") == len(expected_spans)
    read_keys = sorted(k for m, k in backend.calls if m == "read_into")
    assert read_keys == sorted(k for k, _, _ in expected_spans)


def test_large_row_groups_are_fetched_in_concurrent_parts(
    ceph_s3: S3Server, ceph_bucket: str, proxy: FaultProxy
) -> None:
    part = 256 * 1024
    backend = _s3(ceph_s3, ceph_bucket, proxy.url, read_threshold=part, read_part_size=part)
    ids = np.arange(400_000, dtype=np.int64)
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": ids}), sink, row_group_size=200_000, compression="NONE")
    backend.write("big.parquet", sink.getvalue())
    loader = RowGroupLoader([(backend, "big.parquet")])
    proxy.requests.clear()
    assert loader.to_arrow().column("id").to_pylist() == ids.tolist()
    # each ~1.6 MB row group is split into parts of 256 KiB fetched at once
    assert proxy.requests["GET"] > 1 + 2 * 2
    assert proxy.max_in_flight > 1


def _events_schema() -> Schema:
    return Schema(
        schema_id=1,
        fields=[
            {"id": 1, "name": "user_id", "type": "long", "required": True},
            {"id": 2, "name": "event", "type": "string", "required": True},
        ],
    )


def _fill(table: Any) -> None:
    for n in range(3):
        table.append_records([{"user_id": n * 100 + i, "event": f"e{i % 3}"} for i in range(100)])


def test_loader_reads_a_table_snapshot(tmp_path: Path) -> None:
    table = create_table("events", _events_schema(), warehouse=f"file://{tmp_path}")
    _fill(table)
    old = table.current_snapshot()
    assert old is not None
    table.append_records([{"user_id": 999, "event": "late"}])

    loader = RowGroupLoader.from_table(table, columns=["user_id"])
    assert sorted(loader.to_pandas()["user_id"]) == sorted(table.to_pandas()["user_id"])
    back = RowGroupLoader.from_table(table, columns=["user_id"], snapshot_id=old.snapshot_id)
    expected = [n * 100 + i for n in range(3) for i in range(100)]
    assert sorted(back.to_pandas()["user_id"]) == expected


def test_loader_reads_a_table_on_s3_without_head_requests(
    ceph_s3: S3Server, ceph_bucket: str, proxy: FaultProxy
) -> None:
    warehouse = f"s3://{ceph_bucket}/wh"
    options = {
        "endpoint_url": proxy.url,
        "access_key_id": ceph_s3.access_key_id,
        "secret_access_key": ceph_s3.secret_access_key,
        "region": ceph_s3.region,
        "path_style": True,
    }
    table = create_table("events", _events_schema(), warehouse=warehouse, **options)
    _fill(table)
    loader = RowGroupLoader.from_table(table, columns=["user_id", "event"])
    proxy.requests.clear()
    frame = loader.to_pandas()
    assert sorted(frame["user_id"]) == [n * 100 + i for n in range(3) for i in range(100)]
    # sizes come from the manifests: one footer GET and one row-group GET per file, no HEAD
    assert proxy.requests == {"GET": 2 * 3}
