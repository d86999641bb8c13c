"""Ray Datasets over datashard tables: reads through datashard's one read path, and writes
that land as ONE snapshot.

``read_table(table, columns=..., filter=...)`` is ``ray.data.read_datasource`` of a
:class:`DatashardDatasource`: the scan is planned once on the driver and each data file (or
group of row groups of a large file) becomes one ``ReadTask`` that a Ray worker runs through
:meth:`datashard.table.remote.ReadPart.read` (columns by field id, row groups pruned by the
filter, position and equality deletes applied). Task sizes are estimated from the manifests
(file sizes, record counts), so Ray plans without opening a file.

``write_table(ds, table)`` checks the dataset's schema against the table, has each block
written as data files by the workers, and commits them all with ``add_files`` as one
snapshot; if the write or the commit fails, the files the workers wrote are deleted.

Credentials travel inside the pickled backend config of each read task, never in a ``repr``
(see ``datashard.dask``). Needs the optional package ray:
``pip install "datashard-iceberg[ray]"``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

try:
    import ray
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError as exc:  # pragma: no cover - the ray extra is not installed
    raise ImportError(
        'datashard.ray needs the optional package ray: pip install "datashard-iceberg[ray]"'
    ) from exc

import pyarrow as pa

from datashard.errors import ValidationError
from datashard.iceberg.expressions import FilterLike
from datashard.iceberg.metadata import Snapshot
from datashard.table.add_files import DataFileWriter
from datashard.table.remote import (
    DEFAULT_PIECE_BYTES,
    ReadPart,
    already_landed,
    check_columns,
    commit_written,
    new_operation_prefix,
    plan_parts,
    remove_written,
    scan_of,
)
from datashard.table.remote import source_of as _check_shareable
from datashard.table.scan import Scan

if TYPE_CHECKING:
    from datashard.table.table import Table


class DatashardDatasource(Datasource):
    """A Ray Data datasource of one datashard scan (one read task per planned piece)."""

    def __init__(self, scan: Scan, piece_bytes: int | None = DEFAULT_PIECE_BYTES) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._parts = plan_parts(scan, piece_bytes)
        self._schema = scan.output_schema()
        self._name = scan.metadata.location.rstrip("/").rsplit("/", 1)[-1]

    def get_name(self) -> str:
        return f"datashard({self._name})"

    def estimate_inmemory_data_size(self) -> int | None:
        """The bytes of the files read (on-disk: compressed, before deletes and filters)."""
        return sum(p.size_bytes for p in self._parts)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        """One read task per piece (``parallelism`` is not used: a file is the unit)."""
        tasks = []
        for part in self._parts:
            metadata = BlockMetadata(
                num_rows=part.num_rows,
                size_bytes=part.size_bytes,
                input_files=(part.task.file_path,),
                exec_stats=None,
            )
            tasks.append(
                ReadTask(
                    _Reader(part),
                    metadata,
                    schema=self._schema,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks


class _Reader:
    """A read task's function: the piece's rows as one block."""

    def __init__(self, part: ReadPart) -> None:
        self.part = part

    def __call__(self) -> Iterable[pa.Table]:
        return [self.part.read()]

    def __repr__(self) -> str:
        return f"_Reader({self.part!r})"


def read_table(
    table_or_scan: Table | Scan,
    columns: Sequence[str] | None = None,
    filter: FilterLike = None,
    snapshot_id: int | None = None,
    *,
    piece_bytes: int | None = DEFAULT_PIECE_BYTES,
    **read_args: Any,
) -> ray.data.Dataset:
    """The rows of a table (its current snapshot, or ``snapshot_id``) or of a scan as a Ray
    Dataset of Arrow blocks: one read task per data file, a file larger than ``piece_bytes``
    cut into groups of row groups (``None``: never cut). ``read_args`` go to
    ``ray.data.read_datasource`` (``concurrency``, ``ray_remote_args`` ...).

    Raises ``ValidationError`` for an unknown column or snapshot, ``ConfigError`` for a
    ``memory://`` table.
    """
    scan = scan_of(table_or_scan, columns, filter, snapshot_id)
    dataset: ray.data.Dataset = ray.data.read_datasource(
        DatashardDatasource(scan, piece_bytes), **read_args
    )
    return dataset


def write_table(
    ds: ray.data.Dataset, table: Table, *, idempotency_key: str | None = None
) -> Snapshot | None:
    """Append every row of ``ds`` to ``table`` as ONE snapshot; the snapshot (``None`` when
    ``ds`` has no rows).

    Each block is written as data files by a Ray task; the driver gathers their descriptions
    and commits them with ``Table.add_files``. The dataset's schema is checked against the
    table first (``SchemaError`` naming the column). When the write or the commit fails, the
    files the tasks wrote are deleted and the error re-raised.
    """
    if not isinstance(ds, ray.data.Dataset):
        raise ValidationError(f"write_table takes a ray.data.Dataset, got {type(ds).__name__}")
    schema = ds.schema()
    if schema is not None:
        arrow = schema.base_schema if isinstance(schema.base_schema, pa.Schema) else None
        if arrow is not None:
            check_columns(table.schema(), arrow)
    landed = already_landed(table.metadata, idempotency_key)
    if landed is not None:
        return landed  # a retried job: nothing is written
    writer = table.data_file_writer().with_prefix(new_operation_prefix())
    _check_shareable(table.scan())
    try:
        rows = ds.map_batches(
            _write_batch,  # type: ignore[arg-type]
            fn_kwargs={"writer": writer},
            batch_format="pyarrow",
            batch_size=None,
        ).take_all()
    except BaseException:
        remove_written(writer.backend, writer)
        raise
    files = [f for row in rows for f in pickle.loads(row["files"])]
    return commit_written(table.add_files, writer, files, idempotency_key)


def _write_batch(batch: pa.Table, writer: DataFileWriter) -> pa.Table:
    """One block written as data files; their descriptions, pickled, in one row."""
    written = writer.write(batch) if batch.num_rows else []
    return pa.table({"files": pa.array([pickle.dumps(written)], pa.binary())})


__all__ = ["DatashardDatasource", "read_table", "write_table"]
