"""Reading Parquet data files by Iceberg field id.

Columns are matched by the ``PARQUET:field_id`` of the file, not by name: a column renamed or
reordered since a file was written still reads, a column added later reads as its
``initial-default`` (or nulls), and a widened type (int to long, float to double) is cast.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from datashard.errors import CorruptMetadataError
from datashard.iceberg.defaults import default_array
from datashard.iceberg.types import NestedField, field_id_of, to_arrow_field, to_arrow_type


def read_parquet_by_id(data: bytes, uri: str, fields: Sequence[NestedField]) -> pa.Table:
    """Columns ``fields`` of a Parquet file, matched by field id and named as in ``fields``.

    A field absent from the file (added later) reads as nulls; a column whose type was widened
    since (int to long, float to double) is cast. Raises ``CorruptMetadataError`` naming the
    file when it is not readable Parquet.
    """
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        file_schema = pf.schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(f"data file {uri} is not readable Parquet: {exc}") from exc
    by_id: dict[int, str] = {}
    for f in file_schema:
        fid = field_id_of(f)
        if fid is not None:
            by_id[fid] = f.name
    if not by_id:  # a file without field ids: fall back to names
        by_id = {f.field_id: f.name for f in fields if f.name in file_schema.names}
    present = [by_id[f.field_id] for f in fields if f.field_id in by_id]
    try:
        raw = pf.read(columns=present, use_threads=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(f"data file {uri} is not readable Parquet: {exc}") from exc
    arrays = []
    for f in fields:
        target = to_arrow_type(f.field_type)
        if f.field_id in by_id:
            column = raw.column(by_id[f.field_id])
            if column.type != target:
                column = column.cast(target)
            arrays.append(column)
        elif f.initial_default is not None:  # added later with a default
            arrays.append(default_array(f, raw.num_rows, f.initial_default))
        else:
            arrays.append(pa.nulls(raw.num_rows, type=target))
    return pa.Table.from_arrays(arrays, schema=pa.schema([to_arrow_field(f) for f in fields]))


__all__ = ["read_parquet_by_id"]
