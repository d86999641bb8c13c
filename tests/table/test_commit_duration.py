"""The commit duration bound (``commit.max-duration-ms``) and the orphan-cleanup grace period
that relies on it; and table properties set and removed after create.

Orphan cleanup deletes unreferenced files older than its grace period. A commit in flight has
written files nothing references yet, so cleanup is safe beside writers only while no commit
takes longer than the grace period: commits give up instead of landing later than
``commit.max-duration-ms`` after they started, and cleanup refuses a shorter grace.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import CommitTimeoutError, ConfigError, ValidationError
from datashard.testing.faultproxy import FaultProxy

from .conftest import Warehouse, s3_warehouse

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "batch", "type": "long", "required": True},
        {"id": 2, "name": "row", "type": "long", "required": True},
    ],
)
BOUND = "commit.max-duration-ms"


def _rows(batch: int, n: int = 3) -> list[dict[str, int]]:
    return [{"batch": batch, "row": r} for r in range(n)]


def _batches(table: Any) -> list[int]:
    return sorted(r["batch"] for r in table.to_arrow().to_pylist())


def test_a_commit_past_its_bound_gives_up_and_leaves_the_table_unchanged(
    local_wh: Warehouse,
) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties={BOUND: "1"})
    before = local_wh.snapshot_of_storage()
    # encoding and writing a data file takes longer than 1 ms
    with pytest.raises(CommitTimeoutError, match=r"commit\.max-duration-ms=1\b"):
        table.append_records(_rows(0))
    table.flush()
    assert local_wh.snapshot_of_storage() == before  # staged files deleted, no new version
    assert load_table("t", warehouse=local_wh.uri).current_snapshot() is None


def test_a_bound_lowered_by_a_concurrent_commit_applies_after_the_lost_race(
    local_wh: Warehouse,
) -> None:
    create_table("t", SCHEMA, warehouse=local_wh.uri)
    stale = load_table("t", warehouse=local_wh.uri)
    other = load_table("t", warehouse=local_wh.uri)
    other.set_properties({BOUND: 1})  # v2: the stale writer's create of v2 loses
    before = local_wh.snapshot_of_storage()
    with pytest.raises(CommitTimeoutError, match=r"commit\.max-duration-ms=1\b"):
        stale.append_records(_rows(0))
    stale.flush()
    assert local_wh.snapshot_of_storage() == before
    other.remove_properties(BOUND)
    stale.refresh()
    stale.append_records(_rows(1))  # the default bound (one day) again
    assert _batches(load_table("t", warehouse=local_wh.uri)) == [1, 1, 1]


def test_orphan_cleanup_refuses_a_grace_shorter_than_the_commit_bound(
    local_wh: Warehouse,
) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append_records(_rows(0))
    table.flush()
    orphan = "t/data/orphan.parquet"
    local_wh.backend.write(orphan, b"not referenced")
    time.sleep(1.1)
    before = local_wh.snapshot_of_storage()
    for older_than in (
        dt.timedelta(0),
        dt.timedelta(hours=23),  # the default bound is one day
        dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1),
    ):
        with pytest.raises(ValidationError, match=r"older_than .*max-duration-ms=86400000"):
            table.remove_orphan_files(older_than=older_than)
    assert local_wh.snapshot_of_storage() == before  # nothing deleted
    table.set_properties({BOUND: "1000"})
    with pytest.raises(ValidationError, match=r"grace period of 0\.000 s, shorter"):
        table.remove_orphan_files(older_than=dt.timedelta(0))
    gone = table.remove_orphan_files(older_than=dt.timedelta(seconds=1))
    assert [table.backend.key_for(u) for u in gone] == [orphan]
    assert _batches(table) == [0, 0, 0]


@pytest.mark.parametrize("server", ["moto", "ceph"])
def test_orphan_cleanup_during_a_slow_commit_never_breaks_the_table(
    server: str, request: pytest.FixtureRequest
) -> None:
    """The failure this bound exists for: a commit stalls after writing its data file (its
    manifest-list write is held by a proxy), cleanup with a 2 s grace deletes that data file
    meanwhile, then the commit would land and name a missing file. With the bound of 2 s the
    commit gives up instead, and the table reads as before."""
    s3 = request.getfixturevalue(f"{server}_s3")
    wh = s3_warehouse(s3, request.getfixturevalue(f"{server}_bucket"))
    table = create_table("t", SCHEMA, warehouse=wh.uri, properties={BOUND: "2000"}, **wh.options)
    table.append_records(_rows(0))
    table.flush()
    removed: list[str] = []

    def cleanup(method: str, path: str) -> None:
        time.sleep(3.5)  # the writer's data file is older than the grace period now
        removed.extend(table.remove_orphan_files(older_than=dt.timedelta(seconds=2)))

    with FaultProxy(s3.endpoint_url) as proxy:
        writer = load_table("t", warehouse=wh.uri, **{**wh.options, "endpoint_url": proxy.url})
        proxy.call(cleanup, method="PUT", path=r"/metadata/snap-")
        with pytest.raises(CommitTimeoutError, match=r"commit\.max-duration-ms=2000"):
            writer.append_records(_rows(1))
        writer.flush()
    assert [u for u in removed if "/data/" in u], removed  # the stalled commit's data file
    fresh = load_table("t", warehouse=wh.uri, **wh.options)
    assert fresh.metadata_location == table.metadata_location  # no version was added
    assert _batches(fresh) == [0, 0, 0]
    theirs = StaticTable.from_metadata(fresh.metadata_location, properties=wh.pyiceberg_props)
    assert sorted(r["batch"] for r in theirs.scan().to_arrow().to_pylist()) == [0, 0, 0]


def test_properties_set_and_removed_after_create(local_wh: Warehouse) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.set_properties({"owner": "data-team", "write.parquet.row-group-limit": 1000})
    again = load_table("t", warehouse=local_wh.uri)
    assert again.properties["owner"] == "data-team"
    assert again.properties["write.parquet.row-group-limit"] == "1000"
    again.remove_properties("owner", "never-set")
    assert "owner" not in load_table("t", warehouse=local_wh.uri).properties
    theirs = StaticTable.from_metadata(load_table("t", warehouse=local_wh.uri).metadata_location)
    assert theirs.properties["write.parquet.row-group-limit"] == "1000"
    # both in one commit
    version = again.metadata_location
    again.update_properties({"owner": "ml-team"}, remove=["write.parquet.row-group-limit"])
    props = load_table("t", warehouse=local_wh.uri).properties
    assert props["owner"] == "ml-team" and "write.parquet.row-group-limit" not in props
    assert int(version.rsplit("/v", 1)[1].split(".")[0]) + 1 == int(
        again.metadata_location.rsplit("/v", 1)[1].split(".")[0]
    )


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda t: t.set_properties({BOUND: "0"}), ConfigError, r"commit\.max-duration-ms"),
        (lambda t: t.set_properties({BOUND: "soon"}), ConfigError, r"commit\.max-duration-ms"),
        (lambda t: t.set_properties({"x": True}), ValidationError, r"'x'.*string or an int"),
        (lambda t: t.set_properties({"x": 1.5}), ValidationError, r"'x'.*got float"),
        (lambda t: t.set_properties({"": "v"}), ValidationError, "non-empty string"),
        (lambda t: t.set_properties({"format-version": "1"}), ValidationError, "format-version"),
        (lambda t: t.set_properties([("a", "b")]), ValidationError, "mapping of keys"),
        (lambda t: t.remove_properties("datashard.commit-id"), ValidationError, "reserved"),
        (lambda t: t.remove_properties(7), ValidationError, "non-empty string, got 7"),
        (
            lambda t: t.update_properties({"owner": "x"}, remove=["owner"]),
            ValidationError,
            "'owner' is both set and removed",
        ),
    ],
)
def test_bad_properties_are_refused_with_the_table_unchanged(
    local_wh: Warehouse, call: Any, error: type[Exception], match: str
) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties={"owner": "me"})
    before = local_wh.snapshot_of_storage()
    with pytest.raises(error, match=match):
        call(table)
    assert local_wh.snapshot_of_storage() == before
