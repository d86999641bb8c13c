"""Large appends: streamed data files of the target size, written by several cores, with exact
statistics per file; the write properties checked; a failed or killed write leaves nothing."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import datashard.table.producer as producer
from datashard import Schema, create_table, load_table
from datashard.errors import ConfigError, StorageError
from datashard.iceberg.conversions import from_bytes
from datashard.iceberg.manifest import DataFile
from datashard.storage.config import open_backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.servers import S3Server, new_s3_bucket

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "price", "type": "double", "required": False},
        {"id": 3, "name": "name", "type": "string", "required": False},
        {"id": 4, "name": "qty", "type": "int", "required": True},
    ],
)


def _rows(n: int, seed: int = 0) -> pa.Table:
    """``n`` rows: ids in order, doubles with NaNs and nulls, strings with nulls."""
    rng = np.random.default_rng(seed)
    price = rng.normal(size=n)
    price[::97] = np.nan
    names = pa.array([f"name-{i:05d}" for i in rng.integers(0, 50_000, n)])
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "price": pa.array(price, mask=np.arange(n) % 13 == 0),
            "name": pc.if_else(
                pa.array(np.arange(n) % 7 == 0), pa.scalar(None, pa.string()), names
            ),
            "qty": pa.array(rng.integers(-1000, 1000, n, dtype=np.int32)),
        }
    )


def _same_rows(got: pa.Table, want: pa.Table) -> bool:
    """Whether two tables hold the same rows in the same order (NaN equal to NaN)."""

    def cells(t: pa.Table) -> list[list[Any]]:
        return [
            [
                "NaN" if isinstance(v, float) and math.isnan(v) else v
                for v in t.column(c).to_pylist()
            ]
            for c in t.column_names
        ]

    return got.column_names == want.column_names and cells(got) == cells(want)


def _files(table: Any) -> list[DataFile]:
    """The table's data files, in the order of their ids (file order is row order)."""
    files = [task.data_file for task in table.scan().plan_files()]
    return sorted(files, key=lambda df: from_bytes(SCHEMA.fields[0].field_type, df.lower_bounds[1]))


def _check_stats(backend: Any, df: DataFile) -> pa.Table:
    """Assert that ``df``'s record count, size and column statistics are those of its file's
    rows (counted here with pyarrow); return the rows."""
    body = backend.read(backend.key_for(df.file_path))
    assert df.file_size_in_bytes == len(body)
    rows = pq.read_table(io.BytesIO(body))
    assert df.record_count == rows.num_rows
    for field in SCHEMA.fields:
        fid, column = field.field_id, rows.column(field.name)
        assert df.value_counts[fid] == len(column)
        assert df.null_value_counts[fid] == column.null_count
        values = column.drop_null()
        if field.name == "price":
            nans = pc.is_nan(values)
            assert df.nan_value_counts[fid] == pc.sum(nans).as_py()
            values = values.filter(pc.invert(nans))
        lo, hi = pc.min(values).as_py(), pc.max(values).as_py()
        if field.name == "name":  # truncated to 16 characters; these are 10
            assert len(hi) < 16
        assert from_bytes(field.field_type, df.lower_bounds[fid]) == lo
        assert from_bytes(field.field_type, df.upper_bounds[fid]) == hi
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    assert len(df.split_offsets) == meta.num_row_groups
    return rows


def test_large_append_is_split_into_target_size_files_with_exact_stats(warehouse: Any) -> None:
    """60,000 rows into files of about 128 KiB: several files, each closed once it passes the
    target, each with its own exact statistics; the rows read back once each, in order."""
    target = 128 << 10
    table = create_table(
        "t",
        SCHEMA,
        warehouse=warehouse.uri,
        properties={"write.target-file-size-bytes": str(target)},
        **warehouse.options,
    )
    data = _rows(60_000)
    table.append(data)
    files = _files(table)
    assert len(files) >= 4
    assert sum(df.record_count for df in files) == data.num_rows
    pieces = [_check_stats(warehouse.backend, df) for df in files]
    assert all(df.file_size_in_bytes >= target for df in files[:-1])
    # file order is row order: the files' id ranges follow one another
    assert pa.concat_tables(pieces).column("id").to_pylist() == list(range(data.num_rows))
    assert _same_rows(table.to_arrow(), data)
    snap = table.current_snapshot()
    assert snap is not None
    assert snap.summary["added-data-files"] == str(len(files))
    assert snap.summary["added-records"] == str(data.num_rows)


