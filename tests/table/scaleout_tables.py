"""The table the Dask and Ray tests read: every way a plain Parquet reader goes wrong at once.

``evolved_table(wh)`` is partitioned by ``region`` and holds, in its current snapshot:

- files written before a rename (``name`` -> ``label``), before ``a`` was dropped and a new
  string column ``a`` added (old files hold the old long ``a``: it must read as null), and
  before ``n`` was widened from int to long;
- position delete files (datashard's own merge-on-read deletes, before and after the
  evolution) and an equality delete file (by ``label``, as Flink writes them);
- small row groups (20 rows), so a file can be read as several pieces.

``same_rows(a, b)`` compares two Arrow tables row by row on every column, order aside.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from datashard import Schema, create_table, load_table
from datashard.iceberg.expressions import col
from datashard.table import Table
from datashard.table.row_delta import RowDelta

SCHEMA = Schema(
    0,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "name", "type": "string", "required": False},
        {"id": 3, "name": "a", "type": "long", "required": False},
        {"id": 4, "name": "n", "type": "int", "required": False},
        {"id": 5, "name": "region", "type": "string", "required": False},
    ],
)

#: rows written before the evolution (3 appends) and after it (2 appends)
BEFORE, AFTER = 300, 200


def _old_rows(start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([None if i % 11 == 0 else f"n{i}" for i in ids], pa.string()),
            "a": pa.array([i * 10 for i in ids], pa.int64()),
            "n": pa.array([i % 50 for i in ids], pa.int32()),
            "region": pa.array(["eu" if i % 3 else "us" for i in ids], pa.string()),
        }
    )


def _new_rows(start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "label": pa.array([f"n{i}" for i in ids], pa.string()),
            "n": pa.array([(1 << 40) + i for i in ids], pa.int64()),
            "region": pa.array(["eu" if i % 2 else "us" for i in ids], pa.string()),
            "a": pa.array([f"new-{i}" for i in ids], pa.string()),
        }
    )


def evolved_table(wh: Any, name: str = "events") -> Table:
    """The table described in the module docstring, on warehouse ``wh``."""
    table = create_table(
        name,
        SCHEMA,
        warehouse=wh.uri,
        partition_spec=["region"],
        properties={
            "write.delete.mode": "merge-on-read",
            "write.parquet.row-group-limit": "20",
        },
        **wh.options,
    )
    step = BEFORE // 3
    for start in range(0, BEFORE, step):
        table.append(_old_rows(start, step))
    table.delete(col("id").isin(list(range(0, BEFORE, 7))))
    # an equality delete by name, as another engine writes it (a global delete: it needs the
    # table's unpartitioned spec, so it is written before the spec is used by data)
    rd = RowDelta(table.backend, table._paths, table._loaded)  # type: ignore[arg-type]
    spec = table.metadata.default_spec_id
    eq_keys = pa.table({"name": pa.array(["n5", "n17", "n102", None], pa.string())})
    rd.stage_equality_deletes(eq_keys, [2], spec, {"region": "eu"})
    rd.commit()
    table = load_table(name, warehouse=wh.uri, **wh.options)
    with table.update_schema() as u:
        u.rename_column("name", "label")
        u.drop_column("a")
        u.update_column("n", "long")
    with table.update_schema() as u:
        u.add_column("a", "string")
    step = AFTER // 2
    for start in range(BEFORE, BEFORE + AFTER, step):
        table.append(_new_rows(start, step))
    table.delete(col("id").isin(list(range(BEFORE + 3, BEFORE + AFTER, 13))))
    table.flush()  # background version-hint writes done: storage is settled
    return table


def rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Every row of ``table`` as a tuple of its columns (in column-name order), sorted."""
    names = sorted(table.column_names)
    data = table.select(names).to_pylist()
    return sorted((tuple(r[n] for n in names) for r in data), key=repr)


def same_rows(got: pa.Table, want: pa.Table) -> None:
    """Assert ``got`` holds exactly the rows of ``want`` (order aside), every column, and the
    same column names and types."""
    assert sorted(got.column_names) == sorted(want.column_names)
    for name in want.column_names:
        assert got.schema.field(name).type == want.schema.field(name).type, name
    assert got.num_rows == want.num_rows
    assert rows(got) == rows(want)


def expected_facts(table: Table) -> pa.Table:
    """``table.to_arrow()``, checked to hold what the evolution promises (so a test that
    compares with it compares with the right thing)."""
    want = table.to_arrow()
    by_id = {r["id"]: r for r in want.to_pylist()}
    assert 0 not in by_id and 7 not in by_id  # position deletes
    # the equality delete is scoped to "eu": 5, 17 and 11 (a null name) go, 102 and 33 ("us")
    assert 5 not in by_id and 17 not in by_id and 11 not in by_id
    assert by_id[102]["label"] == "n102" and by_id[33]["label"] is None
    assert by_id[1]["a"] is None and by_id[1]["label"] == "n1"  # dropped + re-added, renamed
    assert by_id[BEFORE + 1]["a"] == f"new-{BEFORE + 1}"
    assert by_id[BEFORE + 1]["n"] == (1 << 40) + BEFORE + 1  # widened
    return want
