"""The one read path for Parquet data files: footer, row groups, column chunks by range.

Reading a data file (:class:`DataFileReader`) costs:

1. its footer: one suffix request (``read_tail``), kept in the process-wide
   :data:`~datashard.io.footer.FOOTERS` cache with what is derived from it (Arrow schema, column
   layout), so a second read of the same file costs none of that;
2. the column chunks of the requested columns in the row groups the filter may match (chosen by
   each row group's column statistics), fetched with ``read_ranges`` (concurrent range requests
   on object stores), neighbouring chunks merged when the hole between them is small; a file
   on the local disk (``file://``) is read by pyarrow itself, the same chunks, in C++;
3. decoding by pyarrow from memory, then the file's row-level deletes (positions counted from
   the file's first row) and the residual filter applied.

Columns are matched by the ``PARQUET:field_id`` of the file, not by name: a column renamed or
reordered since a file was written still reads, a column added later reads as its
``initial-default`` (or nulls), and a widened type (int to long, float to double) is cast.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datashard.errors import CorruptFileError, CorruptMetadataError
from datashard.iceberg.defaults import default_array
from datashard.iceberg.expressions import Bound, BoundTrue, to_arrow_expression
from datashard.iceberg.lineage import LINEAGE_IDS, Lineage, lineage_column
from datashard.iceberg.types import NestedField, field_id_of, to_arrow_field, to_arrow_type
from datashard.io.deletes import FileDeletes
from datashard.io.footer import FOOTERS, Footer, FooterCache, SizeMismatchError
from datashard.io.row_group_stats import row_group_might_match
from datashard.storage.base import StorageBackend
from datashard.storage.local import LocalBackend

#: Holes of at most this many bytes between two wanted column chunks are read, not skipped.
SMALL_GAP = 8 * 1024
#: Larger holes (up to this) are read too when they are at most an eighth of the bytes they join.
MAX_GAP = 1024 * 1024

#: How a reader fetches column chunks: ``ranges``, all of a read at once with ``read_ranges``
#: (concurrent requests on object stores); ``into``, one ``read_into`` per merged range straight
#: into the decode buffer (no copy; O_DIRECT on ``direct://``), for callers that already read
#: many row groups at once (the loader).
Fetch = Literal["ranges", "into"]


def coalesce(ranges: Iterable[tuple[int, int]], gap: int | None = None) -> list[tuple[int, int]]:
    """Sorted ``[start, end)`` ranges with overlaps merged, and the holes between them read
    when small: at most ``gap`` bytes when given; else at most :data:`SMALL_GAP`, or up to
    :data:`MAX_GAP` when the hole is at most an eighth of the two ranges it joins (so at most
    about 12% more bytes are read than wanted, in fewer requests)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged:
            last_start, last_end = merged[-1]
            hole = start - last_end
            if gap is not None:
                join = hole <= gap
            else:
                join = hole <= SMALL_GAP or (
                    hole <= MAX_GAP and hole * 8 <= (last_end - last_start) + (end - start)
                )
            if join:
                merged[-1] = (last_start, max(last_end, end))
                continue
        merged.append((start, end))
    return merged


@dataclass(frozen=True)
class _Layout:
    """Where the requested fields are in one file: leaf column indices by top-level column."""

    #: field id -> index of its top-level column in the file's Arrow schema
    top: dict[int, int]
    #: index of a top-level column -> the leaf (Parquet column) indices it spans
    leaves: dict[int, list[int]]
    #: field id -> leaf index, for top-level primitive columns (statistics come from these)
    primitive: dict[int, int]


