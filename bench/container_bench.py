"""Lazy msgpack container benchmark: ours vs msglc vs plain msgpack, side by side in one run.

Two containers: 10,000 entries of 1 KiB and 100 entries of 1 MiB (a root map of random bytes).
For each, in one run:

- write: ours (``LazyWriter``), msglc's ``LazyWriter``, ``msgpack.packb`` alone and
  ``msgpack.packb`` + the same backend ``write`` ours uses (local: temp file, fsync, rename);
  locally also ours and packb + write on file:// with ``fsync=False`` (page cache only);
- read one entry (a fresh reader each time: open + one lookup), locally with the file in the page
  cache (warm), locally after evicting the file's pages with ``posix_fadvise(DONTNEED)`` (cold),
  and on Ceph RGW: ours, msglc's ``LazyReader`` (over s3fs), and ``msgpack.unpackb`` of the
  whole object. Times are taken straight against the server; HTTP requests are counted in a
  separate pass through a loopback proxy. Variants of ours: ``size=`` given, and
  ``tail_size=64 KiB`` (instead of the default 512 KiB). On S3 also one ranged GET of the
  entry's size: no reader can beat it, so msglc's time over it bounds any speed-up.

Prints medians and ratios (>1 means ours is faster) and HTTP request counts per read.

    .venv/bin/python bench/container_bench.py            # everything (starts a Ceph RGW)
    .venv/bin/python bench/container_bench.py --no-s3    # local only
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from datashard.io.container import LazyReader, LazyWriter
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend

KiB, MiB = 1024, 1024 * 1024


def median_time(
    fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None
) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeat: int,
    limits: dict[str, int] | None = None,
    before: Mapping[str, Callable[[], None]] | None = None,
) -> dict[str, float]:
    """Median time of each function, run round-robin (rotating the order) so that load changes
    and the after-effects of a heavy neighbour hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeat):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate: no fixed order
            fn = fns[name]
            if limits and i >= limits.get(name, repeat):
                continue
            if before and name in before:
                before[name]()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def evict(path: str) -> None:
    """Drop ``path``'s pages from the page cache (cold read of that file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def row(label: str, ours: float, others: dict[str, float]) -> None:
    cells = [f"{label:<34}", f"ours {fmt(ours)}"]
    for name, t in others.items():
        cells.append(f"{name} {fmt(t)} ({t / ours:6.1f}x)")
    print(" | ".join(cells), flush=True)


def datasets(quick: bool) -> dict[str, tuple[dict[str, bytes], str]]:
    n_small, n_big = (2000, 20) if quick else (10_000, 100)
    small = {f"key-{i:06d}": os.urandom(KiB) for i in range(n_small)}
    big = {f"key-{i:03d}": os.urandom(MiB) for i in range(n_big)}
    return {
        f"{n_small} x 1 KiB": (small, f"key-{n_small // 2:06d}"),
        f"{n_big} x 1 MiB": (big, f"key-{n_big // 2:03d}"),
    }


# --------------------------------------------------------------------------------------------
# local


def bench_local(data: dict[str, tuple[dict[str, bytes], str]], repeat: int) -> None:
    root = tempfile.mkdtemp(prefix="container-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    backend = open_backend(f"file://{root}")
    try:
        for name, (obj, key) in data.items():
            _bench_local_case(name, obj, key, backend, root, repeat)
    finally:
        backend.close()
        shutil.rmtree(root, ignore_errors=True)


def _bench_local_case(
    name: str, obj: dict[str, bytes], key: str, backend: StorageBackend, root: str, repeat: int
) -> None:
    from msglc import LazyReader as MsglcReader
    from msglc import LazyWriter as MsglcWriter

    print(f"\n== local file system: {name} (read key {key!r})", flush=True)
    ours_path, msglc_path, plain_path = (os.path.join(root, f) for f in ("o", "m", "p"))
    reps = max(3, repeat // 4)

    def write_ours() -> None:
        with LazyWriter(backend, "o") as w:
            w.write(obj)

    def write_msglc() -> None:
        with MsglcWriter(msglc_path) as w:
            w.write(obj)

    def write_plain() -> None:
        backend.write("p", msgpack.packb(obj))

    # The same writes to a file:// backend with fsync=False: page cache only, the nearest a
    # file writer can come to packb, which makes no file at all.
    volatile = open_backend(backend.root_uri, fsync=False)

    def write_ours_volatile() -> None:
        with LazyWriter(volatile, "o") as w:
            w.write(obj)

    def write_plain_volatile() -> None:
        volatile.write("p", msgpack.packb(obj))

    writes = interleaved(
        {
            "ours": write_ours,
            "msglc": write_msglc,
            "packb": lambda: msgpack.packb(obj),
            "packb+write": write_plain,
            "ours, fsync off": write_ours_volatile,
            "packb+write, fsync off": write_plain_volatile,
        },
        reps,
    )
    off = {"packb": writes["packb"], "packb+write": writes.pop("packb+write, fsync off")}
    off_ours = writes.pop("ours, fsync off")
    row("write", writes.pop("ours"), writes)
    row("write, fsync off", off_ours, off)
    print(
        f"{'':34} sizes: ours {os.path.getsize(ours_path)}, msglc "
        f"{os.path.getsize(msglc_path)}, msgpack {os.path.getsize(plain_path)} bytes"
    )

    def read_ours() -> None:
        with LazyReader(backend, "o") as r:
            assert r[key] == obj[key]

    def read_msglc() -> None:
        with MsglcReader(msglc_path) as r:
            assert r[key] == obj[key]

    def read_plain() -> None:
        with open(plain_path, "rb") as f:
            assert msgpack.unpackb(f.read())[key] == obj[key]

    whole_reps = reps if "MiB" in name else repeat
    readers = {"ours": read_ours, "msglc": read_msglc, "unpackb": read_plain}
    paths = {"ours": ours_path, "msglc": msglc_path, "unpackb": plain_path}
    for label, cold in (("read one entry, warm", False), ("read one entry, cold", True)):
        before: dict[str, Callable[[], None]] | None = None
        if cold:
            before = {n: functools.partial(evict, p) for n, p in paths.items()}
        times = interleaved(readers, repeat, {"unpackb": whole_reps}, before)
        row(label, times["ours"], {"msglc": times["msglc"], "unpackb": times["unpackb"]})
    with LazyReader(backend, "o") as r:
        r[key]
        keys = list(obj)[:: max(1, len(obj) // 50)]
        t = median_time(lambda: [r[k] for k in keys], 5) / len(keys)
    print(f"{'warm reader, per further lookup':<34} | ours {fmt(t)}")


# --------------------------------------------------------------------------------------------
# Ceph RGW


class _S3Side:
    """One way to reach the server: our S3 backend and an s3fs file system for msglc."""

    def __init__(self, server: Any, bucket: str, endpoint: str) -> None:
        import s3fs

        options = {
            "endpoint_url": endpoint,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "region": server.region,
            "path_style": True,
        }
        self.backend = open_backend(f"s3://{bucket}", **options)
        self.fs = s3fs.S3FileSystem(
            key=server.access_key_id,
            secret=server.secret_access_key,
            client_kwargs={"endpoint_url": endpoint, "region_name": server.region},
            skip_instance_cache=True,
        )
        self.bucket = bucket

    def close(self) -> None:
        self.backend.close()


def bench_s3(data: dict[str, tuple[dict[str, bytes], str]], repeat: int) -> None:
    from datashard.testing.faultproxy import FaultProxy
    from datashard.testing.servers import new_s3_bucket, start_ceph, stop_server

    print("\nstarting Ceph RGW ...", flush=True)
    server = start_ceph()
    try:
        bucket = new_s3_bucket(server, "container-bench")
        with FaultProxy(server.endpoint_url) as proxy:
            direct = _S3Side(server, bucket, server.endpoint_url)
            counted = _S3Side(server, bucket, proxy.url)
            for name, (obj, key) in data.items():
                _bench_s3_case(name, obj, key, direct, counted, proxy, repeat)
            direct.close()
            counted.close()
    finally:
        stop_server(server)


def _s3_readers(
    side: _S3Side, obj: dict[str, bytes], key: str, size: int
) -> dict[str, Callable[[], None]]:
    from msglc import LazyReader as MsglcReader

    backend, fs = side.backend, side.fs

    def ours() -> None:
        with LazyReader(backend, "o.msgc") as r:
            assert r[key] == obj[key]

    def sized() -> None:
        with LazyReader(backend, "o.msgc", size=size) as r:
            assert r[key] == obj[key]

    def tail() -> None:
        with LazyReader(backend, "o.msgc", tail_size=64 * KiB) as r:
            assert r[key] == obj[key]

    def msglc() -> None:
        fs.invalidate_cache()
        with MsglcReader(f"{side.bucket}/m.msglc", fs=fs) as r:
            assert r[key] == obj[key]

    def unpackb() -> None:
        assert msgpack.unpackb(backend.read("p.msgpack"))[key] == obj[key]

    value_size = len(obj[key])

    def floor() -> None:  # one ranged GET of the entry's size: the least any reader can do
        assert len(backend.read_range("o.msgc", 0, value_size)) == value_size

    return {
        "ours": ours,
        "size known": sized,
        "tail 64 KiB": tail,
        "msglc": msglc,
        "unpackb": unpackb,
        "one GET": floor,
    }


def _bench_s3_case(
    name: str,
    obj: dict[str, bytes],
    key: str,
    direct: _S3Side,
    counted: _S3Side,
    proxy: Any,
    repeat: int,
) -> None:
    from msglc import LazyWriter as MsglcWriter

    print(f"\n== Ceph RGW (loopback): {name} (read key {key!r})", flush=True)
    reps = max(3, repeat // 4)
    backend = direct.backend

    def write_ours() -> None:
        with LazyWriter(backend, "o.msgc") as w:
            w.write(obj)

    def write_msglc() -> None:
        with MsglcWriter(f"{direct.bucket}/m.msglc", fs=direct.fs) as w:
            w.write(obj)

    def write_plain() -> None:
        backend.write("p.msgpack", msgpack.packb(obj))

    writes = interleaved(
        {"ours": write_ours, "msglc": write_msglc, "packb+write": write_plain}, reps
    )
    row("write", writes.pop("ours"), writes)
    size = backend.head("o.msgc").size

    counts: dict[str, str] = {}
    for label, fn in _s3_readers(counted, obj, key, size).items():
        proxy.clear()
        fn()
        counts[label] = ", ".join(f"{m} {n}" for m, n in sorted(proxy.requests.items()))
    whole_reps = reps if "MiB" in name else repeat
    times = interleaved(_s3_readers(direct, obj, key, size), repeat, {"unpackb": whole_reps})
    msglc = {"msglc": times["msglc"]}
    row("read one entry (open + lookup)", times["ours"], {**msglc, "unpackb": times["unpackb"]})
    for label in ("size known", "tail 64 KiB"):
        row(f"  ... {label}", times[label], msglc)
    # the bound on any reader's speed-up over msglc: it must make at least this one request
    row("  one ranged GET of the entry's size", times["one GET"], msglc)
    print("requests per read:")
    for label, text in counts.items():
        print(f"  {label:<32} {text}")
    with LazyReader(counted.backend, "o.msgc") as r:
        r[key]
        keys = list(obj)[:: max(1, len(obj) // 20)]
        proxy.clear()
        [r[k] for k in keys]
        per = proxy.requests["GET"] / len(keys)
    with LazyReader(backend, "o.msgc") as r:
        r[key]
        t = median_time(lambda: [r[k] for k in keys], 3) / len(keys)
    print(f"{'warm reader, per further lookup':<34} | ours {fmt(t)} ({per:.2f} GET each)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-s3", action="store_true", help="skip the Ceph RGW part")
    parser.add_argument("--no-local", action="store_true", help="skip the local part")
    parser.add_argument("--quick", action="store_true", help="smaller containers (smoke run)")
    parser.add_argument("--repeat", type=int, default=20, help="runs per read measurement")
    args = parser.parse_args(argv)
    print(
        f"python {sys.version.split()[0]}, msgpack {msgpack.version}, cpus {os.cpu_count()}; "
        "cold = posix_fadvise(DONTNEED) on the one file (the page cache of others untouched)"
    )
    data = datasets(args.quick)
    if not args.no_local:
        bench_local(data, args.repeat)
    if not args.no_s3:
        bench_s3(data, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
