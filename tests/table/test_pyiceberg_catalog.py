"""PyIceberg through datashard's catalog: PyIceberg's tables are datashard tables, its commits
create ``v<N+1>`` with ``put_if_absent``, and PyIceberg and datashard writers share one table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.types import StringType

from datashard import create_table, load_table
from datashard.errors import ConfigError, UnsupportedFeatureError, ValidationError
from datashard.storage.config import open_backend
from datashard.table.versions import is_stub
from datashard.testing.faultproxy import FaultProxy

from . import oracles

IMPL = "datashard.pyiceberg_catalog.DatashardCatalog"
ROOT = Path(__file__).resolve().parents[2]
ROWS = pa.schema([("writer", pa.int64()), ("commit", pa.int64()), ("row", pa.int64())])
FIELDS = [
    {"id": 1, "name": "writer", "type": "long", "required": False},
    {"id": 2, "name": "commit", "type": "long", "required": False},
    {"id": 3, "name": "row", "type": "long", "required": False},
]


def _props(wh: Any) -> dict[str, str]:
    props = {"py-catalog-impl": IMPL, "warehouse": wh.uri, **wh.pyiceberg_props}
    if wh.kind == "ceph":  # pyarrow's S3 multipart upload gets HTTP 411 from Ceph RGW
        props["py-io-impl"] = "pyiceberg.io.fsspec.FsspecFileIO"
    return props


def _catalog(wh: Any, **extra: str) -> Catalog:
    return load_catalog("ds", **_props(wh), **extra)


def _batch(writer: int, commit: int, rows: int) -> pa.Table:
    return pa.table(
        {"writer": [writer] * rows, "commit": [commit] * rows, "row": list(range(rows))},
        schema=ROWS,
    )


def _ids(table: pa.Table) -> list[tuple[int, int, int]]:
    d = table.select(["writer", "commit", "row"]).to_pydict()
    return sorted(zip(d["writer"], d["commit"], d["row"], strict=True))


def test_pyiceberg_creates_appends_and_evolves_a_table_datashard_reads(warehouse: Any) -> None:
    cat = _catalog(warehouse)
    t = cat.create_table("default.events", ROWS)
    t.append(_batch(0, 0, 3))
    with t.update_schema() as u:
        u.add_column("note", StringType())
    t.append(pa.table({"writer": [1], "commit": [0], "row": [0], "note": ["hi"]}))

    # the commits are datashard versions: v1 (create), v2, v3, v4, and the hint names the last
    keys = warehouse.keys()
    versions = sorted(k for k in keys if k.startswith("events/metadata/v") and k.endswith("json"))
    assert versions == [f"events/metadata/v{n}.metadata.json" for n in (1, 2, 3, 4)]
    assert warehouse.backend.read("events/metadata/version-hint.text") == b"4"
    assert t.metadata_location.endswith("/events/metadata/v4.metadata.json")

    # datashard reads what PyIceberg wrote: schema, snapshot summaries, rows
    ds = load_table("events", warehouse.uri, **warehouse.options)
    assert ds.version == 4
    assert [f.name for f in ds.schema().fields] == ["writer", "commit", "row", "note"]
    snap = ds.current_snapshot()
    assert snap is not None and snap.summary["added-records"] == "1"
    got = ds.to_arrow().to_pydict()
    assert sorted(zip(got["writer"], got["row"], got["note"], strict=True)) == [
        (0, 0, None),
        (0, 1, None),
        (0, 2, None),
        (1, 0, "hi"),
    ]
    # and PyIceberg, through a fresh catalog, sees the same
    again = _catalog(warehouse).load_table("events").scan().to_arrow()
    assert again.num_rows == 4 and again.schema.names == ["writer", "commit", "row", "note"]


def test_datashard_and_pyiceberg_appends_interleave(local_wh: Any) -> None:
    ds = create_table("mixed", FIELDS, local_wh.uri)
    cat = _catalog(local_wh)
    pt = cat.load_table("mixed")
    pt.append(_batch(1, 0, 2))
    ds.refresh()
    ds.append(_batch(2, 0, 2))
    pt.append(_batch(1, 1, 2))  # pt is stale: it has not seen datashard's append
    ds.append(_batch(2, 1, 2))  # ds is stale: it has not seen PyIceberg's second append
    expected = sorted((w, c, r) for w in (1, 2) for c in (0, 1) for r in (0, 1))
    assert _ids(load_table("mixed", local_wh.uri).to_arrow()) == expected
    fresh = cat.load_table("mixed")
    assert _ids(fresh.scan().to_arrow()) == expected
    # four snapshots in one line of history, whoever wrote them
    snaps = fresh.metadata.snapshots
    assert len(snaps) == 4
    assert [s.parent_snapshot_id for s in snaps[1:]] == [s.snapshot_id for s in snaps[:-1]]


def test_a_stale_schema_change_fails_and_succeeds_after_refresh(local_wh: Any) -> None:
    create_table("evolve", FIELDS, local_wh.uri)
    cat = _catalog(local_wh)
    stale = cat.load_table("evolve")
    with load_table("evolve", local_wh.uri).update_schema() as u:
        u.add_column("a", "double")
    version = load_table("evolve", local_wh.uri).version
    with pytest.raises(CommitFailedException), stale.update_schema() as su:
        su.add_column("b", StringType())
    assert load_table("evolve", local_wh.uri).version == version  # nothing committed
    stale.refresh()
    with stale.update_schema() as su:
        su.add_column("b", StringType())
    names = [f.name for f in load_table("evolve", local_wh.uri).schema().fields]
    assert names == ["writer", "commit", "row", "a", "b"]
    # a metadata-only change with no requirement on the schema lands on a stale object too
    stale2 = cat.load_table("evolve")
    load_table("evolve", local_wh.uri).append(_batch(0, 0, 1))
    with stale2.transaction() as tx:
        tx.set_properties({"owner": "pyiceberg"})
    fresh = load_table("evolve", local_wh.uri)
    assert fresh.properties["owner"] == "pyiceberg"
    assert fresh.count() == 1


def test_a_create_transaction_creates_the_table_with_its_rows_in_v1(local_wh: Any) -> None:
    cat = _catalog(local_wh)
    with cat.create_table_transaction("made", ROWS) as tx:
        tx.append(_batch(0, 0, 2))
    ds = load_table("made", local_wh.uri)
    assert ds.version == 1 and _ids(ds.to_arrow()) == [(0, 0, 0), (0, 0, 1)]
    with pytest.raises(TableAlreadyExistsError, match="'made' already exists"):
        with cat.create_table_transaction("made", ROWS) as tx:
            tx.append(_batch(9, 9, 2))
    again = load_table("made", local_wh.uri)
    assert again.version == 1 and _ids(again.to_arrow()) == [(0, 0, 0), (0, 0, 1)]


def test_pyiceberg_commits_retire_old_versions_as_datashard_does(local_wh: Any) -> None:
    cat = _catalog(local_wh)
    t = cat.create_table("aged", ROWS, properties={"write.metadata.previous-versions-max": "2"})
    stale = cat.load_table("aged")
    for c in range(5):
        t.append(_batch(0, c, 1))
    body = {n: local_wh.backend.read(f"aged/metadata/v{n}.metadata.json") for n in range(1, 7)}
    # the newest and the 2 its log keeps stay whole; older ones are stubs (their keys taken)
    assert [is_stub(body[n]) for n in range(1, 7)] == [True, True, True, False, False, False]
    stale.append(_batch(1, 0, 1))  # from v1's object: lands on v6 as v7
    assert load_table("aged", local_wh.uri).version == 7
    assert len(_ids(cat.load_table("aged").scan().to_arrow())) == 6


def test_duckdb_reads_what_pyiceberg_and_datashard_wrote(local_wh: Any) -> None:
    """docs/beyond.md: DuckDB's ``iceberg_scan`` of the table directory (it follows
    ``version-hint.text``) or of one ``v<N>.metadata.json``."""
    cat = _catalog(local_wh)
    cat.create_table("events", ROWS).append(_batch(1, 0, 3))
    mine = load_table("events", local_wh.uri)
    mine.append(_batch(2, 0, 2))
    mine.flush()  # the hint is written in the background; the directory form follows it
    con = oracles.duckdb_connection(local_wh)
    directory = local_wh.backend.uri_for("events").removeprefix("file://")
    expected = [(1, 0, r) for r in range(3)] + [(2, 0, r) for r in range(2)]
    for source in (directory, f"{directory}/metadata/v3.metadata.json"):
        rows = con.execute(f"SELECT writer, commit, row FROM iceberg_scan('{source}')").fetchall()
        assert sorted(rows) == expected, source


# --------------------------------------------------------------------------------------------
# many processes, one table

_WORKER = r"""
import json, sys, time
kind, cfg = sys.argv[1], json.loads(sys.argv[2])
import pyarrow as pa
schema = pa.schema([("writer", pa.int64()), ("commit", pa.int64()), ("row", pa.int64())])
acked = []
deadline = time.monotonic() + cfg["seconds"]
if kind == "pyiceberg":
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import CommitFailedException
    table = load_catalog("ds", **cfg["props"]).load_table("shared")
    for c in range(cfg["commits"]):
        batch = pa.table({"writer": [cfg["writer"]] * cfg["rows"], "commit": [c] * cfg["rows"],
                          "row": list(range(cfg["rows"]))}, schema=schema)
        while time.monotonic() < deadline:
            try:
                table.append(batch)
            except CommitFailedException:  # did not land: PyIceberg deleted its files
                table.refresh()
                continue
            acked.append(c)
            break