def test_row_groups_honour_the_row_and_byte_limits(local_wh: Any) -> None:
    data = _rows(20_000)
    per_row = data.nbytes // data.num_rows
    for props, most_rows in [
        ({"write.parquet.row-group-limit": "3000"}, 3000),
        ({"write.parquet.row-group-size-bytes": str(per_row * 1000)}, 1000),
    ]:
        name = f"t{most_rows}"
        table = create_table(name, SCHEMA, warehouse=local_wh.uri, properties=props)
        table.append(data)
        (df,) = _files(table)
        meta = pq.ParquetFile(
            io.BytesIO(local_wh.backend.read(local_wh.backend.key_for(df.file_path)))
        ).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert max(sizes) == most_rows
        assert meta.num_row_groups == math.ceil(data.num_rows / most_rows)
        assert len(df.split_offsets) == meta.num_row_groups


def test_append_on_several_cores_keeps_row_order_and_stats(
    warehouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces of a partition written concurrently (the per-core threshold lowered so a small
    input takes that path, on a machine of 4 cores): files in row order, stats exact."""
    monkeypatch.setattr(producer, "PARALLEL_MIN_BYTES", 64 << 10)
    monkeypatch.setattr(producer, "_cores", lambda: 4)
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    data = _rows(40_000, seed=1)
    table.append(data)
    files = _files(table)
    assert len(files) == 4  # one per core: each piece is far below the 512 MiB target
    pieces = [_check_stats(warehouse.backend, df) for df in files]
    assert pa.concat_tables(pieces).column("id").to_pylist() == list(range(data.num_rows))
    assert _same_rows(table.to_arrow(), data)


BAD_PROPERTIES = [
    ("write.target-file-size-bytes", "0", ">= 1"),
    ("write.target-file-size-bytes", "512MB", "whole number"),
    ("write.parquet.row-group-size-bytes", "-5", ">= 1"),
    ("write.parquet.row-group-size-bytes", "1.5", "whole number"),
    ("write.parquet.row-group-limit", "many", "whole number"),
]


@pytest.mark.parametrize(("prop", "value", "expected"), BAD_PROPERTIES)
def test_bad_write_property_is_refused_before_anything_is_written(
    local_wh: Any, prop: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=f"{prop}.*{expected}.*{value}"):
        create_table("t", SCHEMA, warehouse=local_wh.uri, properties={prop: value})
    assert local_wh.keys() == []


@pytest.mark.parametrize(("prop", "value", "expected"), BAD_PROPERTIES[:3])
def test_bad_write_property_set_by_another_writer_refuses_the_append(
    local_wh: Any, prop: str, value: str, expected: str
) -> None:
    """A bad value in metadata written elsewhere: the append raises, the table is unchanged."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append(_rows(10))
    table.flush()
    backend = local_wh.backend
    key = backend.key_for(table.metadata_location)
    metadata = json.loads(backend.read(key))
    metadata.setdefault("properties", {})[prop] = value
    backend.write(key, json.dumps(metadata).encode())
    before = local_wh.snapshot_of_storage()
    writer = load_table("t", warehouse=local_wh.uri)
    with pytest.raises(ConfigError, match=f"{prop}.*{expected}"):
        writer.append(_rows(100))
    assert local_wh.snapshot_of_storage() == before


@pytest.fixture
def s3_via_proxy(moto_s3: S3Server) -> Any:
    """A warehouse on moto reached through a fault proxy, with 5 MiB multipart parts."""
    bucket = new_s3_bucket(moto_s3, "stream")
    with FaultProxy(moto_s3.endpoint_url) as proxy:
        options = {
            "endpoint_url": proxy.url,
            "access_key_id": moto_s3.access_key_id,
            "secret_access_key": moto_s3.secret_access_key,
            "region": moto_s3.region,
            "path_style": True,
            "multipart_threshold": 5 << 20,
            "part_size": 5 << 20,
        }
        yield proxy, f"s3://{bucket}/wh", options, moto_s3.client(), bucket


def _incompressible(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "price": pa.array(rng.random(n)),
            "name": pa.array([None] * n, pa.string()),
            "qty": pa.array(rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32)),
        }
    )


