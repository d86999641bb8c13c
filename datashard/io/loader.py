"""A Parquet row-group loader for training: the unit of work is one row group.

- Footers are read once (one request each) into a :class:`~datashard.io.footer.FooterCache`
  shared by the loader's threads and kept across epochs: epoch two reads no footer at all.
- For each row group only the chosen columns' chunks are fetched, adjacent ranges coalesced,
  straight into one buffer with ``read_into`` (concurrent range GETs on object stores, O_DIRECT
  on ``direct://``), then decoded by pyarrow from memory.
- Work is sharded deterministically: every epoch, the row groups of all sources (optionally
  shuffled with ``seed + epoch``) are dealt out by ``rank`` of ``world_size``, then by data-loader
  worker, so each row group is read exactly once per epoch across all workers.
- At most ``prefetch`` row groups are in flight at once.
- ``progress(row_groups_done, row_groups, "row groups")`` reports an epoch's advance; an
  exception it raises (or the consumer leaving its loop) ends the epoch: the row groups still
  in flight are cancelled or waited for, no thread is left behind, and the loader stays usable.

Works on any backend, on a list of objects or on a table snapshot
(:meth:`RowGroupLoader.from_table`). Row groups are read by the one Parquet read path of
:mod:`datashard.io.parquet`. From a table, columns are matched by field id (a renamed column
still reads, an added one reads as its default or nulls), the scan's filter skips row groups
by their statistics and drops the rows it does not keep, and the row-level deletes of each data
file (position and equality deletes) are applied: a deleted row is never yielded.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from datashard.errors import ConfigError, ValidationError
from datashard.iceberg.expressions import Bound
from datashard.iceberg.types import NestedField
from datashard.io.deletes import FileDeletes
from datashard.io.footer import Footer, FooterCache
from datashard.io.parquet import DataFileReader, coalesce
from datashard.io.ranged import split_object_uri
from datashard.storage.base import StorageBackend, validate_key
from datashard.storage.config import open_backend

if TYPE_CHECKING:
    import pandas as pd

#: A progress callback: ``progress(done, total, unit)``; for the loader the unit is
#: ``"row groups"``. An exception it raises ends the epoch and reaches the caller.
Progress = Callable[[int, int, str], None]

#: A source: an object URI, ``(backend, key)``, or ``(backend, key, size_in_bytes)``.
Source = str | tuple[StorageBackend, str] | tuple[StorageBackend, str, int]


@dataclass(frozen=True)
class RowGroupTask:
    """One row group of one object: the loader's unit of work."""

    source: int
    uri: str
    row_group: int
    num_rows: int


@dataclass(frozen=True)
class _Object:
    backend: StorageBackend
    key: str
    size: int | None


@dataclass(frozen=True)
class _TableRead:
    """How the loader reads the data files of a table: by field id, filtered."""

    #: the fields read (the columns yielded, the filter's and the equality deletes' columns)
    fields: tuple[NestedField, ...]
    #: the names of the columns yielded, in order
    columns: tuple[str, ...]
    filter: Bound


