"""Tables by name: list_tables, table_exists, drop_table (purge or not) and
create_table(exist_ok=...), on a local directory and on S3 servers."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import datashard
from datashard import create_table, drop_table, list_tables, load_table, table_exists
from datashard.errors import SchemaError, TableNotFoundError, ValidationError

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def _rows(n: int) -> pa.Table:
    return pa.table({"id": list(range(n)), "name": [f"r{i}" for i in range(n)]}, schema=SCHEMA)


def test_list_tables_names_every_table_and_nothing_else(warehouse: Any) -> None:
    wh = warehouse
    for name in ["events", "users", "events-2024"]:
        create_table(name, SCHEMA, warehouse=wh.uri, **wh.options).append(_rows(3))
    wh.backend.write("notes/readme.txt", b"not a table")
    wh.backend.write("loose.parquet", b"not a table either")
    assert list_tables(wh.uri, **wh.options) == ["events", "events-2024", "users"]
    assert list_tables(wh.uri, prefix="events", **wh.options) == ["events", "events-2024"]
    assert table_exists("users", wh.uri, **wh.options)
    assert not table_exists("notes", wh.uri, **wh.options)
    assert not table_exists("nope", wh.uri, **wh.options)


def test_list_tables_reads_no_object(local_wh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["a", "b"]:
        create_table(name, SCHEMA, warehouse=local_wh.uri).append(_rows(2))
    backend = local_wh.backend
    reads: list[str] = []
    original = type(backend).read

    def counting(self: Any, key: str) -> bytes:
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(type(backend), "read", counting)
    assert list_tables(backend) == ["a", "b"]
    assert table_exists("a", backend)
    assert reads == []


def test_front_door_exports_the_catalog_functions() -> None:
    assert datashard.list_tables is list_tables
    assert datashard.table_exists is table_exists


def test_table_exists_rejects_a_bad_name(local_wh: Any) -> None:
    with pytest.raises(ValidationError, match="invalid table name '../x'"):
        table_exists("../x", local_wh.uri)


def test_drop_table_removes_the_table_and_a_second_drop_says_not_found(warehouse: Any) -> None:
    wh = warehouse
    create_table("t", SCHEMA, warehouse=wh.uri, **wh.options).append(_rows(5))
    create_table("keep", SCHEMA, warehouse=wh.uri, **wh.options).append(_rows(2))
    drop_table("t", wh.uri, **wh.options)
    assert [k for k in wh.keys() if k.startswith("t/")] == []
    assert list_tables(wh.uri, **wh.options) == ["keep"]
    assert load_table("keep", wh.uri, **wh.options).count() == 2
    with pytest.raises(TableNotFoundError, match="'t'"):
        drop_table("t", wh.uri, **wh.options)


def test_drop_after_a_crash_mid_drop_finishes_it(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    for _ in range(3):
        table.append(_rows(4))
    # what a crash right after the newest metadata version went leaves: data, manifests
    metadata = [k for k in local_wh.keys() if k.endswith(".metadata.json")]
    local_wh.backend.delete_many(metadata)
    assert not table_exists("t", local_wh.uri)
    assert local_wh.keys() != []
    drop_table("t", local_wh.uri)
    assert local_wh.keys() == []


def test_purge_also_deletes_referenced_files_outside_the_location(
    local_wh: Any, tmp_path: Any
) -> None:
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    # another engine's table in our warehouse, holding a file it added by absolute path
    root = local_wh.uri.removeprefix("file://")
    catalog = SqlCatalog("c", uri=f"sqlite:///{tmp_path}/c.db", warehouse=local_wh.uri)
    catalog.create_namespace("ns")
    other = catalog.create_table("ns.ev", schema=SCHEMA, location=f"{local_wh.uri}/ev")
    (tmp_path / "wh" / "shared").mkdir(parents=True)
    pq.write_table(_rows(3), f"{root}/shared/added.parquet")
    other.add_files([f"{local_wh.uri}/shared/added.parquet"])
    local_wh.backend.write("shared/unrelated.txt", b"x")
    assert load_table("ev", local_wh.uri).count() == 3

    drop_table("ev", local_wh.uri, purge=True)
    assert sorted(local_wh.keys()) == ["shared/unrelated.txt"]


def test_drop_without_purge_keeps_files_outside_the_location(local_wh: Any, tmp_path: Any) -> None:
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    root = local_wh.uri.removeprefix("file://")
    catalog = SqlCatalog("c", uri=f"sqlite:///{tmp_path}/c.db", warehouse=local_wh.uri)
    catalog.create_namespace("ns")
    other = catalog.create_table("ns.ev", schema=SCHEMA, location=f"{local_wh.uri}/ev")
    (tmp_path / "wh" / "shared").mkdir(parents=True)
    pq.write_table(_rows(3), f"{root}/shared/added.parquet")
    other.add_files([f"{local_wh.uri}/shared/added.parquet"])

    drop_table("ev", local_wh.uri)
    assert local_wh.keys() == ["shared/added.parquet"]
    assert list_tables(local_wh.uri) == []


def test_create_table_exist_ok_returns_the_existing_table(warehouse: Any) -> None:
    wh = warehouse
    first = create_table("t", SCHEMA, warehouse=wh.uri, **wh.options)
    first.append(_rows(3))
    again = create_table("t", SCHEMA, warehouse=wh.uri, exist_ok=True, **wh.options)
    assert again.count() == 3
    assert again.location == first.location
    before = wh.snapshot_of_storage()
    other = pa.schema([("id", pa.int64()), ("score", pa.float64())])
    with pytest.raises(SchemaError, match=r"'t' .*exists with another schema.*score"):
        create_table("t", other, warehouse=wh.uri, exist_ok=True, **wh.options)
    assert wh.snapshot_of_storage() == before
