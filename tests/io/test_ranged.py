"""RangedReader: a seekable file object over any backend, pinned to the object it opened."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datashard.errors import (
    ConfigError,
    InvalidPathError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from datashard.io.ranged import RangedReader, ReaderConfig, split_object_uri
from datashard.storage.config import open_backend
from datashard.testing.faults import FaultyBackend


def _parquet_bytes(rows: int = 50_000) -> tuple[bytes, pa.Table]:
    table = pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": np.linspace(0.0, 1.0, rows),
            "name": [f"row-{i}" for i in range(rows)],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=10_000)
    return sink.getvalue(), table


@pytest.fixture
def local(tmp_path: Path) -> FaultyBackend:
    return FaultyBackend(open_backend(f"file://{tmp_path}"))


def test_sequential_reads_a_whole_object_in_few_requests(local: FaultyBackend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    local.write("blob", data)
    reader = RangedReader(local, "blob", ReaderConfig("sequential", buffer_size=256 * 1024))
    chunks = []
    while chunk := reader.read(1000):
        chunks.append(chunk)
    assert b"".join(chunks) == data
    assert reader.requests == [(i, i + 256 * 1024) for i in range(0, len(data), 256 * 1024)]


def test_range_strategy_fetches_exactly_what_is_asked(local: FaultyBackend) -> None:
    data = bytes(range(256)) * 64
    local.write("blob", data)
    reader = RangedReader(local, "blob", ReaderConfig("range"))
    reader.seek(100)
    assert reader.read(10) == data[100:110]
    reader.seek(-5, io.SEEK_END)
    assert reader.read(100) == data[-5:]
    assert reader.read(1) == b""  # at the end: no request
    assert reader.requests == [(100, 110), (len(data) - 5, len(data))]


class _RecordingFile(io.BytesIO):
    """An in-memory file that records the ``(start, end)`` of every read pyarrow makes."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, size: int | None = -1) -> bytes:
        start = self.tell()
        out = super().read(size)
        if out:
            self.reads.append((start, start + len(out)))
        return out


def test_pyarrow_reads_parquet_through_both_strategies(local: FaultyBackend) -> None:
    data, table = _parquet_bytes()
    local.write("t.parquet", data)
    plain = _RecordingFile(data)
    pq.ParquetFile(plain).read(columns=["id", "name"])

    ranged = RangedReader(local, "t.parquet", ReaderConfig("range"))
    assert pq.ParquetFile(ranged).read(columns=["id", "name"]).equals(table.select(["id", "name"]))
    # range: one request per read pyarrow makes, exactly those bytes, nothing buffered
    assert ranged.requests == plain.reads
    assert sum(end - start for start, end in ranged.requests) < len(data)

    buffer_size = 64 * 1024
    sequential = RangedReader(local, "t.parquet", ReaderConfig("sequential", buffer_size))
    assert (
        pq.ParquetFile(sequential).read(columns=["id", "name"]).equals(table.select(["id", "name"]))
    )
    # sequential: read-ahead requests of at least a full buffer (or up to the end of the
    # object), together covering every byte pyarrow read, in fewer requests than its reads
    assert all(end - start >= buffer_size or end == len(data) for start, end in sequential.requests)
    covered = np.zeros(len(data), dtype=bool)
    for start, end in sequential.requests:
        covered[start:end] = True
    assert all(covered[start:end].all() for start, end in plain.reads)
    assert len(sequential.requests) < sum(
        (end - start) // buffer_size + 1 for start, end in plain.reads
    )
    assert local.count("read_range") == len(ranged.requests) + len(sequential.requests)


def test_pandas_reads_parquet_through_a_reader(local: FaultyBackend) -> None:
    data, table = _parquet_bytes(1000)
    local.write("t.parquet", data)
    frame = pd.read_parquet(RangedReader(local, "t.parquet", ReaderConfig("range")))
    pd.testing.assert_frame_equal(frame, table.to_pandas())


def test_replaced_object_raises_instead_of_mixing_bytes(local: FaultyBackend) -> None:
    local.write("blob", b"a" * 1000)
    reader = RangedReader(local, "blob", ReaderConfig("range"))
    assert reader.read(10) == b"a" * 10
    local.write("blob", b"b" * 1000)
    with pytest.raises(PreconditionFailedError) as info:
        reader.read(10)
    assert info.value.key == "blob"


def test_unpinned_reader_follows_the_new_object(local: FaultyBackend) -> None:
    local.write("blob", b"a" * 1000)
    reader = RangedReader(local, "blob", ReaderConfig("range", pin=False))
    local.write("blob", b"b" * 1000)
    assert reader.read(3) == b"bbb"


def test_file_protocol_edges(local: FaultyBackend) -> None:
    local.write("blob", b"0123456789")
    reader = RangedReader(local, "blob")
    assert (reader.readable(), reader.seekable(), reader.size()) == (True, True, 10)
    assert reader.seek(0, io.SEEK_END) == 10 and reader.read() == b""
    assert reader.seek(20) == 20 and reader.read(5) == b""
    buf = bytearray(4)
    reader.seek(8)
    assert reader.readinto(buf) == 2 and buf[:2] == b"89"
    with pytest.raises(ValueError, match="negative seek"):
        reader.seek(-1)
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_missing_object_raises_at_open(local: FaultyBackend) -> None:
    with pytest.raises(ObjectNotFoundError):
        RangedReader(local, "nope")


def test_open_by_uri(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "obj.bin").write_bytes(b"hello world")
    reader = RangedReader.open(f"file://{tmp_path}/d/obj.bin", ReaderConfig("range"))
    assert reader.read() == b"hello world"
    assert reader.name == f"file://{tmp_path}/d/obj.bin"


def test_bad_reader_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="strategy"):
        ReaderConfig("random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="buffer_size"):
        ReaderConfig("sequential", buffer_size=0)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.parquet", ("s3://bucket/a", "b.parquet")),
        ("s3://bucket/b.parquet", ("s3://bucket", "b.parquet")),
        ("file:///tmp/x/y", ("file:///tmp/x", "y")),
        ("/tmp/x/y", ("/tmp/x", "y")),
        ("y.bin", (".", "y.bin")),
    ],
)
def test_split_object_uri(uri: str, expected: tuple[str, str]) -> None:
    assert split_object_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/", "s3://bucket/a/", ""])
def test_split_object_uri_refuses_roots(uri: str) -> None:
    with pytest.raises(InvalidPathError):
        split_object_uri(uri)
