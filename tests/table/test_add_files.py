"""``Table.add_files``: Parquet data files written elsewhere become ONE append snapshot.

Files come from ``write_data_files`` (the worker writer) or are plain Parquet files under the
table location carrying the table's field ids. Every bad input is refused with a typed error
naming the file and what was expected, and leaves the table's storage byte for byte as it was.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import CommitConflictError, SchemaError, ValidationError
from datashard.iceberg.expressions import col
from datashard.table import Table

BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)

SCHEMA = Schema(
    0,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "name", "type": "string", "required": False},
        {"id": 3, "name": "n", "type": "int", "required": False},
        {"id": 4, "name": "region", "type": "string", "required": False},
    ],
)


def _rows(start: int, count: int, region: str | None = None) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": [f"n{i}" for i in ids],
            "n": pa.array([i % 7 for i in ids], pa.int32()),
            "region": [region or ("eu" if i % 2 else "us") for i in ids],
        }
    )


def _table(wh: Any) -> Table:
    table = create_table("t", SCHEMA, warehouse=wh.uri, partition_spec=["region"], **wh.options)
    table.append(_rows(0, 10))
    table.flush()  # the version hint written in the background: storage is settled
    return table


def _put_parquet(wh: Any, key: str, data: pa.Table) -> str:
    """Write ``data`` as a Parquet file at ``key`` of the warehouse; its URI."""
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    wh.backend.write(key, sink.getvalue().to_pybytes())
    return str(wh.backend.uri_for(key))


def _with_ids(table: Table, data: pa.Table) -> pa.Table:
    """``data`` in the table's Arrow form (each field carrying its ``PARQUET:field_id``)."""
    return data.cast(table.schema().to_arrow())


# --------------------------------------------------------------------------------------------
# what works


@BOTH
def test_files_written_by_the_worker_writer_commit_as_one_snapshot(warehouse: Any) -> None:
    table = _table(warehouse)
    snapshots = len(table.snapshots())
    writer = table.data_file_writer()
    shipped = pickle.loads(pickle.dumps(writer))  # what a worker receives
    written = [*shipped.write(_rows(100, 50)), *shipped.write(_rows(200, 50))]
    assert len(written) == 4  # two partition values in each write
    assert all(len(pickle.dumps(w)) < 2048 for w in written)  # small to send back
    assert table.count() == 10  # nothing committed yet
    snap = table.add_files(written)
    assert len(table.snapshots()) == snapshots + 1
    assert snap.summary["added-data-files"] == "4" and snap.summary["added-records"] == "100"
    fresh = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    ids = sorted(fresh.to_arrow().column("id").to_pylist())
    assert ids == [*range(10), *range(100, 150), *range(200, 250)]
    # partition values and column statistics are in the manifests: a filter prunes files
    planned = list(fresh.scan(filter=(col("region") == "eu") & (col("id") >= 200)).plan_files())
    assert len(planned) == 1 and planned[0].data_file.partition == {"region": "eu"}


@BOTH
def test_plain_parquet_files_with_field_ids_are_added_by_path(warehouse: Any) -> None:
    table = _table(warehouse)
    prefix = table.location.removeprefix(warehouse.uri).strip("/")
    us = _put_parquet(
        warehouse, f"{prefix}/data/ext-us.parquet", _with_ids(table, _rows(20, 5, "us"))
    )
    _put_parquet(warehouse, f"{prefix}/data/ext-eu.parquet", _with_ids(table, _rows(40, 5, "eu")))
    # one by its absolute URI, one by its path relative to the table location
    snap = table.add_files([us, "data/ext-eu.parquet"])
    assert snap.summary["added-records"] == "10"
    got = sorted(table.to_arrow().to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in got] == [*range(10), *range(20, 25), *range(40, 45)]
    assert {r["region"] for r in got if r["id"] >= 40} == {"eu"}
    files = {f.file_path: f.data_file for f in table.scan().plan_files()}
    ext = files[us]
    assert ext.partition == {"region": "us"}
    assert ext.record_count == 5 and ext.null_value_counts[1] == 0
    # the user's files are where they were: add_files neither moves nor copies them
    assert warehouse.backend.exists(f"{prefix}/data/ext-us.parquet")


def test_a_file_of_an_older_schema_reads_through_renames_and_widening(local_wh: Any) -> None:
    table = _table(local_wh)
    with table.update_schema() as u:
        u.rename_column("name", "label")
        u.update_column("n", "long")
    # written with the first schema's names and an int32 n: read by field id, widened
    old = _rows(50, 3, "eu").cast(SCHEMA.to_arrow())
    _put_parquet(local_wh, "t/data/old.parquet", old)
    table.add_files(["data/old.parquet"])
    got = {r["id"]: r for r in table.to_arrow().to_pylist()}
    assert got[51] == {"id": 51, "label": "n51", "n": 51 % 7, "region": "eu"}


def test_files_and_rows_in_one_transaction_are_one_snapshot(local_wh: Any) -> None:
    table = _table(local_wh)
    snapshots = len(table.snapshots())
    written = table.write_data_files(_rows(100, 4, "us"))
    with table.transaction() as tx:
        tx.append(_rows(200, 3))
        tx.add_files(written)
    assert len(table.snapshots()) == snapshots + 1
    assert table.count() == 17


def test_an_idempotency_key_adds_the_files_once(local_wh: Any) -> None:
    table = _table(local_wh)
    written = table.write_data_files(_rows(100, 4))
    first = table.add_files(written, idempotency_key="job-1/commit")
    again = table.add_files(written, idempotency_key="job-1/commit")
    assert again.snapshot_id == first.snapshot_id
    assert table.count() == 14


