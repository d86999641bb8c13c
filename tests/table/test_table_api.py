"""The table API people call: create, append, load elsewhere, read, snapshots, time travel,
scans with projection and filters; on a local directory, moto S3 and Ceph RGW."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from datashard import Schema, TableAlreadyExistsError, TableNotFoundError, create_table, load_table
from datashard.errors import TableError, ValidationError
from datashard.iceberg.expressions import col

SCHEMA = Schema(
    schema_id=1,
    fields=[
        {"id": 1, "name": "user_id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
        {"id": 3, "name": "timestamp", "type": "long", "required": True},
    ],
)


def _records(start: int, n: int, event: str = "login") -> list[dict[str, object]]:
    return [
        {"user_id": i, "event": event, "timestamp": 1700000000 + i} for i in range(start, start + n)
    ]


def test_issue_example_round_trips_through_a_second_load(warehouse: Any) -> None:
    table = create_table("user-events", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append_records([{"user_id": 1, "event": "login", "timestamp": 1700000000}], SCHEMA)
    again = load_table("user-events", warehouse=warehouse.uri, **warehouse.options)
    assert again.current_snapshot() is not None
    assert again.current_snapshot().snapshot_id == table.current_snapshot().snapshot_id
    df = again.to_pandas()
    assert df.to_dict("records") == [{"user_id": 1, "event": "login", "timestamp": 1700000000}]
    assert str(df["user_id"].dtype) == "int64"


def test_own_table_opened_by_its_metadata_file_says_how_to_write(warehouse: Any) -> None:
    """A datashard table opened by its v<N> file is read-only; the error names the
    ``load_table`` call that does write, and that call works."""
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append_records(_records(0, 2))
    table.flush()  # the version-hint write runs in the background: let it land first
    by_file = load_table(table.metadata_location, **warehouse.options)
    assert by_file.read_only
    before = warehouse.snapshot_of_storage()
    with pytest.raises(TableError) as info:
        by_file.append_records(_records(2, 1))
    assert warehouse.snapshot_of_storage() == before
    message = str(info.value)
    assert "read-only" in message and table.metadata_location in message
    advice = f"load_table('t', warehouse={warehouse.backend.root_uri!r})"
    assert advice in message
    writable = load_table("t", warehouse=warehouse.backend.root_uri, **warehouse.options)
    writable.append_records(_records(2, 1))
    assert writable.count() == 3


def test_layout_matches_the_design(warehouse: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append_records(_records(0, 3))
    table.flush()  # the version-hint write runs in the background
    keys = warehouse.keys()
    assert "t/metadata/v1.metadata.json" in keys and "t/metadata/v2.metadata.json" in keys
    assert "t/metadata/version-hint.text" in keys
    assert warehouse.backend.read("t/metadata/version-hint.text").strip() == b"2"
    assert sum(k.startswith("t/data/") and k.endswith(".parquet") for k in keys) == 1
    snap = table.current_snapshot()
    assert snap.manifest_list.startswith(warehouse.backend.uri_for("t/metadata/snap-"))
    assert f"snap-{snap.snapshot_id}-0-" in snap.manifest_list
    assert any(k.endswith("-m0.avro") for k in keys)
    assert table.location == warehouse.backend.uri_for("t")


def test_append_dataframe_arrow_and_transaction(warehouse: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    table.append(pd.DataFrame(_records(0, 5)))
    table.append(pa.Table.from_pylist(_records(5, 5)))
    with table.transaction() as tx:
        tx.append_records(_records(10, 3))
        tx.append(pd.DataFrame(_records(13, 2)))
    assert len(table.snapshots()) == 3  # the transaction is one snapshot
    last = table.current_snapshot()
    assert last.summary["added-records"] == "5" and last.summary["added-data-files"] == "2"
    assert last.summary["total-records"] == "15"
    got = load_table("t", warehouse=warehouse.uri, **warehouse.options).to_arrow()
    assert sorted(got.column("user_id").to_pylist()) == list(range(15))


def test_transaction_that_raises_commits_nothing(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    before = local_wh.keys()
    with pytest.raises(RuntimeError):
        with table.transaction() as tx:
            tx.append_records(_records(0, 2))
            raise RuntimeError("boom")
    assert local_wh.keys() == before
    assert table.refresh().current_snapshot() is None


def test_snapshots_history_and_time_travel(warehouse: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    ids = []
    for i in range(3):
        ids.append(table.append_records(_records(i * 10, 10)).snapshot_id)
        time.sleep(0.01)
    assert [s.snapshot_id for s in table.snapshots()] == ids
    assert [h.snapshot_id for h in table.history()] == ids
    assert [s.parent_snapshot_id for s in table.snapshots()] == [None, ids[0], ids[1]]
    assert table.snapshot(ids[1]).sequence_number == 2
    assert table.scan(snapshot_id=ids[0]).count() == 10
    assert table.scan(snapshot_id=ids[1]).to_arrow().num_rows == 20
    ts1 = table.snapshot(ids[1]).timestamp_ms
    assert table.scan(as_of=ts1).count() == 20
    as_dt = datetime.fromtimestamp(ts1 / 1000, tz=timezone.utc)
    assert table.scan(as_of=as_dt).count() == 20
    with pytest.raises(ValidationError, match="no snapshot at or before"):
        table.scan(as_of=ts1 - 10_000_000)
    with pytest.raises(ValidationError, match="no snapshot with id 12345"):
        table.scan(snapshot_id=12345)
    with pytest.raises(ValidationError, match="no snapshot 12345"):
        table.snapshot(12345)


def test_scan_projection_filters_and_pruning(warehouse: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    for i in range(4):  # four files: user_id 0-9, 10-19, 20-29, 30-39
        table.append_records(_records(i * 10, 10, event=f"e{i}"))
    scan = table.scan(columns=["user_id"], filter=col("user_id") >= 25)
    assert len(list(scan.plan_files())) == 2  # pruned by manifest bounds before any data read
    assert sorted(scan.to_arrow().column("user_id").to_pylist()) == list(range(25, 40))
    assert scan.to_arrow().column_names == ["user_id"]
    assert len(list(table.scan(filter=col("event") == "e2").plan_files())) == 1
    assert table.scan(filter=col("event").isin(["e0", "e3"])).count() == 20
    assert table.scan(filter=col("event").not_in(["e0", "e3"])).count() == 20
    assert table.scan(filter=~(col("user_id") < 35) | (col("user_id") == 0)).count() == 6
    assert table.scan(filter=(col("user_id") > 5) & (col("user_id") <= 12)).count() == 7
    assert table.scan(filter=col("user_id") != 3).count() == 39
    assert table.scan(filter=col("event").is_null()).count() == 0
    assert len(list(table.scan(filter=col("event").is_null()).plan_files())) == 0
    assert table.scan(filter=col("event").not_null()).count() == 40
    assert table.scan(filter=[("user_id", "<", 3)]).count() == 3
    assert table.scan().count() == 40
    batches = list(table.scan(filter=col("user_id") < 15).to_batches())
    assert sum(b.num_rows for b in batches) == 15
    with pytest.raises(ValidationError, match="unknown column 'nope'"):
        table.scan(filter=col("nope") == 1)
    with pytest.raises(ValidationError, match="unknown column"):
        table.scan(columns=["nope"])
    with pytest.raises(ValidationError, match="does not fit column 'user_id'"):
        table.scan(filter=col("user_id") == "x")


def test_nulls_in_optional_columns_filter_like_sql(local_wh: Any) -> None:
    schema = Schema(
        schema_id=0,
        fields=[
            {"id": 1, "name": "k", "type": "long", "required": True},
            {"id": 2, "name": "note", "type": "string", "required": False},
        ],
    )
    table = create_table("t", schema, warehouse=local_wh.uri)
    table.append_records([{"k": 1, "note": "a"}, {"k": 2, "note": None}, {"k": 3}])
    assert table.scan(filter=col("note").is_null()).count() == 2
    assert table.scan(filter=col("note") != "a").count() == 0
    assert table.scan(filter=col("note").not_in(["b"])).count() == 1
    assert table.scan(filter=~(col("note") == "a")).count() == 0


def test_empty_table_reads_as_empty_with_its_schema(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    got = table.to_arrow()
    assert got.num_rows == 0 and got.column_names == ["user_id", "event", "timestamp"]
    assert table.scan().count() == 0
    assert table.current_snapshot() is None and table.snapshots() == []


def test_missing_and_existing_tables_are_named_errors(local_wh: Any) -> None:
    with pytest.raises(TableNotFoundError, match=f"{local_wh.uri}/ghost"):
        load_table("ghost", warehouse=local_wh.uri)
    create_table("t", SCHEMA, warehouse=local_wh.uri)
    with pytest.raises(TableAlreadyExistsError, match=f"{local_wh.uri}/t"):
        create_table("t", SCHEMA, warehouse=local_wh.uri)
    for bad in ["", "a/b", "../x", ".hidden", "x" * 300, "sp ace"]:
        with pytest.raises(ValidationError, match="invalid table name"):
            create_table(bad, SCHEMA, warehouse=local_wh.uri)


def test_a_stale_writer_still_commits_and_sees_every_row(local_wh: Any) -> None:
    a = create_table("t", SCHEMA, warehouse=local_wh.uri)
    b = load_table("t", warehouse=local_wh.uri)
    a.append_records(_records(0, 5))
    b.append_records(_records(5, 5))  # b's base is stale: the commit loop rebases it
    a.append_records(_records(10, 5))
    final = load_table("t", warehouse=local_wh.uri)
    assert sorted(final.to_arrow().column("user_id").to_pylist()) == list(range(15))
    chain = [s.parent_snapshot_id for s in final.snapshots()]
    ids = [s.snapshot_id for s in final.snapshots()]
    assert chain == [None, *ids[:-1]]


def test_schema_from_pyarrow_and_renamed_fields_read_by_id(local_wh: Any) -> None:
    arrow_schema = pa.schema(
        [pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.string())]
    )
    table = create_table("t", arrow_schema, warehouse=local_wh.uri)
    table.append(pa.table({"b": ["x", "y"], "a": [1, 2]}))  # columns in another order
    assert table.to_arrow().to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


def test_default_warehouse_comes_from_the_environment(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATASHARD_STORAGE_TYPE", raising=False)
    monkeypatch.setenv("DATASHARD_LOCAL_PATH", str(tmp_path))
    table = create_table("env-table", SCHEMA)
    table.append_records(_records(0, 2))
    assert table.location == f"file://{tmp_path}/env-table"
    assert load_table("env-table").count() == 2


def test_drop_table_removes_everything_and_the_name_is_free_again(local_wh: Any) -> None:
    from datashard import drop_table

    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(_records(0, 2))
    table.flush()
    drop_table("t", warehouse=local_wh.uri)
    assert local_wh.keys() == []
    with pytest.raises(TableNotFoundError):
        load_table("t", warehouse=local_wh.uri)
    with pytest.raises(TableNotFoundError):
        drop_table("t", warehouse=local_wh.uri)
    assert create_table("t", SCHEMA, warehouse=local_wh.uri).count() == 0


class _Cancelled(Exception):
    pass


def test_a_cancelled_append_or_compaction_leaves_the_table_and_storage_as_they_were(
    warehouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user stops a long append or compaction from its progress callback: their exception
    reaches them, nothing they staged is left in the store, and the table reads as before."""
    from datashard.table import append as append_module

    monkeypatch.setattr(append_module, "PROGRESS_SLICE_BYTES", 4096)  # several slices, small data
    table = create_table("cancel", SCHEMA, warehouse=warehouse.uri, **warehouse.options)
    for i in range(3):
        table.append_records(_records(i * 100, 100))
    table.flush()
    before = warehouse.snapshot_of_storage()
    version = table.version

    def after_first_slice(done: int, total: int, unit: str) -> None:
        if done > 0:
            raise _Cancelled(f"{done}/{total} {unit}")

    frame = pd.DataFrame(_records(1000, 2000))
    with pytest.raises(_Cancelled, match=r"/2000 rows"):
        table.append(frame, progress=after_first_slice)

    def at_once(done: int, total: int, unit: str) -> None:
        raise _Cancelled(f"{done}/{total} {unit}")

    with pytest.raises(_Cancelled, match=r"0/3 files"):
        table.compact(progress=at_once)
    table.flush()
    assert warehouse.snapshot_of_storage() == before
    again = load_table("cancel", warehouse=warehouse.uri, **warehouse.options)
    assert again.version == version and again.count() == 300
    assert sorted(again.to_pandas()["user_id"]) == list(range(300))