else:
    from datashard import load_table
    table = load_table("shared", cfg["uri"], **cfg["options"])
    for c in range(cfg["commits"]):
        if time.monotonic() >= deadline:
            break
        table.append_records([{"writer": cfg["writer"], "commit": c, "row": r}
                              for r in range(cfg["rows"])])
        acked.append(c)
    table.flush()
print(json.dumps(acked))
"""

WRITERS, COMMITS, ROWS_PER = 4, 4, 5


@pytest.mark.parametrize("kind", ["local", "ceph"])
def test_pyiceberg_and_datashard_processes_append_every_row_once(
    kind: str, request: pytest.FixtureRequest
) -> None:
    wh = request.getfixturevalue("local_wh" if kind == "local" else "ceph_wh")
    # PyIceberg's transaction and datashard read the same retry properties
    create_table(
        "shared",
        FIELDS,
        wh.uri,
        properties={
            "commit.retry.num-retries": "40",
            "commit.retry.min-wait-ms": "10",
            "commit.retry.max-wait-ms": "200",
        },
        **wh.options,
    )
    props = _props(wh)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for w in range(2 * WRITERS):
        kind_w = "pyiceberg" if w % 2 == 0 else "datashard"
        cfg = {
            "writer": w,
            "commits": COMMITS,
            "rows": ROWS_PER,
            "seconds": 150,
            "props": props,
            "uri": wh.uri,
            "options": wh.options,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, kind_w, json.dumps(cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=ROOT,
            )
        )
    acked: dict[int, list[int]] = {}
    for w, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err.decode()[-3000:]
        acked[w] = json.loads(out.decode().strip().splitlines()[-1])
    assert all(acked[w] == list(range(COMMITS)) for w in acked), acked
    expected = sorted((w, c, r) for w in acked for c in acked[w] for r in range(ROWS_PER))
    assert _ids(load_table("shared", wh.uri, **wh.options).to_arrow()) == expected
    assert _ids(_catalog(wh).load_table("shared").scan().to_arrow()) == expected


# --------------------------------------------------------------------------------------------
# unknown outcomes


def test_a_commit_whose_response_was_lost_lands_once(moto_s3: Any, moto_bucket: str) -> None:
    with FaultProxy(moto_s3.endpoint_url) as proxy:
        uri = f"s3://{moto_bucket}/lost"
        props = {
            "py-catalog-impl": IMPL,
            "warehouse": uri,
            "s3.endpoint": proxy.url,
            "s3.access-key-id": moto_s3.access_key_id,
            "s3.secret-access-key": moto_s3.secret_access_key,
            "s3.region": moto_s3.region,
            "s3.force-virtual-addressing": "false",
            "datashard.retry_attempts": "1",  # the backend does not retry: the catalog resolves
        }
        cat = load_catalog("ds", **props)
        proxy.drop_response(1, method="PUT", path=r"metadata/v1\.metadata\.json")
        t = cat.create_table("events", ROWS)  # created, its response lost: read back, a win
        # the create of v2 lands, its response is lost: read back, the same bytes: a win
        proxy.drop_response(1, method="PUT", path=r"metadata/v2\.metadata\.json")
        t.append(_batch(0, 0, 2))
        assert proxy.injected["drop_response"] == 2
        # the create of v3 is refused before it reaches the server: absent, sent again
        proxy.fail(1, method="PUT", path=r"metadata/v3\.metadata\.json")
        t.append(_batch(0, 1, 2))
        assert proxy.injected["fail"] == 1
        # a schema change (no snapshot for PyIceberg to look for) whose response was lost
        proxy.drop_response(1, method="PUT", path=r"metadata/v4\.metadata\.json")
        with t.update_schema() as u:
            u.add_column("note", StringType())
        assert proxy.injected["drop_response"] == 3
    backend = open_backend(uri, **_s3_options(moto_s3))
    keys = [m.key for m in backend.list("events/metadata/v") if m.key.endswith("json")]
    assert keys == [f"events/metadata/v{n}.metadata.json" for n in (1, 2, 3, 4)]
    ds = load_table("events", backend)
    assert [f.name for f in ds.schema().fields] == ["writer", "commit", "row", "note"]
    assert len(ds.snapshots()) == 2
    assert _ids(ds.to_arrow()) == [(0, c, r) for c in (0, 1) for r in (0, 1)]


def _s3_options(server: Any) -> dict[str, Any]:
    return {
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
    }


# --------------------------------------------------------------------------------------------
# names, namespaces, bad input


def test_one_namespace_lists_every_table_of_the_warehouse(local_wh: Any) -> None:
    create_table("by-datashard", FIELDS, local_wh.uri)
    cat = _catalog(local_wh)
    cat.create_table(("default", "by.pyiceberg"), ROWS)
    # another writer's naming, no v<N>: not a table this catalog loads or lists
    foreign = "legacy/metadata/00000-0b6e3c1e-4b7e-4a8e-9a51-7d2a8f0c1d2e.metadata.json"
    local_wh.backend.write(foreign, b"{}")
    assert cat.list_namespaces() == [("default",)]
    assert cat.list_namespaces("default") == []
    assert cat.list_tables("default") == [("default", "by-datashard"), ("default", "by.pyiceberg")]
    assert cat.table_exists("by-datashard") and cat.table_exists("default.by-datashard")
    assert not cat.table_exists("missing")
    assert cat.load_namespace_properties("default") == {"location": local_wh.backend.root_uri}
    with pytest.raises(NoSuchNamespaceError, match="'other'.*one namespace, 'default'"):
        cat.list_tables("other")
    with pytest.raises(NoSuchNamespaceError, match="'other'"):
        cat.create_table("other.events", ROWS)
    with pytest.raises(NoSuchTableError, match="'other'"):
        cat.load_table("other.events")
    with pytest.raises(NoSuchTableError, match="no table 'missing'"):
        cat.load_table("missing")
    with pytest.raises(NamespaceAlreadyExistsError):
        cat.create_namespace("default")
    with pytest.raises(UnsupportedFeatureError, match="one namespace"):
        cat.create_namespace("other")
    with pytest.raises(UnsupportedFeatureError, match="renaming is not supported"):
        cat.rename_table("by-datashard", "renamed")
    cat.drop_table(("default", "by.pyiceberg"))
    assert cat.list_tables("default") == [("default", "by-datashard")]
    with pytest.raises(NoSuchTableError):
        cat.drop_table(("default", "by.pyiceberg"))


def test_bad_input_is_named_and_changes_nothing(local_wh: Any) -> None:
    cat = _catalog(local_wh)
    cat.create_table("events", ROWS)
    before = local_wh.snapshot_of_storage()
    with pytest.raises(TableAlreadyExistsError, match="'events' already exists"):
        cat.create_table("events", ROWS)
    with pytest.raises(ValidationError, match="invalid table name 'a/b'"):
        cat.create_table("default.a/b", ROWS)
    with pytest.raises(ValidationError, match="lives at <warehouse>/<name>"):
        cat.create_table("elsewhere", ROWS, location="file:///tmp/elsewhere")
    with pytest.raises(ConfigError, match="commit.retry.num-retries"):
        cat.create_table("badprop", ROWS, properties={"commit.retry.num-retries": "lots"})
    with pytest.raises(UnsupportedFeatureError, match="format-version"):
        cat.create_table("v1", ROWS, properties={"format-version": "1"})
    assert local_wh.snapshot_of_storage() == before


def test_bad_catalog_properties_are_named_without_secrets(tmp_path: Path) -> None:
    base = {"py-catalog-impl": IMPL}
    with pytest.raises(ConfigError, match="'warehouse' is required"):
        load_catalog("ds", **base)
    with pytest.raises(ConfigError, match="no_such_option"):
        load_catalog(
            "ds", **base, warehouse=f"file://{tmp_path}", **{"datashard.no_such_option": "1"}
        )
    secret = "s3cr3t-never-shown"
    s3 = {
        "warehouse": "s3://bucket/wh",
        "s3.endpoint": "http://127.0.0.1:9",
        "s3.access-key-id": "AKIDEXAMPLE",
        "s3.secret-access-key": secret,
    }
    with pytest.raises(ConfigError, match="s3.force-virtual-addressing='maybe'") as bad:
        load_catalog("ds", **base, **s3, **{"s3.force-virtual-addressing": "maybe"})
    assert secret not in str(bad.value)
    with pytest.raises(ConfigError, match="path_style") as bad:
        load_catalog("ds", **base, **s3, **{"datashard.path_style": "sometimes"})
    assert secret not in str(bad.value)
    cat = load_catalog("ds", **base, **s3)
    assert secret not in repr(cat) and "s3://bucket/wh" in repr(cat)
    with pytest.raises(ConfigError):
        load_catalog("ds", **base, warehouse="ftp://host/wh")
