"""The table API that PyIceberg, delta-rs and Lance users reach for: streamed reads, DuckDB and
polars, ``inspect`` metadata tables (checked against PyIceberg's own on the same table), and
progress callbacks that can cancel."""

from __future__ import annotations

import sys
from datetime import date
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table
from datashard.errors import ValidationError
from datashard.iceberg.expressions import col
from datashard.table import append as append_module

SCHEMA = Schema(
    schema_id=1,
    fields=[
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "city", "type": "string", "required": False},
        {"id": 3, "name": "day", "type": "date", "required": False},
    ],
)


def _rows(start: int, n: int, city: str = "oslo") -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "city": pa.array([city] * n),
            "day": pa.array([date(2024, 5, 1 + i % 3) for i in range(n)], pa.date32()),
        }
    )


def _table(wh: Any, partition_spec: Any = None) -> Any:
    return create_table("t", SCHEMA, warehouse=wh.uri, partition_spec=partition_spec, **wh.options)


# -- reads ------------------------------------------------------------------------------------


def test_table_streams_batches_with_scan_arguments(local_wh: Any) -> None:
    table = _table(local_wh)
    table.append(_rows(0, 100))
    first = table.current_snapshot().snapshot_id
    table.append(_rows(100, 50, "rome"))
    batches = list(table.to_batches(["id"], col("city") == "rome", batch_size=20))
    assert [b.num_rows for b in batches] == [20, 20, 10]
    assert sorted(pa.Table.from_batches(batches)["id"].to_pylist()) == list(range(100, 150))
    reader = table.to_arrow_batch_reader(snapshot_id=first)
    assert reader.read_all().num_rows == 100
    with pytest.raises(ValidationError, match="batch_size"):
        list(table.to_batches(batch_size=0))


def test_to_duckdb_registers_a_view_that_sql_reads(local_wh: Any) -> None:
    table = _table(local_wh)
    table.append(_rows(0, 30))
    table.append(_rows(30, 10, "rome"))
    con = table.to_duckdb("events")
    assert con.execute(
        "select city, count(*) from events group by city order by city"
    ).fetchall() == [
        ("oslo", 30),
        ("rome", 10),
    ]
    assert con.execute("select count(*) from events").fetchone() == (40,)  # read again
    mine = duckdb.connect()
    same = table.scan(filter=col("id") < 5).to_duckdb("few", mine, stream=True)
    assert same is mine
    assert mine.execute("select sum(id) from few").fetchone() == (10,)
    with pytest.raises(ValidationError, match="view name"):
        table.to_duckdb("")


def test_to_polars_gives_every_row_with_types(local_wh: Any) -> None:
    table = _table(local_wh)
    table.append(_rows(0, 25))
    frame = table.to_polars()
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == 25 and frame["id"].sum() == sum(range(25))
    assert frame.schema["day"] == pl.Date
    assert table.scan(columns=["id"], filter=col("id") >= 20).to_polars()["id"].to_list() == [
        20,
        21,
        22,
        23,
        24,
    ]


