"""Iceberg format version 3 tables written by datashard: row lineage assigned exactly as the
spec says (dense, unique ``_row_id`` from ``next-row-id``), kept by every rewrite, and
deletion vectors for merge-on-read deletes, read the same by datashard, DuckDB's Iceberg
reader (rows and row-lineage columns) and PyIceberg 0.12 (rows; it does not expose lineage),
on a local disk and on Ceph."""

from __future__ import annotations

import io
import multiprocessing
import struct
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest
from pyroaring import BitMap64

from datashard import Schema, create_table, load_table
from datashard.errors import (
    CommitConflictError,
    SchemaError,
    UnsupportedFeatureError,
    ValidationError,
)
from datashard.iceberg.expressions import col
from datashard.iceberg.manifest import MANIFEST_DELETES
from datashard.iceberg.puffin import (
    POS_FIELD_ID,
    deletion_vector,
    deletion_vector_blob,
    deletion_vector_positions,
    footer_length,
    parse_footer,
    puffin_file,
)
from datashard.table.group import FOLDED
from datashard.table.manifests import manifest_entries, read_manifest_files
from datashard.table.versions import key_for_uri
from datashard.testing.writers import append_worker

from . import oracles

BOTH = pytest.mark.parametrize("warehouse", ["local", "ceph"], indirect=True)
SCHEMA = Schema(0, [{"id": 1, "name": "id", "type": "long", "required": True}])
V3 = {"format-version": "3"}
MOR = {**V3, "write.delete.mode": "merge-on-read"}
LINEAGE = ["id", "_row_id", "_last_updated_sequence_number"]


def _rows(ids: range | list[int]) -> pa.Table:
    return pa.table({"id": pa.array(list(ids), pa.int64())})


def _lineage(table: Any, snapshot_id: int | None = None) -> list[tuple[int, int, int]]:
    """(id, _row_id, _last_updated_sequence_number) of every row datashard reads, sorted."""
    scan = table.scan(columns=LINEAGE, snapshot_id=snapshot_id).to_arrow()
    return sorted(zip(*(scan.column(c).to_pylist() for c in LINEAGE), strict=True))


def _agree(table: Any, wh: Any) -> list[tuple[int, int, int]]:
    """The rows with their lineage, checked to be what DuckDB reads (rows and lineage) and
    PyIceberg reads (rows)."""
    ours = _lineage(table)
    assert sorted(oracles.duckdb_rows(table, wh, ", ".join(LINEAGE))) == ours
    assert oracles.pyiceberg_ids(table, wh) == [r[0] for r in ours]
    assert table.count() == len(ours)
    return ours


def _delete_entries(table: Any) -> list[Any]:
    """The live entries of the current snapshot's delete manifests."""
    snap = table.current_snapshot()
    return [
        e
        for m in read_manifest_files(table.backend, snap)
        if m.content == MANIFEST_DELETES
        for e in manifest_entries(table.backend, m)
        if e.is_live
    ]


# --------------------------------------------------------------------------------------------
# create, upgrade, refuse


def test_a_v3_table_is_created_with_next_row_id_zero_and_v3_types(local_wh: Any) -> None:
    schema = Schema(
        0,
        [
            {"id": 1, "name": "id", "type": "long", "required": True},
            {"id": 2, "name": "ts", "type": "timestamp_ns", "required": False},
        ],
    )
    table = create_table("t", schema, warehouse=local_wh.uri, properties={"format-version": 3})
    assert (table.metadata.format_version, table.metadata.next_row_id) == (3, 0)
    assert "format-version" not in table.properties
    ns = [1_577_836_800_000_000_001, 1_577_836_800_000_000_002]
    table.append(pa.table({"id": [1, 2], "ts": pa.array(ns, pa.timestamp("ns"))}))
    got = load_table("t", warehouse=local_wh.uri).to_arrow()
    assert got.column("ts").cast(pa.int64()).to_pylist() == ns  # nanoseconds kept
    assert oracles.duckdb_ids(table, local_wh) == [1, 2]
    with pytest.raises(SchemaError, match="ts: timestamp_ns"):
        create_table("v2", schema, warehouse=local_wh.uri)
    # the other v3 types are read, not written: refused by name, before anything is written
    stored = local_wh.snapshot_of_storage()
    for kind in ("unknown", "geometry", "variant"):
        bad = Schema(0, [{"id": 1, "name": "c", "type": kind, "required": False}])
        with pytest.raises(UnsupportedFeatureError, match=f"c: {kind}"):
            create_table("bad", bad, warehouse=local_wh.uri, properties=V3)
        if kind != "variant":  # not a type add_column takes
            with pytest.raises(UnsupportedFeatureError, match=f"x: {kind}"):
                table.update_schema().add_column("x", kind).commit()
    assert local_wh.snapshot_of_storage() == stored


