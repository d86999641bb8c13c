"""PyTorch adapter for :class:`~datashard.io.loader.RowGroupLoader` (imports torch; optional).

Use it with ``DataLoader(dataset, batch_size=None, num_workers=N)``: the loader already yields
batches, and each data-loader worker reads a disjoint share of this rank's row groups, so every
row group is read exactly once per epoch across all ranks and workers. Call
``dataset.set_epoch(e)`` before each epoch to reseed the shuffle (the dataset is sent to the
workers again at the start of each epoch unless ``persistent_workers=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "RowGroupLoader.to_torch() needs PyTorch, which is not installed: pip install torch"
    ) from exc

from datashard.io.loader import RowGroupLoader


def batch_to_tensors(batch: pa.RecordBatch) -> dict[str, Any]:
    """Numeric and boolean columns as tensors (zero-copy where Arrow allows); others as lists."""
    out: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = column.type
        if (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and column.null_count == 0:
            out[name] = torch.from_numpy(column.to_numpy(zero_copy_only=False))
        elif pa.types.is_boolean(kind) and column.null_count == 0:
            out[name] = torch.from_numpy(column.to_numpy(zero_copy_only=False))
        else:
            out[name] = column.to_pylist()
    return out


class TorchRowGroupDataset(IterableDataset[Any]):
    """An ``IterableDataset`` yielding one transformed item per record batch."""

    def __init__(
        self,
        loader: RowGroupLoader,
        transform: Callable[[pa.RecordBatch], Any] | None = None,
    ) -> None:
        super().__init__()
        self.loader = loader
        self.transform = transform or batch_to_tensors

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for batch in self.loader.iter_epoch(None, worker, num_workers):
            yield self.transform(batch)