def test_missing_optional_package_names_what_to_install(
    local_wh: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table(local_wh)
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars now raises ImportError
    with pytest.raises(ImportError, match="pip install polars"):
        table.to_polars()


# -- inspect, against PyIceberg's own metadata tables ----------------------------------------


def _theirs(table: Any) -> Any:
    return StaticTable.from_metadata(table.metadata_location).inspect


def _busy_table(wh: Any) -> Any:
    table = _table(wh, partition_spec=[("city", "identity")])
    table.append(_rows(0, 40))
    table.append(_rows(40, 20, "rome"))
    table.delete(col("id") < 10)
    table.create_tag("before-lima")
    table.append(_rows(60, 5, "lima"))
    return table


def test_inspect_snapshots_and_history_match_pyiceberg(local_wh: Any) -> None:
    table = _busy_table(local_wh)
    theirs = _theirs(table)
    for name in ("snapshots", "history"):
        ours_t, their_t = getattr(table.inspect, name)(), getattr(theirs, name)()
        assert ours_t.schema.names == their_t.schema.names, name
        assert ours_t.schema == their_t.schema, name
        assert ours_t.to_pylist() == their_t.to_pylist(), name
    ops = table.inspect.snapshots()["operation"].to_pylist()
    assert ops == ["append", "append", "delete", "append"]


def test_inspect_refs_match_pyiceberg(local_wh: Any) -> None:
    table = _busy_table(local_wh)
    ours, theirs = table.inspect.refs(), _theirs(table).refs()
    assert ours.schema == theirs.schema
    key = lambda r: r["name"]  # noqa: E731
    assert sorted(ours.to_pylist(), key=key) == sorted(theirs.to_pylist(), key=key)
    assert {r["type"] for r in ours.to_pylist()} == {"BRANCH", "TAG"}


def test_inspect_manifests_match_pyiceberg(local_wh: Any) -> None:
    table = _busy_table(local_wh)
    ours, theirs = table.inspect.manifests(), _theirs(table).manifests()
    assert ours.schema == theirs.schema
    key = lambda r: r["path"]  # noqa: E731
    assert sorted(ours.to_pylist(), key=key) == sorted(theirs.to_pylist(), key=key)


def test_inspect_files_match_pyiceberg(local_wh: Any) -> None:
    table = _busy_table(local_wh)
    ours, theirs = table.inspect.files(), _theirs(table).files()
    assert ours.schema.names == theirs.schema.names
    assert ours.num_rows == theirs.num_rows == len(list(table.scan().plan_files()))
    comparable = [
        "content",
        "file_path",
        "spec_id",
        "partition",
        "record_count",
        "file_size_in_bytes",
        "column_sizes",
        "value_counts",
        "null_value_counts",
        "lower_bounds",
        "upper_bounds",
        "split_offsets",
        "readable_metrics",
    ]
    key = lambda r: r["file_path"]  # noqa: E731
    mine = sorted(ours.select(comparable).to_pylist(), key=key)
    pyice = sorted(theirs.select(comparable).to_pylist(), key=key)
    assert mine == pyice
    assert sum(r["record_count"] for r in mine) == table.count() == 55
    assert table.inspect.files(table.snapshots()[0].snapshot_id).num_rows >= 1


def test_inspect_partitions_match_pyiceberg(local_wh: Any) -> None:
    table = _busy_table(local_wh)
    ours, theirs = table.inspect.partitions(), _theirs(table).partitions()
    assert ours.schema.names == theirs.schema.names
    key = lambda r: r["partition"]["city"]  # noqa: E731
    assert sorted(ours.to_pylist(), key=key) == sorted(theirs.to_pylist(), key=key)
    counts = {r["partition"]["city"]: r["record_count"] for r in ours.to_pylist()}
    assert counts == {"oslo": 30, "rome": 20, "lima": 5}


def test_inspect_of_an_empty_table_and_of_a_missing_snapshot(local_wh: Any) -> None:
    table = _table(local_wh)
    assert table.inspect.snapshots().num_rows == 0
    assert table.inspect.files().num_rows == 0
    assert table.inspect.manifests().num_rows == 0
    table.append(_rows(0, 3))
    with pytest.raises(ValidationError, match="no snapshot 123"):
        table.inspect.files(123)
    # unpartitioned: one row, no partition column (as PyIceberg gives it)
    ours, theirs = table.inspect.partitions(), _theirs(table).partitions()
    assert ours.schema == theirs.schema and "partition" not in ours.schema.names
    assert ours.to_pylist() == theirs.to_pylist() and ours["record_count"].to_pylist() == [3]


# -- progress and cancellation ----------------------------------------------------------------


class _Cancel(Exception):
    pass


def test_append_reports_progress_in_rows_and_cancels_cleanly(
    local_wh: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(append_module, "PROGRESS_SLICE_BYTES", 4096)  # many slices, small data
    table = _table(local_wh)
    calls: list[tuple[int, int, str]] = []
    snap = table.append(_rows(0, 2000), progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 2000, "rows") and calls[-1] == (2000, 2000, "rows")
    assert len(calls) > 3 and [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert snap.summary["added-records"] == "2000" and table.count() == 2000
    table.flush()
    before = local_wh.snapshot_of_storage()

    def stop_midway(done: int, total: int, unit: str) -> None:
        if done > 0:
            raise _Cancel(f"cancelled at {done}/{total} {unit}")

    with pytest.raises(_Cancel, match="cancelled at"):
        table.append(_rows(2000, 2000), progress=stop_midway)
    assert local_wh.snapshot_of_storage() == before  # its data files were deleted
    assert table.refresh().count() == 2000


def test_compact_reports_progress_in_files_and_cancels_cleanly(local_wh: Any) -> None:
    table = _table(local_wh)
    for i in range(4):
        table.append(_rows(i * 10, 10))
    table.flush()
    before = local_wh.snapshot_of_storage()

    def cancel(done: int, total: int, unit: str) -> None:
        raise _Cancel("stop")

    with pytest.raises(_Cancel):
        table.compact(progress=cancel)
    assert local_wh.snapshot_of_storage() == before
    calls: list[tuple[int, int, str]] = []
    result = table.compact(progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 4, "files") and calls[-1] == (4, 4, "files")
    assert result.rewritten_files == 4
    assert len(list(table.scan().plan_files())) == 1 and table.count() == 40
