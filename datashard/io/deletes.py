"""Reading delete files and applying them to the rows of a data file.

- A position delete file (Parquet, ``file_path`` and ``pos`` with the reserved field ids
  2147483546 and 2147483545) becomes the deleted positions of each data file it names
  (:func:`read_position_deletes`).
- A deletion vector (format version 3: a ``deletion-vector-v1`` blob in a Puffin file, located
  by its manifest entry's ``content_offset`` and ``content_size_in_bytes``) becomes the deleted
  positions of its ``referenced_data_file`` (:func:`read_deletion_vector`); only the blob's
  bytes are read.
- An equality delete file (Parquet with the table's field ids; ``equality_ids`` name the delete
  columns) becomes a table of delete keys (:func:`read_equality_deletes`).
- :func:`deleted_mask` marks the rows of a data file that either kind deletes: a position is
  deleted if any position delete lists it; a row is deleted by an equality delete if it equals
  some delete row on every delete column, where null equals null.

Positions are counted from the first row of the data file, so the rows a mask applies to are the
whole file, in file order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datashard.errors import CorruptMetadataError, ObjectNotFoundError
from datashard.iceberg.manifest import DELETE_FILE_PATH_ID, DELETE_POS_ID, DataFile
from datashard.iceberg.puffin import deletion_vector_positions
from datashard.iceberg.types import field_id_of
from datashard.storage.base import StorageBackend

#: Positions deleted from each data file, by data file path.
Positions = Mapping[str, np.ndarray]


def _parquet(data: bytes, uri: str, what: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(f"{what} {uri} is not readable Parquet: {exc}") from exc


def _columns_by_id(pf: pq.ParquetFile) -> dict[int, str]:
    out: dict[int, str] = {}
    for f in pf.schema_arrow:
        fid = field_id_of(f)
        if fid is not None:
            out[fid] = f.name
    return out


def read_position_deletes(data: bytes, uri: str) -> dict[str, np.ndarray]:
    """The positions (sorted, unique, int64) a position delete file deletes, by data file path.

    Raises ``CorruptMetadataError`` naming the file when it is not Parquet or lacks the
    ``file_path`` / ``pos`` columns.
    """
    pf = _parquet(data, uri, "position delete file")
    by_id = _columns_by_id(pf)
    names = pf.schema_arrow.names
    path_col = by_id.get(DELETE_FILE_PATH_ID, "file_path" if "file_path" in names else None)
    pos_col = by_id.get(DELETE_POS_ID, "pos" if "pos" in names else None)
    if path_col is None or pos_col is None:
        raise CorruptMetadataError(
            f"position delete file {uri} has no file_path/pos columns (field ids "
            f"{DELETE_FILE_PATH_ID}/{DELETE_POS_ID}); its columns are {names}"
        )
    try:
        table = pf.read(columns=[path_col, pos_col], use_threads=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(f"position delete file {uri} is not readable: {exc}") from exc
    if table.num_rows == 0:
        return {}
    paths = table.column(path_col).combine_chunks()
    if paths.null_count or table.column(pos_col).null_count:
        raise CorruptMetadataError(f"position delete file {uri} has a null file_path or pos")
    positions = table.column(pos_col).to_numpy().astype(np.int64, copy=False)
    # the spec sorts a position delete file by path: each path is one run
    starts = (
        np.flatnonzero(
            pc.not_equal(paths.slice(1), paths.slice(0, len(paths) - 1)).to_numpy(
                zero_copy_only=False
            )
        )
        + 1
    )
    runs = [0, *starts.tolist()]
    run_paths = paths.take(pa.array(runs, pa.int64())).to_pylist()
    if len(set(run_paths)) == len(run_paths):
        ends = [*runs[1:], len(paths)]
        return {
            str(path): np.unique(positions[a:b])
            for path, a, b in zip(run_paths, runs, ends, strict=True)
        }
    encoded = paths.dictionary_encode()  # not sorted by path: group by path
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    codes, positions = codes[order], positions[order]
    bounds = np.flatnonzero(np.diff(codes)) + 1
    out: dict[str, np.ndarray] = {}
    for chunk_codes, chunk in zip(
        np.split(codes, bounds), np.split(positions, bounds), strict=True
    ):
        out[str(encoded.dictionary[int(chunk_codes[0])].as_py())] = np.unique(chunk)
    return out


def read_deletion_vector(backend: StorageBackend, key: str, dv: DataFile) -> np.ndarray:
    """The positions (sorted, unique, int64) of ``dv.referenced_data_file`` that the deletion
    vector ``dv`` deletes, reading only its blob (``key``: the Puffin file's key in
    ``backend``).

    Raises ``CorruptMetadataError`` naming the Puffin file when it is missing or shorter than
    the manifest says, when the manifest entry lacks the offset, size or referenced data file,
    when the blob's length, magic or CRC-32 is wrong, or when it holds another number of
    positions than the entry's ``record_count`` (its cardinality).
    """
    uri = dv.file_path
    offset, size = dv.content_offset, dv.content_size_in_bytes
    if offset is None or size is None or dv.referenced_data_file is None:
        raise CorruptMetadataError(
            f"deletion vector in {uri}: the manifest entry lacks content_offset, "
            "content_size_in_bytes or referenced_data_file (all are required for a vector)"
        )
    if offset < 0 or size < 0:
        raise CorruptMetadataError(
            f"deletion vector in {uri}: content_offset {offset} / content_size_in_bytes {size} "
            "must not be negative"
        )
    try:
        blob = backend.read_range(key, offset, offset + size)
    except ObjectNotFoundError as exc:
        raise CorruptMetadataError(
            f"Puffin file {uri} of the deletion vector for {dv.referenced_data_file} is missing"
        ) from exc
    if len(blob) != size:
        raise CorruptMetadataError(
            f"Puffin file {uri} ends before the deletion vector at {offset}+{size} (read "
            f"{len(blob)} bytes): the file is truncated or was replaced"
        )
    positions = deletion_vector_positions(blob, uri)
    if len(positions) != dv.record_count:
        raise CorruptMetadataError(
            f"deletion vector in {uri} at offset {offset} holds {len(positions)} positions, but "
            f"the manifest says its cardinality (record_count) is {dv.record_count}"
        )
    return positions


def read_equality_deletes(data: bytes, uri: str, equality_ids: Sequence[int]) -> pa.Table:
    """The delete columns of an equality delete file, named by field id (``"1"``, ``"7"``),
    one row per delete row. Raises ``CorruptMetadataError`` naming the file when a delete
    column is missing."""
    pf = _parquet(data, uri, "equality delete file")
    by_id = _columns_by_id(pf)
    missing = [i for i in equality_ids if i not in by_id]
    if missing:
        raise CorruptMetadataError(
            f"equality delete file {uri} has no column with field id(s) {missing} (its "
            f"equality_ids are {list(equality_ids)})"
        )
    try:
        table = pf.read(columns=[by_id[i] for i in equality_ids], use_threads=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(f"equality delete file {uri} is not readable: {exc}") from exc
    return table.rename_columns([str(i) for i in equality_ids])


def deleted_mask(
    num_rows: int,
    positions: Sequence[np.ndarray],
    equality: Sequence[tuple[pa.Table, Mapping[int, pa.ChunkedArray | pa.Array]]],
) -> np.ndarray | None:
    """A boolean array, True where a row of a data file of ``num_rows`` rows is deleted, or
    ``None`` when nothing is.

    ``positions``: arrays of deleted positions (out-of-range ones are ignored).
    ``equality``: (delete rows named by field id, the data file's values of those fields by
    field id) per equality delete file.
    """
    mask: np.ndarray | None = None
    for pos in positions:
        pos = pos[(pos >= 0) & (pos < num_rows)]
        if len(pos):
            if mask is None:
                mask = np.zeros(num_rows, dtype=bool)
            mask[pos] = True
    for deletes, values in equality:
        if deletes.num_rows == 0 or num_rows == 0:
            continue
        hit = _equal_rows(num_rows, deletes, values)
        if hit is not None:
            mask = hit if mask is None else (mask | hit)
    return mask


def _plain(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def _equal_rows(
    num_rows: int, deletes: pa.Table, values: Mapping[int, pa.ChunkedArray | pa.Array]
) -> np.ndarray | None:
    """True where the data row equals some delete row on every delete column (null = null)."""
    left: dict[str, pa.Array] = {"__row": pa.array(np.arange(num_rows, dtype=np.int64))}
    right: dict[str, pa.Array] = {}
    keys: list[str] = []
    for name in deletes.column_names:
        data = _plain(values[int(name)])
        gone = _plain(deletes.column(name))
        if gone.type != data.type:
            try:
                gone = gone.cast(data.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise CorruptMetadataError(
                    f"equality delete column {name} has type {gone.type}, which does not "
                    f"compare with the data's {data.type}: {exc}"
                ) from exc
        left[f"n{name}"], right[f"n{name}"] = pc.is_null(data), pc.is_null(gone)
        keys.append(f"n{name}")
        valid = data.drop_null() if data.null_count < len(data) else gone.drop_null()
        if len(valid):  # nulls take a present value: the null flags tell them apart
            fill = valid[0]
            left[f"v{name}"] = pc.fill_null(data, fill)
            right[f"v{name}"] = pc.fill_null(gone, fill)
            keys.append(f"v{name}")
    try:
        matched = pa.table(left).join(
            pa.table(right), keys=keys, join_type="left semi", use_threads=True
        )
        rows = matched.column("__row").to_numpy()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        rows = _equal_rows_slow(left, right, keys)
    if len(rows) == 0:
        return None
    mask = np.zeros(num_rows, dtype=bool)
    mask[rows] = True
    return mask


def _equal_rows_slow(
    left: Mapping[str, pa.Array], right: Mapping[str, pa.Array], keys: Sequence[str]
) -> np.ndarray:
    """The same match in Python, for key types the hash join does not take."""
    gone = set(zip(*(right[k].to_pylist() for k in keys), strict=True))
    rows = [
        i
        for i, row in enumerate(zip(*(left[k].to_pylist() for k in keys), strict=True))
        if row in gone
    ]
    return np.array(rows, dtype=np.int64)


@dataclass(frozen=True)
class FileDeletes:
    """Everything that deletes rows of one data file: its deleted positions (whole-file,
    sorted) and its equality deletes (delete rows named by field id). Picklable, so a loader
    can take it into worker processes."""

    positions: np.ndarray
    equality: tuple[pa.Table, ...] = ()

    @property
    def equality_ids(self) -> list[int]:
        """The field ids the equality deletes compare, each once."""
        ids: list[int] = []
        for rows in self.equality:
            ids.extend(int(n) for n in rows.column_names if int(n) not in ids)
        return ids

    def mask(
        self, offset: int, num_rows: int, values: Mapping[int, pa.ChunkedArray | pa.Array]
    ) -> np.ndarray | None:
        """Deleted rows among the ``num_rows`` rows starting at file position ``offset``
        (``values``: those rows' values of :attr:`equality_ids`), or ``None``."""
        pos = self.positions
        lo, hi = np.searchsorted(pos, [offset, offset + num_rows])
        full = dict(values)
        for rows in self.equality:  # a column the file does not have reads as nulls
            for name in rows.column_names:
                if int(name) not in full:
                    full[int(name)] = pa.nulls(num_rows, rows.column(name).type)
        return deleted_mask(
            num_rows, [pos[lo:hi] - offset], [(rows, full) for rows in self.equality]
        )


__all__ = [
    "FileDeletes",
    "deleted_mask",
    "read_deletion_vector",
    "read_equality_deletes",
    "read_position_deletes",
]