def _coalesce(ranges: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Sorted ranges with overlaps, and holes of at most ``gap`` bytes, merged."""
    return coalesce(ranges, gap)


class RowGroupLoader:
    """Iterate the row groups of Parquet objects as Arrow record batches.

    ``columns``: top-level column names to read (all when ``None``); a name not in a file raises
    ``ValidationError`` naming the column and the object. ``batch_size``: rows per yielded batch
    at most (one batch per row group when ``None``). ``rank``/``world_size``: this process's
    share. ``shuffle``/``seed``: a seeded shuffle of row-group order, new every epoch.
    ``prefetch``: row groups fetched and decoded ahead, in threads. ``coalesce_gap``: holes of at
    most this many bytes between chosen column chunks are read rather than split into two
    requests.

    One loader may be iterated by one consumer at a time; the footer cache inside it is
    thread-safe and survives pickling into worker processes (empty there).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = 4,
        coalesce_gap: int = 64 * 1024,
        footer_cache: FooterCache | None = None,
        deletes: dict[int, FileDeletes] | None = None,
        table_read: _TableRead | None = None,
    ) -> None:
        if not isinstance(world_size, int) or world_size < 1:
            raise ConfigError(f"world_size must be an int >= 1, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch must be an int >= 1, got {prefetch!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
        if coalesce_gap < 0:
            raise ConfigError(f"coalesce_gap must be >= 0, got {coalesce_gap!r}")
        self.columns = list(columns) if columns is not None else None
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.prefetch = prefetch
        self.coalesce_gap = coalesce_gap
        self.footers = footer_cache if footer_cache is not None else FooterCache()
        self.epoch = 0
        self._objects = self._resolve(sources)
        #: rows deleted from each source (by its index), applied to its row groups
        self._deletes: dict[int, FileDeletes] = dict(deletes or {})
        self._table_read = table_read
        self._tasks: list[RowGroupTask] | None = None
        self._tasks_lock = threading.Lock()

    @classmethod
    def from_table(
        cls,
        table: Any,
        *,
        columns: Sequence[str] | None = None,
        snapshot_id: int | None = None,
        filter: Any = None,
        **options: Any,
    ) -> RowGroupLoader:
        """A loader over the data files of a table snapshot (the current one by default).

        Files are those the scan plans after pruning by ``filter`` on manifest statistics;
        within them, row groups whose statistics rule the filter out are skipped and the rows
        it does not keep are dropped. Columns are matched by field id. File sizes come from the
        manifests, so footers cost one request each and no ``head``. The snapshot's delete
        files are read here, once, and applied to every row group they touch.
        """
        scan = table.scan(columns=columns, filter=filter, snapshot_id=snapshot_id)
        backend: StorageBackend = table.backend
        sources: list[Source] = []
        deletes: dict[int, FileDeletes] = {}
        fields: dict[int, NestedField] = {}
        for index, task in enumerate(scan.plan_files()):
            data_file = task.data_file
            sources.append(
                (backend, backend.key_for(data_file.file_path), int(data_file.file_size_in_bytes))
            )
            found = scan.deletes_of(task)
            if found is not None:
                deletes[index] = found
            for f in scan.fields_for(task):  # the equality deletes' columns too
                fields.setdefault(f.field_id, f)
        if not fields:
            fields = {f.field_id: f for f in scan.fields_for(None)}
        read = _TableRead(tuple(fields.values()), tuple(scan.columns), scan.bound)
        return cls(sources, columns=list(scan.columns), deletes=deletes, table_read=read, **options)

    # -- planning --------------------------------------------------------------------------

    @staticmethod
    def _resolve(sources: Sequence[Source]) -> list[_Object]:
        backends: dict[str, StorageBackend] = {}
        objects = []
        for source in sources:
            if isinstance(source, str):
                root, key = split_object_uri(source)
                backend = backends.get(root)
                if backend is None:
                    backend = backends[root] = open_backend(root)
                objects.append(_Object(backend, key, None))
            elif isinstance(source, tuple) and len(source) in (2, 3):
                backend, key = source[0], validate_key(source[1])
                size = source[2] if len(source) == 3 else None
                if not isinstance(backend, StorageBackend):
                    raise ConfigError(
                        f"a source must be a URI or (StorageBackend, key[, size]), got {source!r}"
                    )
                objects.append(_Object(backend, key, size))
            else:
                raise ConfigError(
                    f"a source must be a URI or (StorageBackend, key[, size]), got {source!r}"
                )
        return objects

    def _footer(self, index: int) -> Footer:
        obj = self._objects[index]
        return self.footers.get(obj.backend, obj.key, obj.size)

    def tasks(self) -> list[RowGroupTask]:
        """Every row group of every source, in source order (reads footers not yet cached)."""
        with self._tasks_lock:
            if self._tasks is None:
                with ThreadPoolExecutor(min(16, max(1, len(self._objects)))) as pool:
                    footers = list(pool.map(self._footer, range(len(self._objects))))
                tasks = []
                for index, footer in enumerate(footers):
                    self._check_columns(footer)
                    md = footer.metadata
                    for rg in self._reader(index).row_groups():
                        tasks.append(RowGroupTask(index, footer.uri, rg, md.row_group(rg).num_rows))
                self._tasks = tasks
            return list(self._tasks)

    def epoch_tasks(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[RowGroupTask]:
        """This rank's (and data-loader worker's) row groups for ``epoch``, in reading order."""
        order = self.tasks()
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        mine = order[self.rank :: self.world_size]
        return mine[worker::num_workers]

    def _check_columns(self, footer: Footer) -> None:
        if self.columns is None or self._table_read is not None:
            return
        names = footer.metadata.schema.to_arrow_schema().names
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise ValidationError(
                f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not in "
                f"{footer.uri}; it has: {', '.join(names)}"
            )

    def _reader(self, source: int) -> DataFileReader:
        """The read path's reader of ``source``: by field id, filtered and without deleted
        rows for a table; else the chosen columns by name."""
        obj = self._objects[source]
        read = self._table_read
        return DataFileReader(
            self._footer(source),
            None if read is None else read.fields,
            names=self.columns,
            fetch="into",
            backend=obj.backend,
            key=obj.key,
            filter=None if read is None else read.filter,
            deletes=self._deletes.get(source),
            coalesce_gap=self.coalesce_gap,
        )

    def byte_ranges(self, task: RowGroupTask) -> list[tuple[int, int]]:
        """The coalesced ``[start, end)`` ranges one row group's chosen columns occupy."""
        return self._reader(task.source).byte_ranges([task.row_group])

    # -- reading ---------------------------------------------------------------------------

    def read_row_group(self, task: RowGroupTask) -> pa.Table:
        """Fetch and decode one row group (only the chosen columns' bytes are read)."""
        table = self._reader(task.source).read_row_group(task.row_group)
        if self._table_read is not None:
            table = table.select(list(self._table_read.columns))
        return table

    def set_epoch(self, epoch: int) -> None:
        """The epoch ``iter(loader)`` reads next (it seeds the shuffle)."""
        self.epoch = epoch

    def iter_epoch(
        self,
        epoch: int | None = None,
        worker: int = 0,
        num_workers: int = 1,
        *,
        progress: Progress | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of this rank's row groups for ``epoch``, ``prefetch`` in flight.

        ``progress(row_groups_done, row_groups, "row groups")`` is called before the first
        batch and after the batches of each row group were consumed. An exception it raises
        cancels the epoch: the row groups in flight are cancelled (or, already reading, waited
        for), no thread is left running, and the exception reaches the caller; the loader can
        start another epoch at once. Leaving the loop early (``break``) ends the epoch the same
        way.
        """
        order = self.epoch_tasks(self.epoch if epoch is None else epoch, worker, num_workers)
        total = len(order)
        tasks = iter(order)
        pool = ThreadPoolExecutor(self.prefetch)
        pending: deque[Future[pa.Table]] = deque()
        try:
            if progress is not None:
                progress(0, total, "row groups")
            for task in tasks:
                pending.append(pool.submit(self.read_row_group, task))
                if len(pending) >= self.prefetch:
                    break
            done = 0
            while pending:
                table = pending.popleft().result()
                following = next(tasks, None)
                if following is not None:
                    pending.append(pool.submit(self.read_row_group, following))
                yield from table.to_batches(max_chunksize=self.batch_size)
                done += 1
                if progress is not None:
                    progress(done, total, "row groups")
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.iter_epoch()

    def to_arrow(self, epoch: int | None = None, *, progress: Progress | None = None) -> pa.Table:
        """This rank's share of one epoch as one Arrow table (``progress``: see
        :meth:`iter_epoch`)."""
        batches = list(self.iter_epoch(epoch, progress=progress))
        if not batches:
            return self._empty_schema().empty_table()
        return pa.Table.from_batches(batches)

    def to_pandas(
        self, epoch: int | None = None, *, progress: Progress | None = None
    ) -> pd.DataFrame:
        """This rank's share of one epoch as a pandas DataFrame (``progress``: see
        :meth:`iter_epoch`)."""
        return self.to_arrow(epoch, progress=progress).to_pandas()

    def _empty_schema(self) -> pa.Schema:
        if not self._objects:
            return pa.schema([])
        schema = self._reader(0).output_schema()
        if self.columns is not None:
            schema = pa.schema([schema.field(c) for c in self.columns])
        return schema

    def to_torch(self, transform: Any = None) -> Any:
        """A PyTorch ``IterableDataset`` over this loader (needs PyTorch: ``pip install torch``).

        See :mod:`datashard.io.torch_dataset`.
        """
        from datashard.io.torch_dataset import TorchRowGroupDataset

        return TorchRowGroupDataset(self, transform=transform)

    # -- pickling: footers and locks stay behind ---------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["footers"] = None
        state["_tasks_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.footers = FooterCache()
        self._tasks_lock = threading.Lock()