def test_append_failing_mid_stream_leaves_no_data_file_and_no_commit(s3_via_proxy: Any) -> None:
    """The second file's upload is refused at its end (after the first file was published):
    the append raises, the first file is deleted, no multipart upload is left, no snapshot is
    added, and the next append works."""
    proxy, uri, options, client, bucket = s3_via_proxy
    table = create_table(
        "t",
        SCHEMA,
        warehouse=uri,
        properties={"write.target-file-size-bytes": str(6 << 20)},
        **options,
    )
    table.append(_rows(10))
    table.flush()
    backend = open_backend(uri, **options)
    before = {m.key for m in backend.list()}
    # the first CompleteMultipartUpload goes through; the second is refused for good
    proxy.delay(0.0, n=1, method="POST", path=r"uploadId=")
    proxy.fail(n=5, status=403, code="AccessDenied", method="POST", path=r"uploadId=")
    with pytest.raises(StorageError):
        table.append(_incompressible(1_500_000, seed=2))  # ~18 MB: 2+ files of 6 MiB
    assert proxy.injected["delay"] == 1 and proxy.injected["fail"] >= 1
    proxy.clear()
    assert {m.key for m in backend.list()} == before
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    fresh = load_table("t", warehouse=uri, **options)
    assert fresh.count() == 10 and len(fresh.snapshots()) == 1
    fresh.append(_rows(5))
    assert fresh.count() == 15


def test_append_on_s3_holds_at_most_the_write_buffer_of_upload_parts(s3_via_proxy: Any) -> None:
    """Two files stream at once (one per core), each a multipart upload of 5 MiB parts; all the
    upload buffers of the append stay within ``write_buffer_size`` plus one part per file."""
    proxy, uri, options, client, bucket = s3_via_proxy
    table = create_table(
        "t",
        SCHEMA,
        warehouse=uri,
        properties={"write.target-file-size-bytes": str(12 << 20)},
        write_buffer_size=10 << 20,
        **options,
    )
    data = _incompressible(2_000_000, seed=4)  # ~24 MB of Parquet: 2+ files of 3+ parts
    budget = table.backend.write_budget  # type: ignore[attr-defined]
    budget.reset_peak()
    table.append(data)
    assert proxy.requests["POST"] >= 4  # multipart uploads were made (create + complete each)
    assert 5 << 20 <= budget.peak <= (10 << 20) + 2 * (5 << 20)
    assert budget.held == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    got = load_table("t", warehouse=uri, **options).scan().to_arrow().sort_by("id")
    for name in ("id", "price", "qty"):
        assert got.column(name).equals(data.column(name))


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, pyarrow as pa
    from datashard import load_table
    rng = np.random.default_rng(3)
    n = 5_000_000
    data = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "price": pa.array(rng.random(n)),
        "name": pa.array([None] * 1, pa.string()).take(pa.array(np.zeros(n, dtype=np.int64))),
        "qty": pa.array(np.zeros(n, dtype=np.int32)),
    })
    print("ready", flush=True)
    load_table("t", warehouse=sys.argv[1]).append(data)
    print("committed", flush=True)
    """
)


def test_append_killed_mid_stream_leaves_no_visible_data_file(local_wh: Any) -> None:
    """A writer SIGKILLed while its file streams to disk: no data file is listed, the table
    reads as before and takes the next append; the temp file is found by remove_abandoned."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append(_rows(10))
    table.flush()
    before = set(local_wh.keys())
    root = Path(local_wh.uri.removeprefix("file://"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, local_wh.uri],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        temp: list[Path] = []
        while not temp and time.monotonic() < deadline and proc.poll() is None:
            temp = [p for p in root.rglob(".datashard-tmp-*") if p.stat().st_size > 0]
            time.sleep(0.005)
        assert temp, "the writer never started streaming a data file"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert set(local_wh.keys()) == before
    fresh = load_table("t", warehouse=local_wh.uri)
    assert fresh.count() == 10 and len(fresh.snapshots()) == 1
    fresh.append(_rows(5))
    assert fresh.count() == 15
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    removed = local_wh.backend.remove_abandoned("", later)
    assert removed and all(".datashard-tmp-" in uri for uri in removed)
    assert not list(root.rglob(".datashard-tmp-*"))


def test_only_repetitive_columns_are_dictionary_encoded(local_wh: Any) -> None:
    """Unique ids are written plain (a dictionary of them saves nothing and costs memory);
    a column of a few repeated values keeps its dictionary (the file stays small)."""
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    n = 50_000
    table.append(
        pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.int64)),
                "price": pa.array(np.arange(n) % 3, pa.float64()),
                "name": pa.array(["a", "b"] * (n // 2)),
                "qty": pa.array(np.arange(n, dtype=np.int32)),
            }
        )
    )
    (df,) = _files(table)
    body = local_wh.backend.read(local_wh.backend.key_for(df.file_path))
    group = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0)
    dictionary = {
        group.column(i).path_in_schema: group.column(i).has_dictionary_page
        for i in range(group.num_columns)
    }
    assert dictionary == {"id": False, "price": True, "name": True, "qty": False}
    assert table.count() == n
