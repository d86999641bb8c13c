"""Which delete files apply to which data files: the scope rules of row-level deletes.

A delete file (position deletes, equality deletes, or a deletion vector) applies to a data file
by the spec's rules (Scan Planning), with ``seq`` the data sequence number:

- a deletion vector: the data file is its ``referenced_data_file`` and ``data seq <= dv seq``;
- a position delete file: ``data seq <= delete seq``, and the data file is its
  ``referenced_data_file`` when that is set; else the data file's path is within the delete
  file's ``file_path`` bounds (when it has them) and the partitions are equal. When a deletion
  vector applies to a data file, position delete files are not applied to it (the vector holds
  all of its deletes);
- an equality delete file: ``data seq < delete seq`` (strictly), and the partitions are equal or
  the delete file's spec is unpartitioned (a global delete).

Everything here is pure: the index is built from manifest entries already read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datashard.errors import CorruptMetadataError
from datashard.iceberg.manifest import (
    DELETE_FILE_PATH_ID,
    EQUALITY_DELETES,
    POSITION_DELETES,
    DataFile,
)


@dataclass(frozen=True)
class DeleteFile:
    """A live delete file of a snapshot: its manifest row, data sequence number and spec."""

    file: DataFile
    sequence_number: int
    spec_id: int
    #: whether the spec the delete file was written with has no partition fields
    unpartitioned: bool = False

    @property
    def is_deletion_vector(self) -> bool:
        return self.file.content == POSITION_DELETES and self.file.file_format == "PUFFIN"

    @property
    def is_equality(self) -> bool:
        return self.file.content == EQUALITY_DELETES

    @property
    def path(self) -> str:
        return self.file.file_path

    @property
    def key(self) -> DeleteKey:
        """What tells this delete file apart: its path, and for a deletion vector its offset
        (one Puffin file holds the vectors of many data files)."""
        return delete_key(self.file)


#: A delete file's identity: path and ``content_offset`` (``None`` but for deletion vectors).
DeleteKey = tuple[str, int | None]


def delete_key(file: DataFile) -> DeleteKey:
    """The :data:`DeleteKey` of the delete file ``file``."""
    return (file.file_path, file.content_offset)


def partition_key(spec_id: int, partition: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable key of a partition: spec id and values (floats by their bits, as the spec
    compares them, so NaN equals NaN)."""
    return (spec_id, tuple(sorted((k, _comparable(v)) for k, v in partition.items())))


def _comparable(v: Any) -> Any:
    if isinstance(v, float):
        return ("f", struct.pack(">d", math.nan if math.isnan(v) else v))
    return v


class DeleteIndex:
    """The delete files of one snapshot, indexed for :meth:`for_data_file`. Raises
    ``CorruptMetadataError`` naming the file for a deletion vector without its
    ``referenced_data_file``."""

    def __init__(self, deletes: Iterable[DeleteFile]) -> None:
        self._vectors: dict[str, list[DeleteFile]] = {}
        self._positions_by_file: dict[str, list[DeleteFile]] = {}
        self._positions_by_partition: dict[tuple[Any, ...], list[DeleteFile]] = {}
        self._equality_by_partition: dict[tuple[Any, ...], list[DeleteFile]] = {}
        self._equality_global: list[DeleteFile] = []
        self.files: list[DeleteFile] = []
        for d in deletes:
            self.files.append(d)
            ref = d.file.referenced_data_file
            if d.is_deletion_vector:
                if ref is None:  # a vector that names no data file cannot be applied
                    raise CorruptMetadataError(
                        f"deletion vector in {d.path} (offset {d.file.content_offset}) has no "
                        "referenced_data_file, which the spec requires of every vector"
                    )
                self._vectors.setdefault(ref, []).append(d)
            elif d.is_equality:
                if d.unpartitioned:
                    self._equality_global.append(d)
                else:
                    key = partition_key(d.spec_id, d.file.partition)
                    self._equality_by_partition.setdefault(key, []).append(d)
            elif ref is not None:
                self._positions_by_file.setdefault(ref, []).append(d)
            else:
                key = partition_key(d.spec_id, d.file.partition)
                self._positions_by_partition.setdefault(key, []).append(d)

    def __bool__(self) -> bool:
        return bool(self.files)

    def for_data_file(
        self, data: DataFile, sequence_number: int, spec_id: int
    ) -> tuple[DeleteFile, ...]:
        """The delete files that apply to ``data`` (of data sequence number
        ``sequence_number``, written with spec ``spec_id``), deletion vectors first."""
        if not self.files:
            return ()
        path = data.file_path
        key = partition_key(spec_id, data.partition)
        vectors = [d for d in self._vectors.get(path, ()) if sequence_number <= d.sequence_number]
        out: list[DeleteFile] = list(vectors)
        if not vectors:
            for d in self._positions_by_file.get(path, ()):
                if sequence_number <= d.sequence_number:
                    out.append(d)
            for d in self._positions_by_partition.get(key, ()):
                if sequence_number <= d.sequence_number and _path_in_bounds(d.file, path):
                    out.append(d)
        for d in (*self._equality_by_partition.get(key, ()), *self._equality_global):
            if sequence_number < d.sequence_number:
                out.append(d)
        return tuple(out)


def _path_in_bounds(delete: DataFile, path: str) -> bool:
    """Whether ``path`` may be among the paths of a position delete file (by its ``file_path``
    column bounds; ``True`` when it has none). Bounds of strings may be truncated: a lower
    bound is a prefix-or-less, an upper bound may be truncated and so is compared on its
    length."""
    lower = delete.lower_bounds.get(DELETE_FILE_PATH_ID)
    upper = delete.upper_bounds.get(DELETE_FILE_PATH_ID)
    raw = path.encode()
    if lower is not None and raw < lower:
        return False
    if upper is not None and raw[: len(upper)] > upper:
        return False
    return True


__all__ = ["DeleteFile", "DeleteIndex", "DeleteKey", "delete_key", "partition_key"]
