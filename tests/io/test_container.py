"""The lazy msgpack container on file:// and memory://: round trips, laziness, errors, cleanup."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from datashard.errors import (
    ContainerError,
    CorruptFileError,
    EntryNotFoundError,
    ObjectNotFoundError,
    UnsupportedFormatVersionError,
    UnsupportedOperationError,
)
from datashard.io.container import LazyList, LazyMap, LazyReader, LazyWriter, combine
from datashard.io.container.format import FOOTER_SIZE, MAGIC
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.storage.memory import MemoryBackend, MemoryConfig
from datashard.testing.faults import FaultyBackend

EVERY_TYPE: dict[str, Any] = {
    "nil": None,
    "true": True,
    "false": False,
    "int0": 0,
    "int_pos_fix": 127,
    "int_neg_fix": -32,
    "int8": -128,
    "uint8": 255,
    "int16": -32768,
    "uint16": 65535,
    "int32": -(2**31),
    "uint32": 2**32 - 1,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "float": 3.141592653589793,
    "float_inf": float("inf"),
    "float_tiny": 5e-324,
    "str_empty": "",
    "str": "héllo wörld ✓",
    "str_long": "x" * 70_000,
    "bin_empty": b"",
    "bin": b"\x00\x01\xff",
    "bin_large": os.urandom(3 * 1024 * 1024),
    "list_empty": [],
    "map_empty": {},
    "nested": {"a": [1, {"b": [b"c", None, {"d": 1.5}]}], "e": {"f": {"g": "h"}}},
    "int_keys": {1: "one", -2: "minus two", 2**40: "big"},
    "bin_keys": {b"k": 1},
    "ext": msgpack.ExtType(5, b"payload"),
    "timestamp": msgpack.Timestamp(1_700_000_000, 123),
    "big_list": [{"i": i, "blob": bytes(600)} for i in range(200)],
}


@pytest.fixture(params=["file", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "file":
        b: StorageBackend = open_backend(f"file://{tmp_path / 'store'}")
    else:
        b = MemoryBackend(MemoryConfig(name=f"container-{os.getpid()}-{id(tmp_path)}"))
    yield b
    if isinstance(b, MemoryBackend):
        b.clear()


def _write(backend: StorageBackend, key: str, obj: Any, **kw: Any) -> None:
    with LazyWriter(backend, key, **kw) as w:
        w.write(obj)


def test_every_msgpack_type_round_trips_like_plain_msgpack(backend: StorageBackend) -> None:
    _write(backend, "all.msgc", EVERY_TYPE, lazy_threshold=1024)
    expected = msgpack.unpackb(msgpack.packb(EVERY_TYPE), strict_map_key=False)
    with LazyReader(backend, "all.msgc") as r:
        assert r.to_obj() == expected
        for name, value in expected.items():
            got = r[name]
            if isinstance(got, (LazyMap, LazyList)):
                got = got.to_obj()
            assert got == value, name


def test_root_list_and_root_scalar_round_trip(backend: StorageBackend) -> None:
    _write(backend, "list.msgc", [1, "two", b"three", [4], {"five": 5}])
    with LazyReader(backend, "list.msgc") as r:
        assert len(r) == 5
        assert r[-1] == {"five": 5}
        assert r[1:3] == ["two", b"three"]
        assert list(r) == [1, "two", b"three", [4], {"five": 5}]
    _write(backend, "scalar.msgc", "just a string")
    with LazyReader(backend, "scalar.msgc") as r:
        assert r.root == "just a string"
        assert r.to_obj() == "just a string"
        with pytest.raises(ContainerError, match="single value"):
            r["x"]


def test_uri_targets_resolve_to_backend_and_key(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.msgc"
    with LazyWriter(f"file://{path}") as w:
        w["a"] = 1
    with LazyReader(str(path)) as r:
        assert r["a"] == 1
    with LazyReader(f"file://{path}") as r:
        assert dict(r.items()) == {"a": 1}


def test_nested_lookup_reads_only_the_value_it_touches(backend: StorageBackend) -> None:
    runs = [{"loss": float(i), "weights": os.urandom(50_000)} for i in range(40)]
    _write(backend, "runs.msgc", {"runs": runs, "blob": os.urandom(2_000_000)})
    counting = FaultyBackend(backend)
    with LazyReader(counting, "runs.msgc") as r:
        opened = counting.count("read_range")
        run = r["runs"][7]
        assert isinstance(run, LazyMap)
        assert run["loss"] == 7.0
    reads = [c for c in counting.calls if c[0] == "read_range"]
    assert opened == 1  # the suffix read
    assert len(reads) <= 3  # suffix, maybe one index page, the value
    size = backend.head("runs.msgc").size
    assert size > 4_000_000


def test_map_api_behaves_like_a_dict(backend: StorageBackend) -> None:
    obj = {f"key-{i}": {"n": i, "pad": "p" * 30} for i in range(3000)}
    with LazyWriter(backend, "m.msgc") as w:
        for k, v in obj.items():
            w[k] = v
        w["key-5"] = "replaced"
    obj["key-5"] = "replaced"  # type: ignore[assignment]
    with LazyReader(backend, "m.msgc") as r:
        assert len(r) == 3000
        assert list(r.keys()) == list(obj)
        assert r["key-2999"] == obj["key-2999"]
        assert r["key-5"] == "replaced"
        assert r.get("nope", 42) == 42
        assert "key-17" in r and "nope" not in r and 17 not in r
        assert dict(r.items()) == obj
        assert r.to_obj() == obj


def test_missing_key_names_the_key_and_the_object(backend: StorageBackend) -> None:
    _write(backend, "k.msgc", {"present": [1, 2]})
    with LazyReader(backend, "k.msgc") as r:
        with pytest.raises(EntryNotFoundError) as info:
            r["absent"]
        assert isinstance(info.value, KeyError)
        assert info.value.key == "absent"
        assert "k.msgc" in info.value.uri and "k.msgc" in str(info.value)
    _write(backend, "l.msgc", [1, 2])
    with LazyReader(backend, "l.msgc") as r, pytest.raises(IndexError, match="l.msgc"):
        r[2]


def test_large_map_root_is_searched_through_fences(tmp_path: Path) -> None:
    backend = FaultyBackend(open_backend(f"file://{tmp_path}"))
    obj = {i: i * i for i in range(100_000)}
    _write(backend, "big.msgc", obj)
    backend.reset()
    with LazyReader(backend, "big.msgc", whole_index_limit=0) as r:
        assert r[99_999] == 99_999**2
        assert r[12_345] == 12_345**2
        assert 100_000 not in r
    # suffix; then per lookup at most one fence read, one record page, one value
    assert backend.count("read_range") <= 1 + 2 * 3 + 2


def test_warm_reader_reads_one_range_per_value(tmp_path: Path) -> None:
    backend = FaultyBackend(open_backend(f"file://{tmp_path}"))
    _write(backend, "w.msgc", {f"k{i}": bytes(1024) for i in range(10_000)})
    with LazyReader(backend, "w.msgc") as r:
        r["k0"]
        backend.reset()
        for i in range(1, 200, 7):
            assert r[f"k{i}"] == bytes(1024)
        assert backend.count("read_range") == len(range(1, 200, 7))


def _corrupt(backend: StorageBackend, key: str, edit: Any) -> None:
    data = bytearray(backend.read(key))
    backend.write(key, bytes(edit(data)))


def test_truncated_file_raises_corrupt_naming_the_object(backend: StorageBackend) -> None:
    _write(backend, "t.msgc", {"a": os.urandom(100)})
    _corrupt(backend, "t.msgc", lambda d: d[:-10])
    with pytest.raises(CorruptFileError, match="t.msgc"):
        LazyReader(backend, "t.msgc")
    backend.write("tiny.msgc", b"abc")
    with pytest.raises(CorruptFileError, match="truncated"):
        LazyReader(backend, "tiny.msgc")


def test_wrong_magic_raises_corrupt(backend: StorageBackend) -> None:
    backend.write("not.msgc", msgpack.packb({"a": 1}) * 100)
    with pytest.raises(CorruptFileError, match="not a datashard container"):
        LazyReader(backend, "not.msgc")


def test_future_version_names_both_versions(backend: StorageBackend) -> None:
    _write(backend, "v.msgc", {"a": 1})

    def bump(d: bytearray) -> bytearray:
        struct.pack_into("<H", d, len(d) - 12, 7)
        return d

    _corrupt(backend, "v.msgc", bump)
    with pytest.raises(UnsupportedFormatVersionError, match="version 7.*up to 1") as info:
        LazyReader(backend, "v.msgc")
    assert (info.value.found, info.value.supported) == (7, 1)


def test_corrupt_footer_or_index_raises_corrupt(backend: StorageBackend) -> None:
    _write(backend, "c.msgc", {f"k{i}": i for i in range(100)})

    def flip_footer(d: bytearray) -> bytearray:
        d[len(d) - FOOTER_SIZE + 3] ^= 0xFF
        return d

    _corrupt(backend, "c.msgc", flip_footer)
    with pytest.raises(CorruptFileError, match="checksum"):
        LazyReader(backend, "c.msgc")
    _write(backend, "i.msgc", {f"k{i}": i for i in range(100)})

    def break_node_tag(d: bytearray) -> bytearray:
        at = len(d) - FOOTER_SIZE - 32
        d[at : at + 4] = b"XXXX"
        return d

    _corrupt(backend, "i.msgc", break_node_tag)
    with pytest.raises(CorruptFileError, match="tag"):
        LazyReader(backend, "i.msgc")


def test_corrupt_value_bytes_raise_corrupt_not_garbage(backend: StorageBackend) -> None:
    _write(backend, "v.msgc", [b"x" * 10])
    _corrupt(backend, "v.msgc", lambda d: d[:16] + b"\xc1" + d[17:])  # 0xc1: never used
    with LazyReader(backend, "v.msgc") as r, pytest.raises(CorruptFileError, match="msgpack"):
        r[0]


def test_missing_object_raises_not_found(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError):
        LazyReader(backend, "nothing.msgc")


def test_spool_file_is_removed_after_success_and_after_failure(
    backend: StorageBackend, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with LazyWriter(backend, "ok.msgc", spool_dir=str(spool)) as w:
        w["a"] = os.urandom(200_000)
        assert len(os.listdir(spool)) == 1
    assert os.listdir(spool) == []
    assert backend.exists("ok.msgc")

    with pytest.raises(RuntimeError), LazyWriter(backend, "bad.msgc", spool_dir=str(spool)) as w:
        w["a"] = 1
        raise RuntimeError("the producer died half-way")
    assert os.listdir(spool) == []
    assert not backend.exists("bad.msgc")


def test_failed_upload_removes_spool_and_publishes_nothing(tmp_path: Path) -> None:
    failing = FaultyBackend(MemoryBackend(MemoryConfig(name=f"fail-{id(tmp_path)}")))
    failing.write = _raise  # type: ignore[method-assign]
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(OSError, match="disk on fire"):
        with LazyWriter(failing, "x.msgc", spool_dir=str(spool), part_size=1024) as w:
            w["a"] = os.urandom(10_000)
    assert os.listdir(spool) == []
    assert not failing.exists("x.msgc")


def test_a_local_container_is_published_by_renaming_its_spool(tmp_path: Path) -> None:
    local = open_backend(f"file://{tmp_path}/wh")
    local.write("runs/old.msgc", b"not touched")
    with LazyWriter(local, "runs/new.msgc") as w:
        w["a"] = os.urandom(300_000)
        spool = Path(w.spool_path)
        assert spool.parent == tmp_path / "wh" / "runs"  # beside its target: same file system
        inode = spool.stat().st_ino
        assert [m.key for m in local.list("")] == ["runs/old.msgc"]  # the spool is never listed
    published = tmp_path / "wh" / "runs" / "new.msgc"
    assert published.stat().st_ino == inode  # the very file written: no second copy
    assert sorted(os.listdir(tmp_path / "wh" / "runs")) == ["new.msgc", "old.msgc"]
    assert len(LazyReader(local, "runs/new.msgc")["a"]) == 300_000

    with pytest.raises(RuntimeError), LazyWriter(local, "runs/old.msgc") as w:
        w["a"] = 1
        raise RuntimeError("the producer died half-way")
    assert sorted(os.listdir(tmp_path / "wh" / "runs")) == ["new.msgc", "old.msgc"]
    assert local.read("runs/old.msgc") == b"not touched"


def test_a_local_container_that_cannot_be_published_leaves_the_old_object(
    tmp_path: Path,
) -> None:
    local = open_backend(f"file://{tmp_path}/wh")
    local.write("d/x/inner", b"1")  # "d/x" is a directory: a file cannot replace it
    with pytest.raises(UnsupportedOperationError, match="'d/x'"):
        with LazyWriter(local, "d/x") as w:
            w["a"] = 1
    assert os.listdir(tmp_path / "wh" / "d") == ["x"]  # no spool left behind
    assert local.read("d/x/inner") == b"1"


def _raise(key: str, data: Any) -> None:
    raise OSError("disk on fire")


def test_unencodable_value_is_rolled_back_and_writer_stays_usable(
    backend: StorageBackend,
) -> None:
    with LazyWriter(backend, "r.msgc", lazy_threshold=10) as w:
        w["good"] = 1
        with pytest.raises(ContainerError, match="object"):
            w["bad"] = [1, 2, 3, 4, 5, object()]
        w["after"] = [b"x" * 20, 2]
    with LazyReader(backend, "r.msgc") as r:
        assert r.to_obj() == {"good": 1, "after": [b"x" * 20, 2]}
    size_without_bad = backend.head("r.msgc").size
    _write(backend, "r2.msgc", {"good": 1, "after": [b"x" * 20, 2]}, lazy_threshold=10)
    assert backend.head("r2.msgc").size == size_without_bad


def test_mixing_root_kinds_raises(backend: StorageBackend) -> None:
    with LazyWriter(backend, "mix.msgc") as w:
        w["a"] = 1
        with pytest.raises(ContainerError, match="root"):
            w.append(2)
        with pytest.raises(ContainerError, match="root"):
            w.write({"b": 2})


def test_append_adds_entries_and_keeps_old_ones(backend: StorageBackend) -> None:
    first = {"runs": [{"loss": i, "w": bytes(3000)} for i in range(10)], "a": 1}
    _write(backend, "app.msgc", first, lazy_threshold=1000)
    with LazyWriter(backend, "app.msgc", mode="a") as w:
        w["b"] = "new"
        w["a"] = "replaced"
    with LazyReader(backend, "app.msgc") as r:
        assert list(r) == ["runs", "a", "b"]
        assert r["runs"][9]["loss"] == 9
        assert r.to_obj() == {**first, "a": "replaced", "b": "new"}
    _write(backend, "app-list.msgc", [1, 2])
    with LazyWriter(backend, "app-list.msgc", mode="a") as w:
        w.extend([3, {"four": 4}])
    with LazyReader(backend, "app-list.msgc") as r:
        assert r.to_obj() == [1, 2, 3, {"four": 4}]


def test_append_to_a_missing_container_creates_it(backend: StorageBackend) -> None:
    with LazyWriter(backend, "fresh.msgc", mode="a") as w:
        w["x"] = 1
    with LazyReader(backend, "fresh.msgc") as r:
        assert r.to_obj() == {"x": 1}


def test_failed_append_leaves_the_old_container(backend: StorageBackend) -> None:
    _write(backend, "keep.msgc", {"a": 1})
    before = backend.read("keep.msgc")
    with pytest.raises(RuntimeError), LazyWriter(backend, "keep.msgc", mode="a") as w:
        w["b"] = 2
        raise RuntimeError("stop")
    assert backend.read("keep.msgc") == before


def test_combine_copies_sources_as_map_or_list(backend: StorageBackend) -> None:
    a = {"runs": [{"loss": i, "w": os.urandom(2000)} for i in range(30)], "name": "a"}
    b = [os.urandom(40_000), {"x": list(range(5000))}]
    _write(backend, "a.msgc", a, lazy_threshold=1000)
    _write(backend, "b.msgc", b)
    _write(backend, "c.msgc", 12345)
    combine(
        (backend, "ab.msgc"),
        {"a": (backend, "a.msgc"), "b": (backend, "b.msgc"), "c": (backend, "c.msgc")},
    )
    with LazyReader(backend, "ab.msgc") as r:
        assert r["a"]["runs"][29]["loss"] == 29
        assert r["b"][1]["x"][4999] == 4999
        assert r["c"] == 12345
        assert r.to_obj() == {"a": a, "b": b, "c": 12345}
    combine((backend, "list.msgc"), [(backend, "ab.msgc"), (backend, "b.msgc")])
    with LazyReader(backend, "list.msgc") as r:
        assert r.to_obj() == [{"a": a, "b": b, "c": 12345}, b]


def test_combine_with_a_corrupt_source_writes_nothing(backend: StorageBackend) -> None:
    _write(backend, "good.msgc", {"a": 1})
    backend.write("junk.msgc", b"junk" * 100)
    with pytest.raises(CorruptFileError):
        combine((backend, "out.msgc"), [(backend, "good.msgc"), (backend, "junk.msgc")])
    assert not backend.exists("out.msgc")


def test_header_magic_is_checked_when_the_file_fits_the_suffix(backend: StorageBackend) -> None:
    _write(backend, "h.msgc", {"a": 1})
    _corrupt(backend, "h.msgc", lambda d: b"XXXXXXXX" + d[len(MAGIC) :])
    with pytest.raises(CorruptFileError, match="header magic"):
        LazyReader(backend, "h.msgc")


def test_container_errors_survive_pickling_to_other_processes(backend: StorageBackend) -> None:
    import pickle

    _write(backend, "p.msgc", {"a": 1})
    with LazyReader(backend, "p.msgc") as r, pytest.raises(EntryNotFoundError) as info:
        r["b"]
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.key, again.uri, str(again)) == (info.value.key, info.value.uri, str(info.value))
    version = UnsupportedFormatVersionError("m", "k", found=3, supported=1)
    assert pickle.loads(pickle.dumps(version)).found == 3


def test_reader_pickles_for_worker_processes(tmp_path: Path) -> None:
    import pickle
    import subprocess
    import sys

    uri = f"file://{tmp_path}/w.msgc"
    with LazyWriter(uri) as w:
        w["samples"] = [{"x": i} for i in range(3000)]
    with LazyReader(uri) as r:
        copy = pickle.loads(pickle.dumps(r))
        assert copy["samples"][2999] == {"x": 2999}
        copy.close()
        (tmp_path / "reader.pickle").write_bytes(pickle.dumps(r))
    code = (
        "import pickle, sys\n"
        "with pickle.load(open(sys.argv[1], 'rb')) as r:\n"
        "    print(r['samples'][1234]['x'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "reader.pickle")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "1234"


def test_nested_containers_in_a_large_map_are_found_through_fences(
    backend: StorageBackend,
) -> None:
    obj = {f"run-{i}": [i, "x" * 40] for i in range(2000)}
    _write(backend, "nested.msgc", obj, lazy_threshold=10)
    with LazyReader(backend, "nested.msgc", tail_size=1024, whole_index_limit=0) as r:
        for i in (0, 777, 1999):
            child = r[f"run-{i}"]
            assert isinstance(child, LazyList)
            assert child.to_obj() == [i, "x" * 40]
        assert "run-5" in r and "run-2000" not in r
        with pytest.raises(EntryNotFoundError):
            r["run-2000"]


def test_one_reader_serves_many_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = open_backend(f"file://{tmp_path}")
    obj = {f"k{i}": {"i": i, "pad": bytes(100)} for i in range(5000)}
    _write(backend, "t.msgc", obj)
    with LazyReader(backend, "t.msgc", tail_size=4096) as r:  # index fetched under contention
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i: r[f"k{i}"]["i"], range(0, 5000, 7)))
    assert got == list(range(0, 5000, 7))


def test_many_small_entries_written_in_batches_read_back_exactly(backend: StorageBackend) -> None:
    # Crosses the writer's batch boundary (1024 entries) with all-bytes, mixed scalar and
    # non-scalar batches, bin 8 / bin 16 sizes, and keys that pack alike (two NaNs).
    small = {f"k{i}": os.urandom(i % 300) for i in range(2100)}
    mixed: dict[Any, Any] = {
        i: [b"x" * (i * 40), i, "s" * (i % 40), None, 1.5][i % 5] for i in range(2100)
    }
    mixed[float("nan")], mixed[float("nan")] = b"a", b"b"
    items = [os.urandom(i % 600) for i in range(1500)] + [1, "two", [3], b"y" * 70_000]
    _write(backend, "small.msgc", small)
    _write(backend, "mixed.msgc", mixed, lazy_threshold=0)
    with LazyWriter(backend, "list.msgc") as w:
        w.extend(items[:1030])
        w.extend(tuple(items[1030:]))
    with LazyReader(backend, "small.msgc") as r:
        assert r.to_obj() == small
        assert r["k1024"] == small["k1024"] and r["k2099"] == small["k2099"]
    with LazyReader(backend, "mixed.msgc") as r:
        assert len(r) == 2101  # the two NaNs pack alike: the second replaces the first
        assert r[float("nan")] == b"b"
        assert r[1025] == mixed[1025] and r[2098] == mixed[2098]
    with LazyReader(backend, "list.msgc") as r:
        assert r.to_obj() == msgpack.unpackb(msgpack.packb(items))
        assert r[1023] == items[1023] and r[1024] == items[1024]


def test_bad_value_in_a_large_extend_names_its_index_and_keeps_the_rest(
    backend: StorageBackend,
) -> None:
    with LazyWriter(backend, "ext.msgc") as w:
        w.extend([b"a"] * 5)
        with pytest.raises(ContainerError, match=r"\[1505\]"):
            w.extend([b"b"] * 1500 + [2**70])
        w.append(b"c")
    with LazyReader(backend, "ext.msgc") as r:
        assert r.to_obj() == [b"a"] * 5 + [b"b"] * 1500 + [b"c"]