# -- lazy polars ------------------------------------------------------------------------------


def _polars_table(wh: Any) -> Any:
    import polars as pl  # noqa: F401 - the test needs polars (the dev extra installs it)

    schema = Schema(
        schema_id=0,
        fields=[
            {"id": 1, "name": "id", "type": "long", "required": True},
            {"id": 2, "name": "city", "type": "string", "required": False},
            {"id": 3, "name": "score", "type": "double", "required": False},
            {"id": 4, "name": "n", "type": "int", "required": False},
        ],
    )
    table = create_table("lazy", schema, warehouse=wh.uri, **wh.options)
    table.append(  # file 1: ids 0-99
        pa.table(
            {
                "id": pa.array(range(100), pa.int64()),
                "city": ["oslo"] * 100,
                "score": [float("nan") if i % 10 == 0 else i / 2 for i in range(100)],
                "n": pa.array(range(100), pa.int32()),
            }
        )
    )
    table.append(  # file 2: ids 100-149
        pa.table(
            {
                "id": pa.array(range(100, 150), pa.int64()),
                "city": [None] * 25 + ["rome"] * 25,
                "score": pa.array([None] * 50, pa.float64()),
                "n": pa.array(range(100, 150), pa.int32()),
            }
        )
    )
    return table


def _record_pushdown(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """What each collect asked the io source for: (the columns polars passed, the scan read)."""
    from datashard.table import polars_io

    seen: list[tuple[Any, Any]] = []
    real = polars_io.pushed_scan

    def recording(scan: Any, with_columns: Any, predicate: Any) -> Any:
        narrowed = real(scan, with_columns, predicate)
        seen.append((with_columns, narrowed))
        return narrowed

    monkeypatch.setattr(polars_io, "pushed_scan", recording)
    return seen


def test_a_lazy_polars_frame_reads_only_the_columns_and_files_its_query_needs(
    local_wh: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl

    table = _polars_table(local_wh)
    seen = _record_pushdown(monkeypatch)
    frame = table.to_polars(lazy=True)
    assert isinstance(frame, pl.LazyFrame) and seen == []  # nothing read before collect
    assert frame.collect_schema() == table.to_polars().schema

    got = frame.select("id").filter(pl.col("id") >= 120).collect()
    assert got["id"].to_list() == list(range(120, 150))
    with_columns, scan = seen[-1]
    assert with_columns == ["id"]  # the projection reached the source
    assert scan.columns == ("id",)  # and only that column is read
    assert len(list(scan.plan_files())) == 1  # the filter pruned the file of ids 0-99

    got = frame.filter(pl.col("city") == "rome").select("n").collect()
    assert got["n"].to_list() == list(range(125, 150))
    with_columns, scan = seen[-1]
    assert sorted(with_columns) == sorted(scan.columns) == ["city", "n"]  # + the filter's
    assert len(list(scan.plan_files())) == 1

    assert frame.select(pl.len()).collect().item() == 150
    assert frame.head(3).collect()["id"].to_list() == [0, 1, 2]


@pytest.mark.parametrize(
    "predicate",
    [
        "pl.col('id') < 3",
        "(pl.col('n') > 140) | pl.col('id').is_between(10, 12)",
        "~(pl.col('n') <= 147)",
        "pl.col('city').is_null()",
        "pl.col('city').is_not_null() & (pl.lit(145) < pl.col('n'))",
        "pl.col('city') > 'p'",
        "pl.col('score') > 45",  # NaN rows: polars keeps them
        "~(pl.col('score') < 3)",
        "pl.col('id').is_in([1, 140])",  # left to polars
        "(pl.col('n') + 1) > 148",  # left to polars
        "pl.col('id') < 2.5",  # a float literal on an int column: left to polars
    ],
)
def test_a_lazy_polars_filter_keeps_exactly_the_rows_polars_keeps(
    local_wh: Any, predicate: str
) -> None:
    import polars as pl

    table = _polars_table(local_wh)
    expr = eval(predicate, {"pl": pl})
    got = table.to_polars(lazy=True).filter(expr).collect()
    assert got.equals(table.to_polars().filter(expr)), predicate


def test_a_lazy_polars_frame_of_a_scan_keeps_its_snapshot_columns_and_filter(
    local_wh: Any,
) -> None:
    import polars as pl

    table = _polars_table(local_wh)
    first = table.snapshots()[0].snapshot_id
    scan = table.scan(columns=["id", "city"], filter=col("id") >= 90, snapshot_id=first)
    got = scan.to_polars(lazy=True).sort("id").collect()
    assert got.columns == ["id", "city"] and got["id"].to_list() == list(range(90, 100))
    lazy = table.to_polars(["n"], col("n") < 5, lazy=True)
    assert lazy.collect()["n"].to_list() == [0, 1, 2, 3, 4]
    assert lazy.filter(pl.col("n") > 2).collect()["n"].to_list() == [3, 4]