def _leaf_count(t: pa.DataType) -> int:
    if pa.types.is_struct(t):
        return sum(_leaf_count(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _leaf_count(t.key_type) + _leaf_count(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaf_count(t.value_type)
    return 1


def _layout(schema: pa.Schema, fields: Sequence[NestedField]) -> _Layout:
    """Where ``fields`` are in a file of ``schema``: by field id, or by name in a file
    without field ids."""
    by_id: dict[int, int] = {}
    leaves: dict[int, list[int]] = {}
    primitive: dict[int, int] = {}
    first = 0
    for index, f in enumerate(schema):
        n = _leaf_count(f.type)
        leaves[index] = list(range(first, first + n))
        fid = field_id_of(f)
        if fid is not None:
            by_id[fid] = index
            if n == 1 and not pa.types.is_nested(f.type):
                primitive[fid] = first
        first += n
    if not by_id:  # a file without field ids: match by name
        names = {f.name: i for i, f in enumerate(schema)}
        for f in fields:
            if f.name in names:
                by_id[f.field_id] = names[f.name]
                index = names[f.name]
                if len(leaves[index]) == 1 and not pa.types.is_nested(schema.field(index).type):
                    primitive[f.field_id] = leaves[index][0]
    return _Layout(by_id, leaves, primitive)


@dataclass(frozen=True)
class _Shape:
    """What every read of one file derives from its footer (kept with the cached footer)."""

    schema: pa.Schema
    #: the layout by field id; ``None`` for a file without field ids (matched by name per read)
    layout: _Layout | None
    #: the file position of each row group's first row, and the row count at the end
    starts: np.ndarray


def _shape(footer: Footer, what: str) -> _Shape:
    shape = footer.derived.get("parquet")
    if isinstance(shape, _Shape):
        return shape
    md = footer.metadata
    try:
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptMetadataError(f"{what} {footer.uri} is not readable Parquet: {exc}") from exc
    layout: _Layout | None = _layout(schema, ())
    if layout is not None and not layout.top:
        layout = None
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    shape = _Shape(schema, layout, starts)
    footer.derived["parquet"] = shape  # racing readers derive the same: either is kept
    return shape


class DataFileReader:
    """Reads columns ``fields`` (by field id) of one Parquet data file whose footer is known;
    :func:`open_data_file` makes one from a backend and a key. With ``fields=None`` it reads
    the top-level columns ``names`` (all when ``None``) as the file has them, unmapped.

    ``filter``: a bound filter over ``fields`` (by their names): row groups whose statistics
    prove no row matches are not fetched, and the rows read are filtered. ``deletes``: the rows
    the file's delete files delete (never returned).
    """

    def __init__(
        self,
        footer: Footer,
        fields: Sequence[NestedField] | None,
        *,
        names: Sequence[str] | None = None,
        fetch: Fetch = "ranges",
        backend: StorageBackend | None = None,
        key: str = "",
        filter: Bound | None = None,
        deletes: FileDeletes | None = None,
        coalesce_gap: int | None = None,
        what: str = "data file",
        lineage: Lineage | None = None,
    ) -> None:
        self.footer = footer
        self.lineage = lineage
        self.uri = footer.uri
        self.backend = backend
        self.key = key
        self.raw = fields is None
        self.fields = list(fields or ())
        self.filter: Bound = filter if filter is not None else BoundTrue()
        self.deletes = deletes
        self.coalesce_gap = coalesce_gap
        self.fetch_with: Fetch = fetch
        self._what = what
        shape = _shape(footer, what)
        self._schema = shape.schema
        self._layout = shape.layout or _layout(self._schema, self.fields)
        top = self._layout.top
        if self.raw:
            index = {name: i for i, name in enumerate(self._schema.names)}
            wanted = self._schema.names if names is None else names
            present = sorted(index[n] for n in wanted if n in index)
        else:
            present = sorted({top[f.field_id] for f in self.fields if f.field_id in top})
        self._columns = [leaf for index in present for leaf in self._layout.leaves[index]]
        self._starts = shape.starts
        self._chosen: list[int] | None = None

    # -- planning --------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        """Rows in the file (before deletes and filter)."""
        return int(self.footer.metadata.num_rows)

    def row_groups(self) -> list[int]:
        """The row groups the filter may match (all when there is none), in file order."""
        if self._chosen is None:
            md = self.footer.metadata
            types = {f.field_id: f.field_type for f in self.fields}
            self._chosen = [
                i
                for i in range(md.num_row_groups)
                if md.row_group(i).num_rows > 0
                and row_group_might_match(self.filter, md, i, self._layout.primitive, types)
            ]
        return list(self._chosen)

    def byte_ranges(self, row_groups: Sequence[int]) -> list[tuple[int, int]]:
        """The coalesced ``[start, end)`` ranges the requested columns of ``row_groups`` take."""
        md = self.footer.metadata
        ranges = []
        for i in row_groups:
            rg = md.row_group(i)
            for leaf in self._columns:
                chunk = rg.column(leaf)
                start = chunk.data_page_offset
                if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                    start = min(start, chunk.dictionary_page_offset)
                ranges.append((start, start + chunk.total_compressed_size))
        return coalesce(ranges, self.coalesce_gap)

    # -- reading ---------------------------------------------------------------------------

    def fetch(self, row_groups: Sequence[int]) -> np.ndarray:
        """The bytes of ``row_groups``' requested columns, at their offsets in a buffer the
        size of the file (its untouched pages take no memory)."""
        # an anonymous mapping: zero pages mapped lazily, so only the fetched ranges take memory
        buffer = np.frombuffer(mmap.mmap(-1, max(1, self.footer.size)), dtype=np.uint8)
        ranges = self.byte_ranges(row_groups)
        if not ranges:
            return buffer
        if self.backend is None:
            raise ValueError(f"{self.uri}: this reader was made without a backend")
        if self.fetch_with == "into" or len(ranges) == 1:  # one range: no copy (parts on S3)
            view = memoryview(buffer.data)
            for start, end in ranges:
                got = self.backend.read_into(self.key, view[start:end], offset=start)
                self._check_length(start, end, got)
            return buffer
        parts = self.backend.read_ranges(self.key, ranges)
        for (start, end), data in zip(ranges, parts, strict=True):
            self._check_length(start, end, len(data))
            buffer[start:end] = np.frombuffer(data, dtype=np.uint8)
        return buffer

    def _check_length(self, start: int, end: int, got: int) -> None:
        if got != end - start:
            raise CorruptMetadataError(
                f"{self._what} {self.uri} is shorter than its footer says: wanted bytes "
                f"[{start}, {end}), got {got}"
            )

    def decode(self, buffer: np.ndarray, row_groups: Sequence[int]) -> pa.Table:
        """Row groups ``row_groups`` from a buffer :meth:`fetch` filled: columns ``fields``,
        without deleted rows, filtered."""
        if not row_groups:
            return self._empty()
        return self._decode(pa.BufferReader(pa.py_buffer(buffer)), row_groups)

    def _decode(self, source: pa.NativeFile, row_groups: Sequence[int]) -> pa.Table:
        try:
            parquet = pq.ParquetFile(source, metadata=self.footer.metadata)
            raw = parquet.reader.read_row_groups(
                list(row_groups), column_indices=self._columns, use_threads=len(self._columns) > 4
            )
        except (OSError, pa.ArrowException) as exc:
            raise CorruptMetadataError(
                f"{self._what} {self.uri} is not readable Parquet: {exc}"
            ) from exc
        table = raw if self.raw else self._mapped(raw, row_groups)
        if self.deletes is not None:
            table = self._without_deleted(table, row_groups)
        if not isinstance(self.filter, BoundTrue) and table.num_rows:
            table = table.filter(to_arrow_expression(self.filter))
        return table

    def _read(self, row_groups: Sequence[int]) -> pa.Table:
        """Fetch and decode ``row_groups``. A file on the local disk (``file://``) is read by
        pyarrow itself: the same column chunks, read in C++ (no buffer, no copy, no GIL)."""
        backend = self.backend
        if not row_groups or self.fetch_with != "ranges" or not isinstance(backend, LocalBackend):
            return self.decode(self.fetch(row_groups), row_groups)
        path = backend.native_path(self.key)
        if path is None:
            return self.decode(self.fetch(row_groups), row_groups)
        try:
            source = pa.OSFile(path)
        except FileNotFoundError:
            backend.head(self.key)  # raises ObjectNotFoundError naming the key
            raise
        with source:
            return self._decode(source, row_groups)

    def read(self) -> pa.Table:
        """Every matching row of the file (all chosen row groups fetched at once)."""
        return self._read(self.row_groups())

    def read_row_group(self, row_group: int) -> pa.Table:
        """One row group's matching rows."""
        return self._read([row_group])

    def iter_row_groups(self) -> Iterator[pa.Table]:
        """The chosen row groups' matching rows, one table each, in file order."""
        for i in self.row_groups():
            yield self.read_row_group(i)

    def first_row(self, row_group: int) -> int:
        """The file position of the first row of ``row_group`` (what position deletes count)."""
        return int(self._starts[row_group])

    # -- mapping ---------------------------------------------------------------------------

    def _mapped(self, raw: pa.Table, row_groups: Sequence[int]) -> pa.Table:
        """``raw`` (the file's columns, of ``row_groups``) as columns ``fields``: by id, cast,
        defaults; the row-lineage columns stored or inherited (:mod:`datashard.iceberg.lineage`)."""
        names = {name: i for i, name in enumerate(raw.column_names)}
        arrays = []
        for f in self.fields:
            target = to_arrow_type(f.field_type)
            index = self._layout.top.get(f.field_id)
            if f.field_id in LINEAGE_IDS:
                stored = (
                    None if index is None else raw.column(names[self._schema.field(index).name])
                )
                arrays.append(
                    lineage_column(f.field_id, stored, self._positions(row_groups), self.lineage)
                )
            elif index is not None:
                column = raw.column(names[self._schema.field(index).name])
                if column.type != target:
                    column = column.cast(target)
                arrays.append(column)
            elif f.initial_default is not None:  # added later with a default
                arrays.append(default_array(f, raw.num_rows, f.initial_default))
            else:
                arrays.append(pa.nulls(raw.num_rows, type=target))
        schema = pa.schema([to_arrow_field(f) for f in self.fields])
        return pa.Table.from_arrays(arrays, schema=schema)

    def _positions(self, row_groups: Sequence[int]) -> np.ndarray:
        """The file positions of the rows of ``row_groups``, in order."""
        md = self.footer.metadata
        parts = [
            np.arange(self.first_row(i), self.first_row(i) + md.row_group(i).num_rows)
            for i in row_groups
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _without_deleted(self, table: pa.Table, row_groups: Sequence[int]) -> pa.Table:
        assert self.deletes is not None
        by_id = {f.field_id: i for i, f in enumerate(self.fields)}
        wanted = [fid for fid in self.deletes.equality_ids if fid in by_id]
        masks = []
        at = 0
        md = self.footer.metadata
        for i in row_groups:
            n = md.row_group(i).num_rows
            values = {fid: table.column(by_id[fid]).slice(at, n) for fid in wanted}
            mask = self.deletes.mask(self.first_row(i), n, values)
            masks.append(np.zeros(n, dtype=bool) if mask is None else mask)
            at += n
        gone = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
        if not gone.any():
            return table
        return table.filter(pa.array(~gone))

    def output_schema(self) -> pa.Schema:
        """The schema of what the reader returns."""
        if self.raw:
            top = sorted(
                {
                    i
                    for i, leaves in self._layout.leaves.items()
                    if leaves and leaves[0] in self._columns
                }
            )
            return pa.schema([self._schema.field(i) for i in top])
        return pa.schema([to_arrow_field(f) for f in self.fields])

    def _empty(self) -> pa.Table:
        return self.output_schema().empty_table()


def open_data_file(
    backend: StorageBackend,
    key: str,
    fields: Sequence[NestedField],
    *,
    size: int | None = None,
    record_count: int | None = None,
    filter: Bound | None = None,
    deletes: FileDeletes | None = None,
    footers: FooterCache = FOOTERS,
    coalesce_gap: int | None = None,
    what: str = "data file",
    lineage: Lineage | None = None,
) -> DataFileReader:
    """A reader of columns ``fields`` of the Parquet file ``key`` (its footer read, or taken
    from ``footers``). ``lineage``: what its rows inherit for the row-lineage columns among
    ``fields``.

    ``size`` and ``record_count``: what the manifest says; a file of another size or row count
    raises ``CorruptMetadataError`` (it was replaced or truncated) before any row is read.
    Raises ``CorruptMetadataError`` naming the file (as ``what``) when it is not readable
    Parquet; a missing object raises ``ObjectNotFoundError``.
    """
    uri = backend.uri_for(key)
    try:
        footer = footers.get(backend, key, size)
    except SizeMismatchError as exc:
        raise CorruptMetadataError(
            f"{what} {uri} is {exc.actual} bytes, but the manifest says {exc.expected}: it "
            "was replaced or truncated"
        ) from exc
    except CorruptFileError as exc:
        raise CorruptMetadataError(f"{what} {uri} is not readable Parquet: {exc}") from exc
    rows = footer.metadata.num_rows
    if record_count is not None and rows != record_count:
        raise CorruptMetadataError(
            f"{what} {uri} holds {rows} rows, but the manifest says {record_count}: it was replaced"
        )
    return DataFileReader(
        footer,
        fields,
        backend=backend,
        key=key,
        filter=filter,
        deletes=deletes,
        coalesce_gap=coalesce_gap,
        what=what,
        lineage=lineage,
    )


def read_parquet_by_id(data: bytes, uri: str, fields: Sequence[NestedField]) -> pa.Table:
    """Columns ``fields`` of a whole Parquet file held in memory, matched by field id and named
    as in ``fields`` (the mapping :class:`DataFileReader` applies). Raises
    ``CorruptMetadataError`` naming the file when it is not readable Parquet."""
    try:
        metadata = pq.read_metadata(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptMetadataError(f"data file {uri} is not readable Parquet: {exc}") from exc
    reader = DataFileReader(Footer(uri=uri, size=len(data), metadata=metadata), fields)
    chosen = list(range(metadata.num_row_groups))
    return reader.decode(np.frombuffer(data, dtype=np.uint8), chosen)


__all__ = ["DataFileReader", "coalesce", "open_data_file", "read_parquet_by_id"]
