"""Cold 1 GiB read through ``file://`` and ``direct://`` against a plain O_DIRECT ``preadv`` loop.

Run: ``.venv/bin/python bench/storage_local.py [--size-mib 1024] [--dir DIR] [--repeats 3]``.

Every case reads the same file into a page-aligned, pre-faulted destination (an ``mmap``), after
dropping the page cache: ``echo 3 > /proc/sys/vm/drop_caches`` when permitted, and always
``posix_fadvise(POSIX_FADV_DONTNEED)`` on the file (the output says which worked). Each case runs
``repeats`` times in rotating order; the median by wall time is reported, with its CPU seconds
(user + system of this process, from ``getrusage``) and CPU seconds per GiB.

Cases:
- ``peer: O_DIRECT preadv loop``: ``os.open(O_DIRECT)`` and ``os.preadv`` of ``PEER_CHUNK``
  bytes at a time into the destination, written here without datashard.
- ``direct:// read_into``: ``DirectBackend.read_into(key, dest)``.
- ``direct:// read_into bytearray``: the same into a ``bytearray`` (not page-aligned: every byte
  goes through the bounce buffer and is copied once).
- ``file:// read_into``: ``LocalBackend.read_into`` (buffered ``preadv``, page cache copy).

Goal (issue 2): ``direct://`` at least 0.9x the peer's throughput at no more than 0.1 CPU-s/GiB.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from datashard.storage._aligned import file_system_of
from datashard.storage.direct import DirectBackend, DirectConfig
from datashard.storage.local import LocalBackend, LocalConfig

GiB = 1 << 30
MiB = 1 << 20
#: Bytes per ``preadv`` in the plain O_DIRECT loop.
PEER_CHUNK = 64 * MiB
KEY = "bench/cold.bin"


def _make_file(backend: LocalBackend, size: int) -> str:
    path = os.path.join(backend.root, *KEY.split("/"))
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    block = os.urandom(4 * MiB)

    def chunks() -> Any:
        left = size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)

    backend.write(KEY, chunks())
    return path


def drop_cache(path: str) -> str:
    """Evict ``path`` from the page cache; return the method(s) that worked."""
    used = []
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        used.append("drop_caches")
    except OSError:
        pass
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        used.append("fadvise(DONTNEED)")
    finally:
        os.close(fd)
    return "+".join(used)


def _peer(path: str, dest: memoryview) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        pos = 0
        while pos < len(dest):
            n = os.preadv(fd, [dest[pos : pos + PEER_CHUNK]], pos)
            if n == 0:
                break
            pos += n
        return pos
    finally:
        os.close(fd)


def _measure(fn: Callable[[], int]) -> dict[str, float]:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    n = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user = r1.ru_utime - r0.ru_utime
    system = r1.ru_stime - r0.ru_stime
    return {"bytes": n, "wall_s": wall, "user_s": user, "sys_s": system, "cpu_s": user + system}


def _check(path: str, dest: memoryview, size: int) -> None:
    """Compare 64 random 4 KiB blocks (and the last bytes) of ``dest`` with the file."""
    rng = random.Random(7)
    with open(path, "rb") as f:
        for pos in [size - min(size, 4096)] + [rng.randrange(0, size) for _ in range(64)]:
            f.seek(pos)
            want = f.read(4096)
            if bytes(dest[pos : pos + len(want)]) != want:
                raise AssertionError(f"bytes at {pos} differ from the file")


def run(
    size_bytes: int = GiB, directory: str | None = None, repeats: int = 3
) -> list[dict[str, Any]]:
    """Run every case ``repeats`` times on a cold cache; one result dict per case (medians)."""
    directory = directory or os.path.join(tempfile.gettempdir(), "datashard-bench")
    local = LocalBackend(LocalConfig(path=directory))
    direct = DirectBackend(DirectConfig(path=directory))
    path = _make_file(local, size_bytes)
    fs = file_system_of(path)
    aligned = mmap.mmap(-1, size_bytes)
    aligned.write(b"\0" * size_bytes)  # pre-fault, so no case pays for page faults
    plain = bytearray(size_bytes)
    a_view, p_view = memoryview(aligned), memoryview(plain)
    cases: dict[str, tuple[Callable[[], int], memoryview]] = {
        "peer: O_DIRECT preadv loop": (lambda: _peer(path, a_view), a_view),
        "direct:// read_into": (lambda: direct.read_into(KEY, a_view), a_view),
        "direct:// read_into bytearray": (lambda: direct.read_into(KEY, p_view), p_view),
        "file:// read_into": (lambda: local.read_into(KEY, a_view), a_view),
    }
    names = list(cases)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    method = ""
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, view = cases[name]
            method = drop_cache(path)
            sample = _measure(fn)
            if sample["bytes"] != size_bytes:
                raise AssertionError(f"{name} read {sample['bytes']} of {size_bytes} bytes")
            _check(path, view, size_bytes)
            samples[name].append(sample)
    results: list[dict[str, Any]] = []
    for name in names:
        best = sorted(samples[name], key=lambda s: s["wall_s"])[len(samples[name]) // 2]
        gib = size_bytes / GiB
        results.append(
            {
                "case": name,
                "size_bytes": size_bytes,
                "wall_s": best["wall_s"],
                "mib_per_s": size_bytes / MiB / best["wall_s"],
                "cpu_s": best["cpu_s"],
                "user_s": best["user_s"],
                "sys_s": best["sys_s"],
                "cpu_s_per_gib": best["cpu_s"] / gib,
                "walls_s": [s["wall_s"] for s in samples[name]],
                "cold_method": method,
                "file_system": fs,
                "path": path,
            }
        )
    peer = results[0]["mib_per_s"]
    for row in results:
        row["throughput_vs_peer"] = row["mib_per_s"] / peer
    direct.close()
    a_view.release()
    p_view.release()
    aligned.close()
    return results


def _print(results: list[dict[str, Any]]) -> None:
    first = results[0]
    print(f"file: {first['path']} ({first['size_bytes'] / MiB:.0f} MiB, {first['file_system']})")
    print(f"cold cache by: {first['cold_method']}; median of {len(first['walls_s'])} runs")
    print(
        f"{'case':32} {'wall s':>7} {'MiB/s':>8} {'vs peer':>8} {'CPU s':>7} {'user':>6} "
        f"{'sys':>6} {'CPU s/GiB':>10}"
    )
    for r in results:
        print(
            f"{r['case']:32} {r['wall_s']:7.3f} {r['mib_per_s']:8.0f} "
            f"{r['throughput_vs_peer']:7.2f}x {r['cpu_s']:7.3f} {r['user_s']:6.3f} "
            f"{r['sys_s']:6.3f} {r['cpu_s_per_gib']:10.3f}"
        )
    d = next(r for r in results if r["case"] == "direct:// read_into")
    ok = d["throughput_vs_peer"] >= 0.9 and d["cpu_s_per_gib"] <= 0.1
    print(
        f"goal direct:// >= 0.9x peer at <= 0.1 CPU-s/GiB: {'MET' if ok else 'NOT MET'} "
        f"({d['throughput_vs_peer']:.2f}x, {d['cpu_s_per_gib']:.3f} CPU-s/GiB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", default=None, help="directory on the disk to test")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    _print(run(args.size_mib * MiB, args.dir, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
