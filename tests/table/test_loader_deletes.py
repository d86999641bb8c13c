"""The row-group loader over a table yields no deleted row: position deletes land in the right
row group of a file with several, and equality deletes apply even to columns it does not yield."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from datashard import Schema, create_table
from datashard.io.loader import RowGroupLoader
from datashard.table.row_delta import RowDelta

SCHEMA = Schema(
    0,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "label", "type": "string", "required": False},
    ],
)


def _table(local_wh: Any) -> Any:
    t = create_table(
        "rg", SCHEMA, warehouse=local_wh.uri, properties={"write.parquet.row-group-limit": "100"}
    )
    labels = [None if i % 10 == 0 else f"l{i % 3}" for i in range(1000)]
    t.append(pa.table({"id": pa.array(range(1000), pa.int64()), "label": labels}))
    return t


def test_a_table_written_with_a_row_group_limit_has_row_groups_of_that_size(
    local_wh: Any,
) -> None:
    t = _table(local_wh)
    loader = RowGroupLoader.from_table(t)
    assert [task.num_rows for task in loader.tasks()] == [100] * 10


def test_the_loader_drops_rows_deleted_by_position_in_every_row_group(local_wh: Any) -> None:
    t = _table(local_wh)
    (task,) = t.scan().plan_files()
    gone = [0, 99, 100, 101, 450, 998, 999]  # row group edges on both sides
    rd = RowDelta(t.backend, t._paths, t._loaded)
    rd.stage_position_deletes({task.file_path: gone}, {task.file_path: (0, {})})
    t._loaded = rd.commit()[0]
    ids = RowGroupLoader.from_table(t, columns=["id"]).to_arrow().column("id").to_pylist()
    assert sorted(ids) == [i for i in range(1000) if i not in gone]
    assert sorted(t.to_arrow().column("id").to_pylist()) == sorted(ids)


def test_the_loader_drops_rows_an_equality_delete_matches_on_a_column_it_does_not_yield(
    local_wh: Any,
) -> None:
    t = _table(local_wh)
    rd = RowDelta(t.backend, t._paths, t._loaded)
    rd.stage_equality_deletes(pa.table({"label": pa.array(["l1", None], pa.string())}), [2])
    t._loaded = rd.commit()[0]
    loader = RowGroupLoader.from_table(t, columns=["id"], batch_size=37)
    got = loader.to_arrow()
    assert got.column_names == ["id"]
    want = [i for i in range(1000) if i % 10 != 0 and i % 3 != 1]
    assert sorted(got.column("id").to_pylist()) == want
    assert t.count() == len(want)


def test_the_loader_keeps_only_the_rows_the_filter_keeps_and_skips_row_groups(
    local_wh: Any,
) -> None:
    from datashard import col

    t = _table(local_wh)
    loader = RowGroupLoader.from_table(
        t, columns=["id"], filter=(col("id") >= 250) & (col("id") < 420)
    )
    assert [task.row_group for task in loader.tasks()] == [2, 3, 4]  # of 10
    assert loader.to_arrow().column("id").to_pylist() == list(range(250, 420))
    labelled = RowGroupLoader.from_table(t, columns=["id", "label"], filter=col("label") == "l1")
    got = labelled.to_arrow()
    assert set(got.column("label").to_pylist()) == {"l1"}
    assert got.column("id").to_pylist() == [i for i in range(1000) if i % 10 and i % 3 == 1]


def test_the_loader_reads_by_field_id_after_a_rename_and_an_added_column(local_wh: Any) -> None:
    t = _table(local_wh)
    with t.update_schema() as u:
        u.rename_column("label", "tag")
        u.add_column("weight", "double", default=1.5)
    got = RowGroupLoader.from_table(t, columns=["id", "tag", "weight"]).to_arrow()
    assert got.column_names == ["id", "tag", "weight"]
    assert got.column("tag").to_pylist() == [
        None if i % 10 == 0 else f"l{i % 3}" for i in range(1000)
    ]
    assert set(got.column("weight").to_pylist()) == {1.5}
