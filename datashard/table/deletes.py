"""Row-level deletes in the table layer: the delete files of a snapshot, and data files read
with them applied.

:func:`delete_index` reads a snapshot's delete manifests into a
:class:`~datashard.iceberg.deletes.DeleteIndex` (the spec's scope rules). A :class:`DeleteReader`
reads a data file with the deletes that apply to it (:meth:`DeleteReader.read`), keeping each
delete file's content for the length of one operation, since one delete file often applies to
many data files. Scans, ``count``, overwrite, delete and compaction all read rows through it, so
a deleted row is never returned and never copied into a new data file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import TypeVar

import numpy as np
import pyarrow as pa

from datashard.errors import CorruptMetadataError
from datashard.iceberg.deletes import DeleteFile, DeleteIndex
from datashard.iceberg.expressions import Bound
from datashard.iceberg.manifest import MANIFEST_DELETES, DataFile, ManifestEntry, ManifestFile
from datashard.iceberg.metadata import TableMetadata
from datashard.iceberg.types import NestedField
from datashard.io.deletes import (
    FileDeletes,
    deleted_mask,
    read_deletion_vector,
    read_equality_deletes,
    read_position_deletes,
)
from datashard.io.parquet import DataFileReader
from datashard.storage.base import StorageBackend
from datashard.table.manifests import open_table_data_file, read_table_file
from datashard.table.process import bounded_map
from datashard.table.versions import key_for_uri

#: Delete manifests read at once.
_MANIFEST_READERS = 8


def delete_index(
    md: TableMetadata,
    manifests: Iterable[ManifestFile],
    entries: Callable[[ManifestFile], list[ManifestEntry]],
    keep: Callable[[ManifestFile, DataFile], bool] | None = None,
) -> DeleteIndex:
    """The live delete files of the delete manifests among ``manifests`` (read by
    ``entries``), those ``keep`` accepts (a scan prunes by its filter)."""
    deletes = [m for m in manifests if m.content == MANIFEST_DELETES]
    if not deletes:
        return DeleteIndex(())

    def live(m: ManifestFile) -> list[DeleteFile]:
        unpartitioned = not md.spec(m.partition_spec_id).fields
        out = []
        for e in entries(m):
            if not e.is_live or (keep is not None and not keep(m, e.data_file)):
                continue
            if not e.data_file.is_deletes:
                raise CorruptMetadataError(
                    f"delete manifest {m.manifest_path} lists data file {e.data_file.file_path}"
                )
            seq = e.sequence_number if e.sequence_number is not None else m.sequence_number
            out.append(DeleteFile(e.data_file, seq, m.partition_spec_id, unpartitioned))
        return out

    found = (
        bounded_map(live, deletes, _MANIFEST_READERS) if len(deletes) > 1 else map(live, deletes)
    )
    return DeleteIndex(d for group in found for d in group)


class DeleteReader:
    """Reads data files with their deletes applied; keeps what it read of delete files."""

    def __init__(self, backend: StorageBackend, md: TableMetadata) -> None:
        self._backend = backend
        self._md = md
        self._lock = threading.Lock()
        #: each delete file's content, read once even when many data files ask at once
        self._positions: dict[str, Future[dict[str, np.ndarray]]] = {}
        self._equality: dict[str, Future[pa.Table]] = {}

    # -- delete file contents --------------------------------------------------------------

    def positions(self, d: DeleteFile, data_path: str) -> np.ndarray:
        """The positions of ``data_path`` that the position delete file or deletion vector
        ``d`` deletes."""
        if d.is_deletion_vector:  # one blob of a Puffin file: keyed by the file and offset
            key = f"{d.path}#{d.file.content_offset}"
            by_path = _once(self._lock, self._positions, key, lambda _: self._read_vector(d))
        else:
            by_path = _once(self._lock, self._positions, d.path, self._read_positions)
        return by_path.get(data_path, _NONE)

    def _read_vector(self, d: DeleteFile) -> dict[str, np.ndarray]:
        key = key_for_uri(self._backend, d.path)
        return {str(d.file.referenced_data_file): read_deletion_vector(self._backend, key, d.file)}

    def _read_positions(self, path: str) -> dict[str, np.ndarray]:
        data = read_table_file(self._backend, path, "position delete file")
        return read_position_deletes(data, path)

    def equality(self, d: DeleteFile) -> pa.Table:
        """The delete rows of the equality delete file ``d``, columns named by field id."""
        ids = d.file.equality_ids
        if not ids:
            raise CorruptMetadataError(f"equality delete file {d.path} has no equality_ids")

        def read(path: str) -> pa.Table:
            data = read_table_file(self._backend, path, "equality delete file")
            return read_equality_deletes(data, path, ids)

        return _once(self._lock, self._equality, d.path, read)

    # -- data files ---------------------------------------------------------------------------

    def open(
        self,
        data_file: DataFile,
        deletes: Sequence[DeleteFile],
        fields: Sequence[NestedField],
        filter: Bound | None = None,
        *,
        apply_deletes: bool = True,
        sequence_number: int | None = None,
    ) -> tuple[DataFileReader, list[NestedField]]:
        """A reader of ``data_file`` (its footer read) for columns ``fields`` and then the
        columns its equality deletes compare that ``fields`` lacks (returned too); it drops the
        rows ``deletes`` delete unless ``apply_deletes`` is false, and keeps those ``filter``
        (over ``fields``) matches; ``sequence_number`` (the file's data sequence number) is
        what the row-lineage column ``_last_updated_sequence_number`` inherits. Raises
        ``CorruptMetadataError`` naming a missing or unreadable file, or one whose size or row
        count is not what the manifest says."""
        extra = self.equality_fields(deletes, fields)
        found = self.file_deletes(data_file, deletes) if apply_deletes else None
        reader = open_table_data_file(
            self._backend,
            data_file,
            [*fields, *extra],
            filter=filter,
            deletes=found,
            sequence_number=sequence_number,
        )
        return reader, extra

    def read(
        self,
        data_file: DataFile,
        deletes: Sequence[DeleteFile],
        fields: Sequence[NestedField],
        filter: Bound | None = None,
        *,
        sequence_number: int | None = None,
    ) -> pa.Table:
        """Columns ``fields`` of ``data_file`` (by field id), without the rows ``deletes``
        delete, and only those ``filter`` keeps (row groups its statistics rule out are not
        fetched). Raises ``CorruptMetadataError`` naming a missing or unreadable file, or one
        whose size or row count is not what the manifest says (replaced or truncated)."""
        reader, extra = self.open(
            data_file, deletes, fields, filter, sequence_number=sequence_number
        )
        table = reader.read()
        return table.select(list(range(len(fields)))) if extra else table

    def equality_fields(
        self, deletes: Sequence[DeleteFile], fields: Sequence[NestedField]
    ) -> list[NestedField]:
        """The columns the equality deletes among ``deletes`` compare that ``fields`` lacks."""
        have = {f.field_id for f in fields}
        extra: list[NestedField] = []
        for d in deletes:
            if d.is_equality:
                for fid in d.file.equality_ids or ():
                    if fid not in have:
                        have.add(fid)
                        extra.append(self._field(fid, d))
        return extra

    def _read_with_equality_columns(
        self, data_file: DataFile, deletes: Sequence[DeleteFile], fields: Sequence[NestedField]
    ) -> tuple[pa.Table, list[NestedField]]:
        """Columns ``fields`` of the whole data file, then the columns its equality deletes
        compare that ``fields`` lacks (returned too); no row removed."""
        reader, extra = self.open(data_file, deletes, fields, apply_deletes=False)
        return reader.read(), extra

    def _mask(
        self,
        data_file: DataFile,
        deletes: Sequence[DeleteFile],
        table: pa.Table,
        fields: Sequence[NestedField],
    ) -> np.ndarray | None:
        """The rows of ``table`` (the whole file, columns ``fields``) ``deletes`` delete."""
        if not deletes:
            return None
        by_id = {f.field_id: table.column(i) for i, f in enumerate(fields)}
        return deleted_mask(
            table.num_rows,
            [self.positions(d, data_file.file_path) for d in deletes if not d.is_equality],
            [(self.equality(d), by_id) for d in deletes if d.is_equality],
        )

    def matching_positions(
        self,
        data_file: DataFile,
        deletes: Sequence[DeleteFile],
        fields: Sequence[NestedField],
        matches: Callable[[pa.Table], np.ndarray],
    ) -> tuple[np.ndarray, int]:
        """The positions of the live rows of ``data_file`` (not deleted by ``deletes``) that
        ``matches`` selects, given those rows' columns ``fields``; and how many rows are live.
        Only ``fields`` (and the columns equality deletes compare) are decoded."""
        table, extra = self._read_with_equality_columns(data_file, deletes, fields)
        gone = self._mask(data_file, deletes, table, [*fields, *extra])
        hit = matches(table.select(list(range(len(fields)))))
        if gone is not None:
            hit &= ~gone
        live = table.num_rows - (int(np.count_nonzero(gone)) if gone is not None else 0)
        return np.flatnonzero(hit), live

    def file_deletes(
        self, data_file: DataFile, deletes: Sequence[DeleteFile]
    ) -> FileDeletes | None:
        """What deletes rows of ``data_file``, read into one picklable value (for readers of
        row groups), or ``None`` when nothing does."""
        if not deletes:
            return None
        path = data_file.file_path
        hit = [self.positions(d, path) for d in deletes if not d.is_equality]
        positions = np.unique(np.concatenate(hit)) if hit else _NONE
        equality = tuple(self.equality(d) for d in deletes if d.is_equality)
        return FileDeletes(positions, equality)

    def count(self, data_file: DataFile, deletes: Sequence[DeleteFile]) -> int | None:
        """Rows of ``data_file`` left after ``deletes`` when only position deletes apply
        (from the delete files alone), else ``None``."""
        if any(d.is_equality for d in deletes):
            return None
        n = data_file.record_count
        hit = [self.positions(d, data_file.file_path) for d in deletes]
        if not hit:
            return n
        gone = np.unique(np.concatenate(hit))
        return n - int(np.count_nonzero((gone >= 0) & (gone < n)))

    def _field(self, field_id: int, d: DeleteFile) -> NestedField:
        """The table's field ``field_id`` (current schema first, then older ones: a delete
        column dropped since still applies), named so it cannot clash with a column."""
        for schema in (self._md.current_schema(), *reversed(self._md.schemas)):
            if field_id in schema.field_ids:
                f = schema.find_field(field_id)
                return NestedField(
                    f.field_id, f"__delete_{field_id}", f.field_type, False, None, None, None
                )
        raise CorruptMetadataError(
            f"equality delete file {d.path} deletes by field id {field_id}, which no schema of "
            f"{self._md.location} has"
        )


_NONE = np.zeros(0, dtype=np.int64)
T = TypeVar("T")


def _once(
    lock: threading.Lock, made: dict[str, Future[T]], key: str, make: Callable[[str], T]
) -> T:
    """``make(key)``, computed by the first thread that asks and waited for by the others (a
    failure is not kept: the next caller tries again)."""
    with lock:
        future = made.get(key)
        mine = future is None
        if future is None:
            future = made[key] = Future()
    if mine:
        try:
            future.set_result(make(key))
        except BaseException as exc:
            with lock:
                del made[key]
            future.set_exception(exc)
    return future.result()


__all__ = ["DeleteReader", "delete_index"]