def test_a_failed_commit_never_deletes_the_files_given(local_wh: Any) -> None:
    table = _table(local_wh)
    uri = _put_parquet(local_wh, "t/data/mine.parquet", _with_ids(table, _rows(60, 3, "us")))
    other = load_table("t", warehouse=local_wh.uri)
    with other.update_schema() as u:  # raced: the file holds n as int, the table now long
        u.update_column("n", "long")
    with pytest.raises(CommitConflictError, match="'n'"):
        table.add_files([uri])
    assert local_wh.backend.exists("t/data/mine.parquet")
    assert load_table("t", warehouse=local_wh.uri).count() == 10


def test_duckdb_iceberg_scan_reads_added_files(local_wh: Any) -> None:
    """docs/beyond.md, "DuckDB": ``iceberg_scan`` of the table directory and of its newest
    metadata file sees rows committed by ``add_files`` (worker-written and plain files)."""
    oracles = _oracles()
    table = _table(local_wh)
    table.add_files(table.write_data_files(_rows(100, 6)))
    _put_parquet(local_wh, "t/data/ext.parquet", _with_ids(table, _rows(300, 2, "eu")))
    table.add_files(["data/ext.parquet"])
    table.flush()  # the version hint the directory form follows
    want = sorted(table.to_arrow().column("id").to_pylist())
    con = oracles.duckdb_connection(local_wh)
    directory = table.location.removeprefix("file://")
    for source in (directory, table.metadata_location.removeprefix("file://")):
        got = con.execute(f"SELECT id FROM iceberg_scan('{source}')").fetchall()
        assert sorted(r[0] for r in got) == want, source


def _oracles() -> ModuleType:
    name = "datashard_tests_table_oracles"  # the module test_row_deletes.py loads too
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("oracles.py"))
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


# --------------------------------------------------------------------------------------------
# what is refused, the table unchanged


def _plain(wh: Any, table: Table, name: str, data: pa.Table) -> str:
    return _put_parquet(wh, f"t/data/{name}", data)


CASES: dict[str, tuple[Callable[[Any, Table], Any], type[Exception], str]] = {
    "outside the location": (
        lambda wh, t: [_put_parquet(wh, "elsewhere/x.parquet", _with_ids(t, _rows(1, 1)))],
        ValidationError,
        "outside the table location",
    ),
    "missing": (lambda wh, t: ["data/nope.parquet"], ValidationError, "nope.parquet was not found"),
    "not parquet": (
        lambda wh, t: [
            wh.backend.write("t/data/junk.parquet", b"not parquet") or "data/junk.parquet"
        ],
        ValidationError,
        "junk.parquet is not readable Parquet",
    ),
    "already in the table": (
        lambda wh, t: [next(t.scan().plan_files()).file_path],
        ValidationError,
        "already in table",
    ),
    "listed twice": (
        lambda wh, t: [_plain(wh, t, "a.parquet", _with_ids(t, _rows(1, 1, "us")))] * 2,
        ValidationError,
        "listed twice",
    ),
    "no field ids": (
        lambda wh, t: [_plain(wh, t, "b.parquet", _rows(1, 2, "us"))],
        ValidationError,
        "column 'id' has no Parquet field id",
    ),
    "two partitions": (
        lambda wh, t: [_plain(wh, t, "c.parquet", _with_ids(t, _rows(1, 4)))],
        ValidationError,
        "holds rows of 2 partitions",
    ),
    "unknown field id": (
        lambda wh, t: [
            _plain(
                wh,
                t,
                "d.parquet",
                pa.table({"id": [1]}).cast(
                    pa.schema([pa.field("id", pa.int64(), metadata={"PARQUET:field_id": "99"})])
                ),
            )
        ],
        SchemaError,
        "field id 99",
    ),
    "wrong type": (
        lambda wh, t: [
            _plain(
                wh,
                t,
                "e.parquet",
                _with_ids(t, _rows(1, 1, "us")).set_column(
                    2,
                    pa.field("n", pa.string(), metadata={"PARQUET:field_id": "3"}),
                    pa.array(["x"]),
                ),
            )
        ],
        SchemaError,
        "'n'",
    ),
    "required column missing": (
        lambda wh, t: [_plain(wh, t, "f.parquet", _with_ids(t, _rows(1, 1, "us")).drop(["id"]))],
        SchemaError,
        "required column 'id'",
    ),
    "another table's file": (
        lambda wh, t: _other_table(wh).write_data_files(_rows(1, 1)),
        ValidationError,
        "was written for table",
    ),
    "no files": (lambda wh, t: [], ValidationError, "no files"),
    "not a list": (lambda wh, t: "data/x.parquet", ValidationError, "takes a list of files"),
}


def _junk(wh: Any) -> str:
    wh.backend.write("t/data/junk.parquet", b"not parquet")
    return "data/junk.parquet"


def _other_table(wh: Any) -> Table:
    return create_table("other", SCHEMA, warehouse=wh.uri, partition_spec=["region"], **wh.options)


@BOTH
def test_bad_files_are_refused_naming_the_file_and_leave_the_table_unchanged(
    warehouse: Any,
) -> None:
    table = _table(warehouse)
    for case in sorted(CASES):
        make, error, message = CASES[case]
        files = make(warehouse, table)
        before = warehouse.snapshot_of_storage()
        version = table.version
        with pytest.raises(error, match=message):
            table.add_files(files)
        assert warehouse.snapshot_of_storage() == before, case
        assert table.version == version and table.count() == 10, case
