"""Commit cost does not grow with the table's age: requests per warm append, a bounded metadata
log, a bounded snapshot list and a bounded manifest list (merging)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import ValidationError
from datashard.table.manifests import read_manifest_files
from datashard.testing.faults import FaultyBackend

SCHEMA = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long", "required": True}])


@pytest.mark.parametrize("group", [False, True], ids=["plain", "group-commit"])
def test_a_warm_append_costs_five_requests_on_every_backend(warehouse: Any, group: bool) -> None:
    """Group commit engages only under contention: alone, an append costs the same."""
    counting = FaultyBackend(warehouse.backend)  # no faults: it only counts
    props = {"commit.group.enabled": str(group).lower()}
    create_table("t", SCHEMA, warehouse=counting, properties=props)
    table = load_table("t", warehouse=counting)
    table.append_records([{"n": 0}])  # the first append reads nothing either (no parent)
    for i in range(1, 4):
        table.flush()
        counting.reset()
        table.append_records([{"n": i}])
        table.flush()  # the version-hint write runs in the background
        methods = [m for m, _ in counting.calls]
        assert methods == ["write", "write", "write", "put_if_absent", "write"], counting.calls
    assert load_table("t", warehouse=warehouse.backend).count() == 4


def test_a_cold_load_costs_three_requests(local_wh: Any) -> None:
    first = create_table("t", SCHEMA, warehouse=local_wh.backend)
    first.append_records([{"n": 1}])
    first.flush()
    counting = FaultyBackend(local_wh.backend)
    load_table("t", warehouse=counting)
    # the hint; then, at once, the version it names and a probe for the one after
    assert counting.calls[0] == ("read", "t/metadata/version-hint.text")
    assert sorted(counting.calls[1:]) == [
        ("head", "t/metadata/v3.metadata.json"),
        ("read", "t/metadata/v2.metadata.json"),
    ]


def test_metadata_log_and_snapshot_list_stay_bounded(local_wh: Any) -> None:
    props = {"write.metadata.previous-versions-max": "5", "history.expire.max-snapshots": "8"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    first = table.append_records([{"n": 0}]).snapshot_id
    for i in range(1, 30):
        table.append_records([{"n": i}])
    md = load_table("t", warehouse=local_wh.uri).metadata
    assert len(md.metadata_log) == 5
    assert md.metadata_log[-1].metadata_file.endswith("v30.metadata.json")
    assert len(md.snapshots) == 8 and len(md.snapshot_log) == 8
    assert table.count() == 30  # expiring snapshot entries never drops data
    with pytest.raises(ValidationError, match="no snapshot"):
        table.scan(snapshot_id=first)


def test_small_manifests_are_merged_so_the_manifest_list_stays_bounded(local_wh: Any) -> None:
    props = {"commit.manifest.min-count-to-merge": "4"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    counts = []
    for i in range(100):
        table.append_records([{"n": i}])
        counts.append(len(read_manifest_files(local_wh.backend, table.current_snapshot())))
    # fewer than M manifests per size class (1-3, 4-15, 16-63, 64-255 files) plus the newest
    assert max(counts) <= 1 + 3 * 4, counts
    assert max(counts[50:]) <= max(counts[:50]) + 3
    fresh = load_table("t", warehouse=local_wh.uri)
    # every row once, in commit order, after many merges
    assert fresh.to_arrow().column("n").to_pylist() == list(range(100))
    assert fresh.count() == 100


def test_the_metadata_file_stops_growing(local_wh: Any) -> None:
    props = {"write.metadata.previous-versions-max": "10", "history.expire.max-snapshots": "10"}
    table = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for i in range(60):
        table.append_records([{"n": i}])
    table.flush()
    # v51 .. v61 are whole (the newest and the 10 the metadata log names), the rest retired
    size_50 = local_wh.backend.head("t/metadata/v51.metadata.json").size
    size_60 = local_wh.backend.head("t/metadata/v61.metadata.json").size
    assert abs(size_60 - size_50) < 0.05 * size_50


def test_a_writer_far_behind_jumps_to_the_hint_instead_of_probing_each_version(
    local_wh: Any,
) -> None:
    create_table("t", SCHEMA, warehouse=local_wh.uri).append_records([{"n": 0}])
    counting = FaultyBackend(local_wh.backend)
    behind = load_table("t", warehouse=counting)  # at v2
    ahead = load_table("t", warehouse=local_wh.uri)
    for i in range(1, 13):
        ahead.append_records([{"n": i}])
    ahead.flush()  # the hint names v14
    counting.reset()
    assert behind.refresh().version == 14
    # head v3, head v4, the hint (v14), head v15 (missing), read v14: not 12 heads
    assert [m for m, _ in counting.calls] == ["head", "head", "read", "head", "read"]
    assert behind.count() == 13


def test_a_hint_naming_a_missing_version_falls_back_to_a_listing(local_wh: Any) -> None:
    table = create_table("t", SCHEMA, warehouse=local_wh.uri)
    behind = load_table("t", warehouse=local_wh.uri)  # at v1
    for i in range(4):
        table.append_records([{"n": i}])
    table.flush()
    local_wh.backend.write("t/metadata/version-hint.text", b"40")  # no v40: not ours
    assert behind.refresh().version == 5
    assert behind.count() == 4


class _CommitsFirst(FaultyBackend):
    """Runs ``first`` just before the first conditional create: a race lost on purpose."""

    def __init__(self, inner: Any, first: Any) -> None:
        super().__init__(inner)
        self.first = first

    def put_if_absent(self, key: str, data: bytes) -> None:
        first, self.first = self.first, None
        if first is not None:
            first()
        super().put_if_absent(key, data)


def test_a_merge_reads_each_foreign_manifest_once_even_when_the_race_is_lost(
    local_wh: Any,
) -> None:
    props = {"commit.manifest.min-count-to-merge": "4"}
    other = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for i in range(6):  # six one-file manifests from six writers (none merges: see below)
        load_table("t", warehouse=local_wh.uri).append_records([{"n": i}])
    other.refresh()
    counting = _CommitsFirst(local_wh.backend, lambda: other.create_tag("racer"))
    writer = load_table("t", warehouse=counting)
    counting.reset()
    writer.append_records([{"n": 6}])
    manifest_reads = [k for m, k in counting.calls if m == "read" and k.endswith("-m0.avro")]
    assert len(manifest_reads) == 6 and len(set(manifest_reads)) == 6, counting.calls
    assert counting.count("put_if_absent") == 2  # lost to the tag, won on the retry
    fresh = load_table("t", warehouse=local_wh.uri)
    assert sorted(fresh.to_arrow().column("n").to_pylist()) == list(range(7))
    assert len(read_manifest_files(local_wh.backend, fresh.current_snapshot())) == 2


def test_a_writer_that_lacks_a_full_class_does_not_read_it_inside_its_commit(
    local_wh: Any,
) -> None:
    props = {"commit.manifest.min-count-to-merge": "4"}
    other = create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for i in range(3):
        other.append_records([{"n": i}])
    counting = FaultyBackend(local_wh.backend)
    writer = load_table("t", warehouse=counting)
    writer.append_records([{"n": 3}])  # its own manifest and three foreign ones: class full
    writer.flush()
    counting.reset()
    writer.append_records([{"n": 4}])  # builds on its own commit: starts reading, no merge
    writer.flush()  # waits for those background reads
    foreign = [k for m, k in counting.calls if m == "read" and k.endswith("-m0.avro")]
    assert len(foreign) == 3 and len(set(foreign)) == 3, counting.calls
    assert len(read_manifest_files(local_wh.backend, writer.current_snapshot())) == 5
    counting.reset()
    writer.append_records([{"n": 5}])  # merges all five it now holds, reading none
    writer.flush()
    assert [k for m, k in counting.calls if m == "read" and k.endswith(".avro")] == []
    assert counting.count("write") == 5  # data, manifest, merged manifest, list, hint
    manifests = read_manifest_files(local_wh.backend, writer.current_snapshot())
    assert len(manifests) == 2
    fresh = load_table("t", warehouse=local_wh.uri)
    assert sorted(fresh.to_arrow().column("n").to_pylist()) == list(range(6))


def test_a_writer_that_did_not_make_the_base_leaves_a_full_class_alone(local_wh: Any) -> None:
    props = {"commit.manifest.min-count-to-merge": "4"}
    create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    for i in range(3):  # three writers, each of them alone in its process
        load_table("t", warehouse=local_wh.uri).append_records([{"n": i}])
    other = load_table("t", warehouse=local_wh.uri)
    other.append_records([{"n": 3}])
    counting = FaultyBackend(local_wh.backend)
    writer = load_table("t", warehouse=counting)  # the base is another writer's commit
    writer.append_records([{"n": 4}])
    writer.flush()
    assert [k for m, k in counting.calls if m == "read" and k.endswith("-m0.avro")] == []
    assert len(read_manifest_files(local_wh.backend, writer.current_snapshot())) == 5
    other.refresh().append_records([{"n": 5}])  # holds one of the five: leaves them too
    assert len(read_manifest_files(local_wh.backend, other.current_snapshot())) == 6
    other.append_records([{"n": 6}])  # M + M // 2 = 6: merged by anyone, reading the rest
    assert len(read_manifest_files(local_wh.backend, other.current_snapshot())) == 2
    assert sorted(
        load_table("t", warehouse=local_wh.uri).to_arrow().column("n").to_pylist()
    ) == list(range(7))


@pytest.mark.parametrize("bogus_hint", [False, True])
def test_a_lost_race_reads_the_newer_versions_with_one_get_each(
    local_wh: Any, bogus_hint: bool
) -> None:
    create_table("t", SCHEMA, warehouse=local_wh.uri)
    racer = load_table("t", warehouse=local_wh.uri)

    def race() -> None:  # three commits land while the writer prepares v2
        for i in range(3):
            racer.append_records([{"n": 100 + i}])
        racer.flush()
        if bogus_hint:  # a hint ahead of every version (nothing of ours writes one)
            local_wh.backend.write("t/metadata/version-hint.text", b"99")

    counting = _CommitsFirst(local_wh.backend, race)
    writer = load_table("t", warehouse=counting)  # at v1
    counting.reset()
    writer.append_records([{"n": 1}])
    versions = [
        k.rsplit("/", 1)[-1]
        for m, k in counting.calls
        if m == "read" and k.endswith(".metadata.json")
    ]
    expected = ["v3.metadata.json", "v4.metadata.json"]
    expected += ["v99.metadata.json", "v5.metadata.json"] if bogus_hint else ["v5.metadata.json"]
    assert versions == expected  # lost v2: read on from v3, the body with each hit
    assert counting.count("head") == 0
    assert counting.count("put_if_absent") == 2 and writer.version == 5
    assert sorted(load_table("t", warehouse=local_wh.uri).to_arrow().column("n").to_pylist()) == [
        1,
        100,
        101,
        102,
    ]


def test_a_cold_load_reads_the_hinted_version_while_probing_the_next(
    ceph_s3: Any, ceph_wh: Any
) -> None:
    from datashard.testing.faultproxy import FaultProxy

    wh = ceph_wh
    table = create_table("t", SCHEMA, warehouse=wh.uri, **wh.options)
    table.append_records([{"n": 1}])
    table.flush()
    with FaultProxy(ceph_s3.endpoint_url) as proxy:
        options = {**wh.options, "endpoint_url": proxy.url}
        proxy.delay(0.3, n=2, path=r"/v\d+\.metadata\.json")  # hold the GET and the HEAD
        loaded = load_table("t", warehouse=wh.uri, **options)
        assert loaded.count() == 1
        assert proxy.max_in_flight >= 2  # both held at once: two round trips, not three


def test_a_manifest_is_read_once_per_process_for_every_later_scan(local_wh: Any) -> None:
    counting = FaultyBackend(local_wh.backend)
    table = create_table("t", SCHEMA, warehouse=counting)
    for i in range(4):
        table.append_records([{"n": i}])

    def manifests_read() -> list[str]:
        return [k for m, k in counting.calls if m == "read" and k.endswith("-m0.avro")]

    counting.reset()
    assert table.count() == 4 and len(manifests_read()) <= 4
    counting.reset()
    assert sorted(table.to_pandas()["n"]) == [0, 1, 2, 3]
    assert manifests_read() == []  # every manifest came from the cache
    assert not [k for m, k in counting.calls if "/snap-" in k]  # and the manifest list too
    table.append_records([{"n": 4}])
    counting.reset()
    again = load_table("t", warehouse=counting)  # another Table object, same process
    assert sorted(again.to_pandas()["n"]) == [0, 1, 2, 3, 4]
    assert len(manifests_read()) == 1  # only the new snapshot's own manifest
    old = again.history()[0].snapshot_id
    counting.reset()
    assert again.scan(snapshot_id=old).to_pandas()["n"].tolist() == [0]
    assert manifests_read() == []


class _SlowHint(FaultyBackend):
    """Holds every version-hint write until ``release`` is set."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.release = threading.Event()

    def write(self, key: str, data: Any) -> None:
        if key.endswith("version-hint.text"):
            assert self.release.wait(30), "the hint write was never released"
        super().write(key, data)