@pytest.mark.parametrize("bad", ["4", "x", "3.0", ""])
def test_a_bad_format_version_at_create_names_the_property(local_wh: Any, bad: str) -> None:
    with pytest.raises(ValidationError, match=f"'format-version' must be one of 2, 3.*{bad!r}"):
        create_table("t", SCHEMA, warehouse=local_wh.uri, properties={"format-version": bad})
    assert local_wh.keys() == []  # no table created


def test_a_v2_table_upgrades_to_v3_and_never_back(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    table.append(_rows(range(3)))
    before = table.current_snapshot()
    table.update_properties({"format-version": "3"})
    again = load_table("t", warehouse=local_wh.uri)
    assert (again.metadata.format_version, again.metadata.next_row_id) == (3, 0)
    assert "format-version" not in again.properties
    # rows of snapshots from before the upgrade have no row ids
    assert [r[1] for r in _lineage(again)] == [None, None, None]
    stored = local_wh.snapshot_of_storage()
    for lower, error in (("2", "cannot be lowered to 2"), ("4", "must be one of")):
        with pytest.raises(ValidationError, match=f"'format-version'.*{error}"):
            again.update_properties({"format-version": lower})
    with pytest.raises(ValidationError, match="reserved"):
        again.remove_properties("format-version")
    assert local_wh.snapshot_of_storage() == stored  # the table is unchanged
    # the first snapshot after the upgrade assigns ids to the existing files too
    again.append(_rows(range(3, 5)))
    rows = _agree(again, local_wh)
    assert sorted(r[1] for r in rows) == [0, 1, 2, 3, 4]
    assert again.metadata.next_row_id == 5
    assert _lineage(again, before.snapshot_id) == [(i, None, 1) for i in range(3)]


# --------------------------------------------------------------------------------------------
# appends


@BOTH
def test_appends_assign_dense_unique_row_ids_every_reader_sees(warehouse: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, properties=V3, **warehouse.options)
    table.append(_rows(range(0, 300)))
    table.append_records([{"id": i} for i in range(300, 350)])
    rows = _agree(table, warehouse)
    assert rows == [(i, i, 1 if i < 300 else 2) for i in range(350)]
    md = load_table("t", warehouse=warehouse.uri, **warehouse.options).metadata
    assert md.next_row_id == 350
    assert [(s.first_row_id, s.added_rows) for s in md.snapshots] == [(0, 300), (300, 50)]
    # time travel: the first snapshot's rows, with the ids they had then
    first = md.snapshots[0].snapshot_id
    assert _lineage(table, first) == [(i, i, 1) for i in range(300)]


def test_manifests_and_lists_are_written_as_v3(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=V3)
    table.append(_rows(range(10)))
    table.append(_rows(range(10, 15)))
    snap = table.current_snapshot()
    data = table.backend.read(key_for_uri(table.backend, snap.manifest_list))
    reader = fastavro.reader(io.BytesIO(data))
    listed = list(reader)
    assert reader.metadata["format-version"] == "3"
    assert reader.metadata["first-row-id"] == "10"
    assert [m["first_row_id"] for m in listed] == [10, 0]  # the new manifest first
    manifest = table.backend.read(key_for_uri(table.backend, listed[0]["manifest_path"]))
    reader = fastavro.reader(io.BytesIO(manifest))
    entries = list(reader)
    assert reader.metadata["format-version"] == "3"
    assert [e["data_file"]["first_row_id"] for e in entries] == [None]  # inherited on read


def test_a_merged_manifest_keeps_every_rows_id(local_wh: Any) -> None:
    props = {**V3, "commit.manifest.min-count-to-merge": "3"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for i in range(7):
        table.append(_rows(range(i * 10, i * 10 + 10)))
    snap = table.current_snapshot()
    assert len(read_manifest_files(table.backend, snap)) < 7  # manifests were merged
    assert _agree(table, local_wh) == [(i, i, i // 10 + 1) for i in range(70)]
    assert table.metadata.next_row_id == 70  # merges hand out no new ids


def test_a_writer_that_lost_a_race_takes_ids_from_the_new_base(local_wh: Any) -> None:
    create_table("t", SCHEMA, warehouse=local_wh.uri, properties=V3)
    a = load_table("t", warehouse=local_wh.uri)
    b = load_table("t", warehouse=local_wh.uri)  # same base as a
    a.append(_rows(range(0, 4)))
    b.append(_rows(range(4, 10)))  # loses the race for v2, retries on a's version
    table = load_table("t", warehouse=local_wh.uri)
    assert [(s.first_row_id, s.added_rows) for s in table.metadata.snapshots] == [(0, 4), (4, 6)]
    assert [r[1] for r in _agree(table, local_wh)] == list(range(10))


WRITERS, COMMITS, ROWS = 4, 5, 10
LINEAGE_SCHEMA = Schema(
    0,
    [
        {"id": 1, "name": "writer", "type": "int", "required": True},
        {"id": 2, "name": "commit", "type": "int", "required": True},
        {"id": 3, "name": "row", "type": "int", "required": True},
    ],
)


@BOTH
@pytest.mark.parametrize("group", [False, True], ids=["plain", "group-commit"])
def test_processes_appending_at_once_get_disjoint_row_ids(
    warehouse: Any, group: bool, tmp_path: Path
) -> None:
    """With group commit, the appends a snapshot folds in get their row ids from it."""
    props = {**V3, "commit.retry.num-retries": "100", "commit.group.enabled": str(group).lower()}
    create_table(
        "t", LINEAGE_SCHEMA, warehouse=warehouse.uri, properties=props, **warehouse.options
    )
    # group commit folds appends in under sustained contention only
    writers, commits = (2 * WRITERS, 2 * COMMITS) if group else (WRITERS, COMMITS)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(writers, mp_context=ctx) as pool:
        futures = [
            pool.submit(
                append_worker,
                *(warehouse.uri, warehouse.options, "t", w, commits, ROWS),
                gate=(str(tmp_path), writers),
            )
            for w in range(writers)
        ]
        for f in futures:
            f.result(timeout=600)
    table = load_table("t", warehouse=warehouse.uri, **warehouse.options)
    got = table.scan(columns=["writer", "commit", "row", "_row_id"]).to_arrow()
    total = writers * commits * ROWS
    columns = [got.column(c).to_pylist() for c in ("writer", "commit", "row")]
    keys = Counter(zip(*columns, strict=True))
    assert len(keys) == total and max(keys.values()) == 1  # every row exactly once
    assert sorted(got.column("_row_id").to_pylist()) == list(range(total))  # none twice
    assert table.metadata.next_row_id == total
    duck = oracles.duckdb_rows(table, warehouse, "_row_id")
    assert sorted(r[0] for r in duck) == list(range(total))
    folding = [s for s in table.snapshots() if FOLDED in s.summary]
    assert bool(folding) == group, "group commit folds appends in only when it is on"


# --------------------------------------------------------------------------------------------
# rewrites keep lineage


@BOTH
def test_rewrites_keep_the_ids_and_sequence_numbers_of_the_rows_they_carry(
    warehouse: Any,
) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, properties=V3, **warehouse.options)
    for i in range(4):
        table.append(_rows(range(i * 25, i * 25 + 25)))
    before = {r[0]: r for r in _lineage(table)}
    table.delete(col("id") == 30)  # copy-on-write: the file is rewritten without the row
    table.overwrite(_rows([1000]), col("id") == 60)
    table.compact()
    after = _agree(table, warehouse)
    assert table.current_snapshot().operation == "replace"
    assert table.current_snapshot().summary["total-data-files"] == "1"
    kept = [r for r in after if r[0] != 1000]
    assert kept == [before[i] for i in range(100) if i not in (30, 60)]
    new = next(r for r in after if r[0] == 1000)
    assert new[1] >= 100 and new[2] == 6  # a new row: a new id, the sequence number it came in
    ids = [r[1] for r in after]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("mode", ["copy-on-write", "merge-on-read"])
def test_an_upsert_keeps_the_ids_of_the_rows_it_does_not_replace(local_wh: Any, mode: str) -> None:
    schema = Schema(
        0,
        [
            {"id": 1, "name": "id", "type": "long", "required": True},
            {"id": 2, "name": "v", "type": "string", "required": False},
        ],
    )
    props = {**V3, "write.delete.mode": mode}
    table = create_table("t", schema, warehouse=local_wh.uri, properties=props)
    table.append(pa.table({"id": [1, 2, 3, 4], "v": ["a", "b", "c", "d"]}))
    table.upsert(pa.table({"id": [2, 5], "v": ["B", "e"]}), join_cols=["id"])
    table.upsert(pa.table({"id": [3], "v": ["C"]}), join_cols=["id"])
    rows = _agree(table, local_wh)
    assert rows[0] == (1, 0, 1) and rows[3] == (4, 3, 1)  # untouched rows keep id and seq
    assert rows[1][0] == 2 and rows[1][1] >= 4 and rows[1][2] == 2  # replaced: a new row
    assert rows[2][0] == 3 and rows[2][1] >= 4 and rows[2][2] == 3
    assert rows[4][0] == 5 and rows[4][2] == 2
    assert len({r[1] for r in rows}) == 5
    if mode == "merge-on-read":  # the second upsert merged the first one's vector
        assert [e.data_file.record_count for e in _delete_entries(table)] == [2]


# --------------------------------------------------------------------------------------------
# deletion vectors


@BOTH
def test_merge_on_read_deletes_write_one_merged_vector_per_data_file(warehouse: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=warehouse.uri, properties=MOR, **warehouse.options)
    table.append(_rows(range(0, 100)))
    table.append(_rows(range(100, 200)))
    before = {r[0]: r for r in _lineage(table)}
    table.delete(col("id").isin([3, 150]))
    table.delete(col("id").isin([5, 7]))  # a second vector for the first file: merged
    want = [i for i in range(200) if i not in (3, 5, 7, 150)]
    assert [r for r in _agree(table, warehouse)] == [before[i] for i in want]
    vectors = _delete_entries(table)
    assert all(e.data_file.file_format == "PUFFIN" for e in vectors)
    by_file = {e.data_file.referenced_data_file: e.data_file for e in vectors}
    assert len(by_file) == len(vectors) == 2  # one vector per data file, the old one retired
    assert sorted(d.record_count for d in by_file.values()) == [1, 3]
    assert not any(k.endswith("-deletes.parquet") for k in warehouse.keys())
    for d in by_file.values():  # each entry locates its blob, as the Puffin footer says
        assert d.content_offset is not None and d.content_size_in_bytes is not None
        data = table.backend.read(key_for_uri(table.backend, d.file_path))
        blob = data[d.content_offset : d.content_offset + d.content_size_in_bytes]
        assert len(deletion_vector_positions(blob, d.file_path)) == d.record_count
    assert table.current_snapshot().summary["removed-dvs"] == "1"
    table.compact()  # folds the vectors into the data and retires them
    assert _delete_entries(table) == []
    assert [r for r in _agree(table, warehouse)] == [before[i] for i in want]


def test_a_vector_replaces_the_position_deletes_of_an_upgraded_table(local_wh: Any) -> None:
    props = {"write.delete.mode": "merge-on-read"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    table.append(_rows(range(0, 50)))
    table.append(_rows(range(50, 100)))
    table.delete(col("id").isin([1, 60]))  # v2: one position delete file for both files
    table.update_properties({"format-version": "3"})
    table.delete(col("id") == 2)  # a vector for the first file holds 1 and 2
    want = [i for i in range(100) if i not in (1, 2, 60)]
    assert [r[0] for r in _agree(table, local_wh)] == want
    live = _delete_entries(table)
    vectors = [e.data_file for e in live if e.data_file.file_format == "PUFFIN"]
    assert [v.record_count for v in vectors] == [2]
    # the position delete file still holds the second file's delete: kept until replaced
    assert [e.data_file.file_format for e in live].count("PARQUET") == 1
    table.delete(col("id") == 61)
    assert [e.data_file.file_format for e in _delete_entries(table)] == ["PUFFIN", "PUFFIN"]
    assert [r[0] for r in _agree(table, local_wh)] == [i for i in want if i != 61]


def test_a_concurrent_vector_on_the_same_data_file_is_a_conflict(local_wh: Any) -> None:
    create_table("t", SCHEMA, warehouse=local_wh.uri, properties=MOR)
    load_table("t", warehouse=local_wh.uri).append(_rows(range(10)))
    a = load_table("t", warehouse=local_wh.uri)
    b = load_table("t", warehouse=local_wh.uri)
    a.delete(col("id") == 1)
    stored = local_wh.snapshot_of_storage()
    with pytest.raises(CommitConflictError, match="deletion vector"):
        b.delete(col("id") == 2)  # would be a second vector for the same data file
    assert local_wh.snapshot_of_storage() == stored  # nothing of b's delete landed or stayed
    fresh = load_table("t", warehouse=local_wh.uri)
    fresh.delete(col("id") == 2)  # on the newest version it merges with a's vector
    assert [r[0] for r in _agree(fresh, local_wh)] == [0, *range(3, 10)]


# --------------------------------------------------------------------------------------------
# the Puffin writer


POSITION_SETS = [
    [0],
    [1, 2, 3, 5, (1 << 33) + 7],
    list(range(10_000)),
    list(range(0, 200_000, 3)),
    [*range(70_000), (5 << 32) + 1],
    sorted(np.random.default_rng(1).choice(3_000_000, 20_000, replace=False).tolist()),
    list(range(0, 8194, 2)),
    [(1 << 31) - 1, 1 << 32, 1 << 40],
]


@pytest.mark.parametrize("positions", POSITION_SETS, ids=lambda p: f"{len(p)}-positions")
def test_deletion_vector_bytes_are_croarings_and_read_back(positions: list[int]) -> None:
    bitmap = BitMap64(positions)
    bitmap.run_optimize()
    body = bytes.fromhex("D1D33964") + bitmap.serialize()
    crc = struct.pack(">I", zlib.crc32(body))
    assert deletion_vector_blob(positions) == struct.pack(">I", len(body)) + body + crc
    assert deletion_vector_positions(deletion_vector_blob(positions), "x").tolist() == positions


def test_a_puffin_file_lists_its_vectors_in_the_footer() -> None:
    blobs = [deletion_vector("s3://b/t/a.parquet", [4, 1]), deletion_vector("s3://b/t/b", [9])]
    data, metas = puffin_file(blobs, {"created-by": "datashard"})
    assert data[:4] == b"PFA1" and data[-4:] == b"PFA1"
    footer = data[-footer_length(data[-12:], len(data), "f") :]
    assert parse_footer(footer, "f") == metas
    for blob, meta in zip(blobs, metas, strict=True):
        assert data[meta.offset : meta.offset + meta.length] == blob.data
        assert (meta.snapshot_id, meta.sequence_number, meta.fields) == (-1, -1, (POS_FIELD_ID,))
    assert [m.properties for m in metas] == [
        {"referenced-data-file": "s3://b/t/a.parquet", "cardinality": "2"},
        {"referenced-data-file": "s3://b/t/b", "cardinality": "1"},
    ]
    with pytest.raises(ValueError, match="must be >= 0"):
        deletion_vector_blob([-1])


def test_merging_manifests_after_an_upgrade_keeps_the_ids_rows_got(local_wh: Any) -> None:
    # one writer across the upgrade: manifests it wrote under v2 get ids in the first v3
    # commit; merging them later must carry those ids, not hand out new ones
    props = {"commit.manifest.min-count-to-merge": "3"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    table.append(_rows(range(0, 10)))
    table.append(_rows(range(10, 20)))
    table.update_properties({"format-version": "3"})
    table.append(_rows(range(20, 30)))  # assigns ids to the two v2 manifests too
    first = _lineage(table)
    assert sorted(r[1] for r in first) == list(range(30))
    for i in range(3, 8):
        table.append(_rows(range(i * 10, i * 10 + 10)))
    snap = table.current_snapshot()
    assert len(read_manifest_files(table.backend, snap)) < 8  # manifests were merged
    after = _agree(table, local_wh)
    assert after[:30] == first
    assert len({r[1] for r in after}) == 80


def test_an_upgrade_landing_during_a_commit(local_wh: Any) -> None:
    # an append built on v2 that loses the race to an upgrade lands on v3 with row ids; a
    # rewrite or delete built on v2 is a conflict (what it staged is v2's), the table unchanged
    create_table("t", SCHEMA, warehouse=local_wh.uri, properties={"commit.retry.num-retries": "3"})
    load_table("t", warehouse=local_wh.uri).append(_rows(range(5)))
    appender = load_table("t", warehouse=local_wh.uri)
    deleter = load_table("t", warehouse=local_wh.uri)
    load_table("t", warehouse=local_wh.uri).update_properties({"format-version": "3"})
    appender.append(_rows(range(5, 8)))
    table = load_table("t", warehouse=local_wh.uri)
    assert sorted(r[1] for r in _agree(table, local_wh)) == list(range(8))
    assert table.metadata.next_row_id == 8
    stored = local_wh.snapshot_of_storage()
    with pytest.raises(CommitConflictError, match="upgraded to format version 3"):
        deleter.delete(col("id") == 1)
    assert local_wh.snapshot_of_storage() == stored
