"""Superseded metadata versions are retired (overwritten by a small stub), never deleted: the
metadata stays small without any maintenance call, and a writer holding a version long retired
still commits on the newest one instead of re-creating an old version (a fork)."""

from __future__ import annotations

from typing import Any

import pytest
from pyiceberg.table import StaticTable

from datashard import Schema, create_table, load_table
from datashard.errors import ConfigError, SupersededVersionError
from datashard.table.versions import (
    STUB_MAX_BYTES,
    TablePaths,
    retire_superseded,
    version_of,
    write_hint,
)

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "batch", "type": "long", "required": True},
        {"id": 2, "name": "row", "type": "long", "required": True},
    ],
)
KEEP = 3


def _rows(batch: int) -> list[dict[str, int]]:
    return [{"batch": batch, "row": r} for r in range(2)]


def _sizes(wh: Any) -> dict[int, int]:
    out = {}
    for meta in wh.backend.list("t/metadata/"):
        n = version_of(meta.key)
        if n is not None:
            out[n] = meta.size
    return out


def _batches(table: Any) -> list[int]:
    return sorted({r["batch"] for r in table.to_arrow().to_pylist()})


def test_versions_out_of_the_metadata_log_are_retired_and_a_stale_writer_still_commits(
    warehouse: Any,
) -> None:
    props = {"write.metadata.previous-versions-max": str(KEEP)}
    table = create_table(
        "t", SCHEMA, warehouse=warehouse.uri, properties=props, **warehouse.options
    )
    stale = load_table("t", warehouse=warehouse.uri, **warehouse.options)  # holds v1
    for b in range(10):
        table.append_records(_rows(b))
    table.flush()
    sizes = _sizes(warehouse)
    newest = 11
    assert sorted(sizes) == list(range(1, newest + 1))  # every key still taken
    assert all(sizes[n] <= STUB_MAX_BYTES for n in range(1, newest - KEEP))
    assert all(sizes[n] > STUB_MAX_BYTES for n in range(newest - KEEP, newest + 1))
    # the metadata log names only whole versions, and other engines read the newest
    md = table.metadata
    assert [version_of(e.metadata_file) for e in md.metadata_log] == [8, 9, 10]
    theirs = StaticTable.from_metadata(
        table.metadata_location, properties=warehouse.pyiceberg_props
    )
    assert sorted({r["batch"] for r in theirs.scan().to_arrow().to_pylist()}) == list(range(10))
    # the writer on v1 loses the race for v2 (a stub), moves to v11 and commits v12
    snap = stale.append_records(_rows(99))
    assert stale.metadata_location.endswith("/v12.metadata.json")
    assert snap.parent_snapshot_id == md.current_snapshot_id
    fresh = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    assert _batches(fresh) == [*range(10), 99]
    assert fresh.count() == 22


def test_a_retired_version_opened_directly_says_superseded(local_wh: Any) -> None:
    props = {"write.metadata.previous-versions-max": "1"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    first = table.metadata_location
    for b in range(3):
        table.append_records(_rows(b))
    table.flush()
    with pytest.raises(SupersededVersionError, match=r"v1\.metadata\.json was superseded by v"):
        load_table(first)
    assert _batches(load_table(table.metadata_location)) == [0, 1, 2]  # the newest opens


def test_a_hint_naming_a_retired_version_still_loads_the_newest(local_wh: Any) -> None:
    props = {"write.metadata.previous-versions-max": "1"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for b in range(4):
        table.append_records(_rows(b))
    table.flush()
    write_hint(local_wh.backend, TablePaths("t"), 1)  # a hint write that landed very late
    again = load_table("t", warehouse=local_wh.uri)
    assert again.metadata_location.endswith("/v5.metadata.json")
    assert _batches(again) == [0, 1, 2, 3]


def test_a_sweep_retires_what_writers_left_whole_and_retiring_can_be_switched_off(
    local_wh: Any,
) -> None:
    props = {
        "write.metadata.previous-versions-max": "2",
        "write.metadata.delete-after-commit.enabled": "false",
    }
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for b in range(6):
        table.append_records(_rows(b))
    table.flush()
    assert all(size > STUB_MAX_BYTES for size in _sizes(local_wh).values())  # switched off
    retired = retire_superseded(local_wh.backend, TablePaths("t"), 7, 2, sweep=True)
    assert retired == [1, 2, 3, 4]
    sizes = _sizes(local_wh)
    assert [n for n in sorted(sizes) if sizes[n] <= STUB_MAX_BYTES] == [1, 2, 3, 4]
    assert _batches(load_table("t", warehouse=local_wh.uri)) == list(range(6))


def test_a_bad_retire_switch_is_refused(local_wh: Any) -> None:
    with pytest.raises(ConfigError, match="write.metadata.delete-after-commit.enabled"):
        create_table(
            "t",
            SCHEMA,
            warehouse=local_wh.uri,
            properties={"write.metadata.delete-after-commit.enabled": "yes"},
        )
    assert list(local_wh.backend.list("")) == []
