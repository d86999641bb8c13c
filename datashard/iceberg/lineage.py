"""Row lineage (format version 3): the metadata columns ``_row_id`` and
``_last_updated_sequence_number``, and how a reader fills them.

A v3 data file may store either column; where it does not, or where a stored value is null, the
spec's inheritance gives it: ``_row_id`` is the data file's ``first_row_id`` plus the row's
position in the file, and ``_last_updated_sequence_number`` is the data sequence number of the
file's manifest entry. A file without a ``first_row_id`` (written before the table was
upgraded to v3) has null row ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datashard.iceberg.types import LongType, NestedField

#: The reserved field ids of the spec.
ROW_ID = NestedField(2147483540, "_row_id", LongType(), required=False)
LAST_UPDATED_SEQUENCE_NUMBER = NestedField(
    2147483539, "_last_updated_sequence_number", LongType(), required=False
)
#: The row-lineage columns by name, as a scan names them.
LINEAGE_FIELDS = {f.name: f for f in (ROW_ID, LAST_UPDATED_SEQUENCE_NUMBER)}
LINEAGE_IDS = frozenset(f.field_id for f in LINEAGE_FIELDS.values())


@dataclass(frozen=True)
class Lineage:
    """What a data file's rows inherit: its ``first_row_id`` and its data sequence number."""

    first_row_id: int | None
    sequence_number: int | None


def lineage_column(
    field_id: int,
    stored: pa.ChunkedArray | pa.Array | None,
    positions: np.ndarray,
    lineage: Lineage | None,
) -> pa.Array:
    """The values of lineage column ``field_id`` for rows at file ``positions``: the
    ``stored`` values where not null, else the inherited ones (null when there is nothing to
    inherit from)."""
    n = len(positions)
    if field_id == ROW_ID.field_id:
        base = None if lineage is None else lineage.first_row_id
        inherited = (
            pa.nulls(n, pa.int64())
            if base is None
            else pa.array(positions.astype(np.int64) + np.int64(base), pa.int64())
        )
    elif field_id == LAST_UPDATED_SEQUENCE_NUMBER.field_id:
        seq = None if lineage is None else lineage.sequence_number
        inherited = (
            pa.nulls(n, pa.int64())
            if seq is None
            else pa.array(np.full(n, seq, dtype=np.int64), pa.int64())
        )
    else:
        raise ValueError(f"field id {field_id} is not a row-lineage column")
    if stored is None:
        return inherited
    values = stored.combine_chunks() if isinstance(stored, pa.ChunkedArray) else stored
    values = values.cast(pa.int64())
    if values.null_count == 0:
        return values
    return pc.coalesce(values, inherited)


__all__ = [
    "LAST_UPDATED_SEQUENCE_NUMBER",
    "LINEAGE_FIELDS",
    "LINEAGE_IDS",
    "ROW_ID",
    "Lineage",
    "lineage_column",
]
