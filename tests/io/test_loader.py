"""RowGroupLoader: footers once, only the chosen column chunks, exactly-once sharding."""

from __future__ import annotations

import io
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datashard.errors import ConfigError, CorruptFileError, ObjectNotFoundError, ValidationError
from datashard.io.loader import RowGroupLoader, _coalesce
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.testing.faults import FaultyBackend

ROWS_PER_FILE = 3_000
ROW_GROUP = 500


def _write_files(backend: StorageBackend, count: int = 4) -> list[str]:
    keys = []
    for f in range(count):
        ids = np.arange(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE, dtype=np.int64)
        table = pa.table(
            {
                "id": ids,
                "feature": ids.astype(np.float64) * 0.5,
                "label": [f"label-{i % 7}" for i in ids],
                "blob": [bytes([i % 251]) * 64 for i in ids],
            }
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=ROW_GROUP)
        key = f"data/part-{f}.parquet"
        backend.write(key, sink.getvalue())
        keys.append(key)
    return keys


@pytest.fixture
def backend(tmp_path: Path) -> FaultyBackend:
    return FaultyBackend(open_backend(f"file://{tmp_path}"))


def _ids(loader: RowGroupLoader, epoch: int) -> list[int]:
    return [i for batch in loader.iter_epoch(epoch) for i in batch.column("id").to_pylist()]


def test_reads_every_row_with_the_chosen_columns(backend: FaultyBackend) -> None:
    keys = _write_files(backend)
    loader = RowGroupLoader([(backend, k) for k in keys], columns=["id", "label"], batch_size=200)
    batches = list(loader)
    assert all(b.schema.names == ["id", "label"] for b in batches)
    assert max(b.num_rows for b in batches) == 200
    table = pa.Table.from_batches(batches)
    expected = pa.concat_tables(
        [pq.read_table(io.BytesIO(backend.read(k)), columns=["id", "label"]) for k in keys]
    )
    assert table.equals(expected)


def test_second_epoch_reads_no_footer(backend: FaultyBackend) -> None:
    keys = _write_files(backend)
    loader = RowGroupLoader([(backend, k) for k in keys], columns=["id"])
    _ids(loader, 0)
    first = Counter(method for method, _ in backend.calls)
    # footers: one suffix read each (a head + a tail range where the backend has no suffix GET)
    assert loader.footers.fetches == len(keys)
    backend.reset()
    assert len(_ids(loader, 1)) == len(keys) * ROWS_PER_FILE
    second = Counter(method for method, _ in backend.calls)
    assert loader.footers.fetches == len(keys)
    assert second["head"] == 0 and second["read_range"] == 0  # no footer request at all
    assert second["read_into"] == first["read_into"] == len(keys) * ROWS_PER_FILE // ROW_GROUP


def test_known_sizes_need_no_head(backend: FaultyBackend) -> None:
    keys = _write_files(backend, 2)
    sources = [(backend, k, backend.inner.head(k).size) for k in keys]
    loader = RowGroupLoader(sources, columns=["id"])
    assert len(_ids(loader, 0)) == 2 * ROWS_PER_FILE
    assert backend.count("head") == 0
    assert backend.count("read_range") == len(keys)  # exactly one footer request per file