def test_a_commit_does_not_wait_for_the_last_ones_hint_write(local_wh: Any) -> None:
    create_table("t", SCHEMA, warehouse=local_wh.uri)
    slow = _SlowHint(local_wh.backend)
    writer = load_table("t", warehouse=slow)
    writer.append_records([{"n": 0}])
    writer.append_records([{"n": 1}])  # would hang here if it waited for the first hint
    assert writer.version == 3 and slow.count("put_if_absent") == 2
    assert local_wh.backend.read("t/metadata/version-hint.text") == b"1"  # not written yet
    slow.release.set()
    writer.flush()  # both hint writes done, in order
    assert local_wh.backend.read("t/metadata/version-hint.text") == b"3"
    assert [k for m, k in slow.calls if m == "write" and k.endswith("hint.text")] == [
        "t/metadata/version-hint.text"
    ] * 2


def test_a_merge_that_fills_the_next_class_merges_on_without_reading_its_own_output(
    local_wh: Any,
) -> None:
    props = {"commit.manifest.min-count-to-merge": "4"}  # M = 4: anyone merges at 6
    create_table("t", SCHEMA, warehouse=local_wh.uri, properties=props)
    n = 0
    for _ in range(5):  # five manifests of four files (class 1), each from a new writer
        with load_table("t", warehouse=local_wh.uri).transaction() as tx:
            for _ in range(4):
                tx.append_records([{"n": n}])
                n += 1
    for _ in range(6):  # six one-file manifests (class 0)
        load_table("t", warehouse=local_wh.uri).append_records([{"n": n}])
        n += 1
    assert (
        len(
            read_manifest_files(
                local_wh.backend, load_table("t", warehouse=local_wh.uri).current_snapshot()
            )
        )
        == 11
    )
    counting = FaultyBackend(local_wh.backend)
    writer = load_table("t", warehouse=counting)
    writer.append_records([{"n": n}])  # class 0 merged into class 1, which then holds six
    writer.flush()
    reads = [k for m, k in counting.calls if m == "read" and k.endswith(".avro")]
    assert not any(k.endswith("-m1.avro") for k in reads), reads  # never its own, unwritten
    merged_written = [k for m, k in counting.calls if m == "write" and k.endswith("-m1.avro")]
    assert len(merged_written) == 1  # the intermediate merge is never written
    manifests = read_manifest_files(local_wh.backend, writer.current_snapshot())
    assert len(manifests) == 2  # this commit's, and one of all 26 earlier files
    assert sorted(
        load_table("t", warehouse=local_wh.uri).to_arrow().column("n").to_pylist()
    ) == list(range(n + 1))
