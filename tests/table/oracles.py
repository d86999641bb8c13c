"""Outside readers of a datashard table, used as oracles: DuckDB (its Iceberg extension reads
position and equality deletes) and PyIceberg (reads position deletes, refuses equality deletes).

Both read the metadata file the table object holds, so they see exactly the version datashard
just read or committed. Extensions are LOADed from the files inside the pip packages (no
network). One DuckDB connection per storage endpoint is kept for the session.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import duckdb
import duckdb_extension_avro
import duckdb_extension_httpfs
import duckdb_extension_iceberg
from pyiceberg.table import StaticTable

if TYPE_CHECKING:
    from datashard.table import Table


def _extension(module: Any, name: str) -> str:
    found = glob.glob(
        os.path.join(
            os.path.dirname(module.__file__), "extensions", "*", f"{name}.duckdb_extension"
        )
    )
    if not found:
        raise RuntimeError(f"no {name}.duckdb_extension inside {module.__file__}")
    return found[0]


@functools.cache
def _connection(endpoint: str | None, key: str, secret: str, region: str) -> Any:
    con = duckdb.connect()
    con.execute(f"LOAD '{_extension(duckdb_extension_avro, 'avro')}'")
    con.execute(f"LOAD '{_extension(duckdb_extension_iceberg, 'iceberg')}'")
    if endpoint is not None:
        con.execute(f"LOAD '{_extension(duckdb_extension_httpfs, 'httpfs')}'")
        url = urlparse(endpoint)
        con.execute(
            "CREATE SECRET (TYPE S3, KEY_ID ?, SECRET ?, ENDPOINT ?, URL_STYLE 'path', "
            "USE_SSL ?, REGION ?)",
            [key, secret, url.netloc, url.scheme == "https", region],
        )
    return con


def duckdb_connection(wh: Any) -> Any:
    """A DuckDB connection with the Iceberg extension that can read the warehouse ``wh``."""
    opts = wh.options
    if not opts:
        return _connection(None, "", "", "")
    return _connection(
        opts["endpoint_url"], opts["access_key_id"], opts["secret_access_key"], opts["region"]
    )


def _location(table: Table) -> str:
    loc = table.metadata_location
    return loc.removeprefix("file://")


def duckdb_rows(
    table: Table,
    wh: Any,
    select: str = "*",
    where: str | None = None,
    snapshot_id: int | None = None,
) -> list[Any]:
    """The rows DuckDB reads from the version ``table`` holds (or its snapshot
    ``snapshot_id``), as tuples."""
    at = "" if snapshot_id is None else f", snapshot_from_id={int(snapshot_id)}"
    sql = f"SELECT {select} FROM iceberg_scan('{_location(table)}'{at})"
    if where:
        sql += f" WHERE {where}"
    return list(duckdb_connection(wh).execute(sql).fetchall())


def duckdb_ids(
    table: Table, wh: Any, where: str | None = None, snapshot_id: int | None = None
) -> list[int]:
    """Column ``id`` as DuckDB reads it (with every delete file applied), sorted."""
    return sorted(r[0] for r in duckdb_rows(table, wh, "id", where, snapshot_id))


def duckdb_count(table: Table, wh: Any, where: str | None = None) -> int:
    """``count(*)`` as DuckDB computes it."""
    return int(duckdb_rows(table, wh, "count(*)", where)[0][0])


def pyiceberg_ids(
    table: Table, wh: Any, snapshot_id: int | None = None, row_filter: str | None = None
) -> list[int]:
    """Column ``id`` as PyIceberg reads it (position deletes applied; it raises on equality
    deletes), sorted."""
    static = StaticTable.from_metadata(table.metadata_location, properties=wh.pyiceberg_props)
    kwargs: dict[str, Any] = {"selected_fields": ("id",)}
    if snapshot_id is not None:
        kwargs["snapshot_id"] = snapshot_id
    if row_filter is not None:
        kwargs["row_filter"] = row_filter
    return sorted(static.scan(**kwargs).to_arrow().column("id").to_pylist())


_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("oracles_child", sys.argv[1])
oracles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oracles)
args = json.loads(sys.argv[2])
con = oracles._connection(*args["connection"])
rows = con.execute(args["sql"]).fetchall()
print(json.dumps(sorted(r[0] for r in rows)))
"""


def duckdb_ids_in_child(table: Table, wh: Any, timeout: float = 120) -> list[int] | None:
    """:func:`duckdb_ids` asked in a child process: ``None`` when DuckDB crashes there (some
    tables make DuckDB 1.5.5 segfault, which would end the test session)."""
    opts = wh.options
    connection = (
        [None, "", "", ""]
        if not opts
        else [
            opts["endpoint_url"],
            opts["access_key_id"],
            opts["secret_access_key"],
            opts["region"],
        ]
    )
    args = {
        "connection": connection,
        "sql": f"SELECT id FROM iceberg_scan('{_location(table)}')",
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, __file__, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONFAULTHANDLER": ""},
    )
    if done.returncode < 0:  # killed by a signal: DuckDB crashed
        return None
    if done.returncode != 0:
        raise RuntimeError(f"DuckDB child failed ({done.returncode}): {done.stderr[-2000:]}")
    return [int(i) for i in json.loads(done.stdout)]