class _RangeRecorder(FaultyBackend):
    """Records the byte span of every read_into and the most reads in flight at once."""

    def __init__(self, inner: StorageBackend) -> None:
        super().__init__(inner)
        self.spans: list[tuple[str, int, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._flight = threading.Lock()

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        with self._flight:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.spans.append((key, offset, offset + memoryview(buffer).nbytes))
        try:
            threading.Event().wait(0.02)  # long enough for overlapping reads to show
            return super().read_into(key, buffer, offset)
        finally:
            with self._flight:
                self.in_flight -= 1


def test_only_the_chosen_column_chunks_are_fetched(tmp_path: Path) -> None:
    backend = _RangeRecorder(open_backend(f"file://{tmp_path}"))
    keys = _write_files(backend, 1)
    loader = RowGroupLoader([(backend, keys[0])], columns=["id", "blob"], coalesce_gap=0)
    assert len(_ids(loader, 0)) == ROWS_PER_FILE
    md = pq.read_metadata(io.BytesIO(backend.read(keys[0])))
    wanted = []
    for rg in range(md.num_row_groups):
        for j in range(md.num_columns):
            chunk = md.row_group(rg).column(j)
            if chunk.path_in_schema in ("id", "blob"):
                start = min(chunk.data_page_offset, chunk.dictionary_page_offset or 1 << 62)
                wanted.append((start, start + chunk.total_compressed_size))
    fetched = sorted((s, e) for _, s, e in backend.spans)
    assert fetched == sorted(wanted)  # id and blob are not adjacent: two requests per group
    skipped = sum(
        md.row_group(rg).column(j).total_compressed_size
        for rg in range(md.num_row_groups)
        for j in (1, 2)
    )
    assert sum(e - s for s, e in fetched) + skipped < backend.head(keys[0]).size


def test_adjacent_chunks_are_coalesced(tmp_path: Path) -> None:
    backend = _RangeRecorder(open_backend(f"file://{tmp_path}"))
    keys = _write_files(backend, 1)
    loader = RowGroupLoader([(backend, keys[0])], columns=["id", "feature"], coalesce_gap=0)
    _ids(loader, 0)
    assert len(backend.spans) == ROWS_PER_FILE // ROW_GROUP  # one request per row group
    assert _coalesce([(0, 10), (10, 20), (25, 30), (5, 8)], 0) == [(0, 20), (25, 30)]
    assert _coalesce([(0, 10), (15, 20)], 5) == [(0, 20)]


def test_prefetch_bounds_reads_in_flight(tmp_path: Path) -> None:
    backend = _RangeRecorder(open_backend(f"file://{tmp_path}"))
    keys = _write_files(backend, 3)
    loader = RowGroupLoader([(backend, k) for k in keys], columns=["id"], prefetch=2)
    assert len(_ids(loader, 0)) == 3 * ROWS_PER_FILE
    assert backend.max_in_flight <= 2
    assert backend.max_in_flight == 2  # and it does overlap


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_group_is_read_exactly_once_per_epoch(
    backend: FaultyBackend, world_size: int, shuffle: bool
) -> None:
    keys = _write_files(backend, 3)
    total = 3 * ROWS_PER_FILE
    orders = []
    for epoch in range(2):
        seen: list[int] = []
        for rank in range(world_size):
            for workers in (1, 2):
                loader = RowGroupLoader(
                    [(backend, k) for k in keys],
                    columns=["id"],
                    rank=rank,
                    world_size=world_size,
                    shuffle=shuffle,
                    seed=7,
                )
                for worker in range(workers):
                    batches = loader.iter_epoch(epoch, worker, workers)
                    ids = [i for b in batches for i in b.column("id").to_pylist()]
                    if workers == 1:
                        seen.extend(ids)
                        if rank == 0:
                            orders.append(ids)
        assert sorted(seen) == list(range(total))  # every row once, no duplicate
    if shuffle:
        assert orders[0] != orders[1]  # a new order every epoch
    else:
        assert orders[0] == orders[1]


def test_shuffle_is_deterministic_for_a_seed(backend: FaultyBackend) -> None:
    keys = _write_files(backend, 2)
    make = lambda seed: RowGroupLoader(  # noqa: E731
        [(backend, k) for k in keys], columns=["id"], shuffle=True, seed=seed
    )
    assert _ids(make(1), 3) == _ids(make(1), 3)
    assert _ids(make(1), 3) != _ids(make(2), 3)


def test_direct_backend(tmp_path: Path) -> None:
    disk = Path("/var/tmp") / f"datashard-loader-{tmp_path.name}"
    disk.mkdir(parents=True, exist_ok=True)
    try:
        backend = open_backend(f"direct://{disk}")
        keys = _write_files(backend, 2)
        loader = RowGroupLoader([(backend, k) for k in keys], columns=["id", "feature"])
        frame = loader.to_pandas()
        assert frame["id"].tolist() == list(range(2 * ROWS_PER_FILE))
        assert frame["feature"].sum() == pytest.approx(sum(range(2 * ROWS_PER_FILE)) * 0.5)
    finally:
        import shutil

        shutil.rmtree(disk, ignore_errors=True)


def test_uris_as_sources(tmp_path: Path) -> None:
    backend = open_backend(f"file://{tmp_path}")
    keys = _write_files(backend, 2)
    loader = RowGroupLoader([f"file://{tmp_path}/{k}" for k in keys], columns=["id"])
    assert loader.to_arrow().num_rows == 2 * ROWS_PER_FILE


def test_not_parquet_names_the_object(backend: FaultyBackend) -> None:
    backend.write("bad.parquet", b"this is a csv file, not parquet\n" * 10)
    with pytest.raises(CorruptFileError, match="bad.parquet"):
        RowGroupLoader([(backend, "bad.parquet")]).tasks()


def test_truncated_footer_names_the_object(backend: FaultyBackend) -> None:
    keys = _write_files(backend, 1)
    data = backend.read(keys[0])
    backend.write("cut.parquet", data[:100] + data[-8:])  # footer length points past the start
    with pytest.raises(CorruptFileError, match="cut.parquet"):
        RowGroupLoader([(backend, "cut.parquet")]).tasks()
    backend.write("tiny.parquet", b"PAR1")
    with pytest.raises(CorruptFileError, match="tiny.parquet"):
        RowGroupLoader([(backend, "tiny.parquet")]).tasks()


def test_missing_column_names_column_and_object(backend: FaultyBackend) -> None:
    keys = _write_files(backend, 1)
    with pytest.raises(ValidationError, match=r"'nope'.*part-0\.parquet"):
        RowGroupLoader([(backend, keys[0])], columns=["id", "nope"]).tasks()


def test_missing_object(backend: FaultyBackend) -> None:
    with pytest.raises(ObjectNotFoundError):
        RowGroupLoader([(backend, "missing.parquet")]).tasks()


@pytest.mark.parametrize(
    "options",
    [{"rank": 2, "world_size": 2}, {"world_size": 0}, {"prefetch": 0}, {"batch_size": 0}],
)
def test_bad_settings_raise_config_error(backend: FaultyBackend, options: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        RowGroupLoader([(backend, "x.parquet")], **options)


def test_torch_dataloader_with_workers_reads_every_row_once(tmp_path: Path) -> None:
    import torch  # the dev extra installs the CPU build
    from torch.utils.data import DataLoader

    backend = open_backend(f"file://{tmp_path}")
    keys = _write_files(backend, 3)
    loader = RowGroupLoader([(backend, k) for k in keys], columns=["id", "feature"])
    dataset = loader.to_torch()
    seen: list[int] = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for item in DataLoader(dataset, batch_size=None, num_workers=2):
            assert isinstance(item["id"], torch.Tensor) and item["id"].dtype == torch.int64
            assert torch.allclose(item["feature"], item["id"].double() * 0.5)
            seen.extend(item["id"].tolist())
    assert sorted(seen) == sorted(list(range(3 * ROWS_PER_FILE)) * 2)


# -- progress and cancellation ----------------------------------------------------------------


def test_an_epoch_reports_its_progress_in_row_groups(backend: FaultyBackend) -> None:
    keys = _write_files(backend)  # 4 files of 6 row groups: this rank's half is 12
    loader = RowGroupLoader([(backend, k) for k in keys], rank=0, world_size=2, shuffle=True)
    calls: list[tuple[int, int, str]] = []
    rows = 0
    for batch in loader.iter_epoch(0, progress=lambda *a: calls.append(a)):
        rows += batch.num_rows
        assert calls[-1][0] < 12  # reported after a row group's batches, never ahead of them
    assert calls == [(n, 12, "row groups") for n in range(13)]
    assert rows == 12 * ROW_GROUP
    seen: list[tuple[int, int, str]] = []
    assert len(loader.to_pandas(1, progress=lambda *a: seen.append(a))) == 12 * ROW_GROUP
    assert seen[-1] == (12, 12, "row groups")


class _Stop(Exception):
    pass


def test_a_progress_callback_that_raises_cancels_the_epoch(backend: FaultyBackend) -> None:
    keys = _write_files(backend)  # 24 row groups
    loader = RowGroupLoader([(backend, k) for k in keys], columns=["id"], prefetch=2)
    loader.tasks()  # footers read: what follows counts row-group reads only
    backend.reset()
    threads = threading.active_count()

    def stop_after_three(done: int, total: int, unit: str) -> None:
        if done == 3:
            raise _Stop(f"{done}/{total} {unit}")

    got: list[int] = []
    with pytest.raises(_Stop, match="3/24 row groups"):
        for batch in loader.iter_epoch(0, progress=stop_after_three):
            got.extend(batch.column("id").to_pylist())
    assert got == list(range(3 * ROW_GROUP))  # the consumer saw exactly three row groups
    # the reads stopped: the three consumed, at most ``prefetch`` ahead, not the 24
    assert backend.count("read_into") <= 3 + 2
    assert threading.active_count() == threads  # no prefetch thread left behind
    # the loader reads on: the next epoch is whole
    assert _ids(loader, 1) == list(range(4 * ROWS_PER_FILE))
