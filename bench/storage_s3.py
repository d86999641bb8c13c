"""Benchmark: the S3 backend against its peers on Ceph RGW over loopback (not a test).

In one run, on the same server and the same object:

- a 256 MiB object read into one preallocated buffer by ``S3Backend.read_into``; boto3
  ``get_object()["Body"].read()``; s3fs ``cat_file``; obstore with 16 concurrent range GETs whose
  results are copied into a buffer;
- 1,000 small (1 KiB) PUTs, then GETs of the same keys, through ``S3Backend`` and plain boto3.

Each measurement is the best of ``repeats`` rounds (the rounds interleave the readers, so drift
hits them alike); ratios say how many times as fast ``read_into`` is as each peer, and how
the small-object loop compares with plain boto3.

Server: ``DATASHARD_BENCH_S3_ENDPOINT`` (with ``DATASHARD_BENCH_S3_ACCESS_KEY`` and
``DATASHARD_BENCH_S3_SECRET_KEY``) names a running one; otherwise a single-node Ceph cluster is
started for the run (``datashard.testing.servers.start_ceph``) and stopped by PID afterwards.
Never point this at moto: moto's ranged GETs cost time proportional to the whole object.

    .venv/bin/python -m bench.storage_s3 [--size-mib 256] [--repeats 3] [--small 1000]

Needs obstore and s3fs (bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from datashard.storage.s3 import S3Backend, S3Config

MiB = 1024 * 1024
ACCESS, SECRET = "benchkey", "benchsecretvalue123"  # defaults for a server named by env


@contextlib.contextmanager
def s3_server() -> Iterator[tuple[str, str, str]]:
    """``(endpoint, access_key, secret_key)`` of the server to measure (see the docstring)."""
    endpoint = os.environ.get("DATASHARD_BENCH_S3_ENDPOINT")
    if endpoint:
        yield (
            endpoint,
            os.environ.get("DATASHARD_BENCH_S3_ACCESS_KEY", ACCESS),
            os.environ.get("DATASHARD_BENCH_S3_SECRET_KEY", SECRET),
        )
        return
    from datashard.testing.servers import start_ceph, stop_server

    server = start_ceph()
    try:
        yield server.endpoint_url, server.access_key_id, server.secret_access_key
    finally:
        stop_server(server)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _obstore_reader(endpoint: str, access: str, secret: str, bucket: str) -> Any:
    from obstore import get_range_async
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=endpoint,
        access_key_id=access,
        secret_access_key=secret,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    def read(key: str, buffer: bytearray, parts: int = 16) -> None:
        size = len(buffer)
        step = -(-size // parts)
        view = memoryview(buffer)

        async def one(start: int) -> None:
            end = min(size, start + step)
            data = await get_range_async(store, key, start=start, end=end)
            view[start:end] = memoryview(data)

        async def all_parts() -> None:
            await asyncio.gather(*(one(s) for s in range(0, size, step)))

        asyncio.run(all_parts())

    return read


def run(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    size_mib: int = 256,
    repeats: int = 3,
    small: int = 1000,
    small_size: int = 1024,
    read_part_size: int | None = None,
    max_concurrency: int | None = None,
) -> list[dict[str, Any]]:
    """Measure everything on ``endpoint``; one dict per reader: name, seconds, MB/s, CPU, ratio."""
    import s3fs

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    raw = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=BotoConfig(
            max_pool_connections=64,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    raw.create_bucket(Bucket=bucket)
    size = size_mib * MiB
    options: dict[str, Any] = {}
    if read_part_size:
        options["read_part_size"] = read_part_size
    if max_concurrency:
        options["max_concurrency"] = max_concurrency
    backend = S3Backend(
        S3Config(
            bucket=bucket,
            endpoint_url=endpoint,
            access_key_id=access_key,
            secret_access_key=secret_key,
            **options,
        )
    )
    key = "big.bin"
    payload = os.urandom(MiB) * size_mib
    backend.write(key, payload)
    fs = s3fs.S3FileSystem(
        key=access_key,
        secret=secret_key,
        endpoint_url=endpoint,
        client_kwargs={"region_name": "us-east-1"},
        use_listings_cache=False,
    )
    obstore_read = _obstore_reader(endpoint, access_key, secret_key, bucket)
    buffer = bytearray(size)

    def ours() -> None:
        assert backend.read_into(key, buffer) == size

    def boto_read() -> None:
        assert len(raw.get_object(Bucket=bucket, Key=key)["Body"].read()) == size

    def s3fs_read() -> None:
        assert len(fs.cat_file(f"{bucket}/{key}")) == size

    def obstore() -> None:
        obstore_read(key, buffer)

    readers: dict[str, Callable[[], None]] = {
        "datashard read_into": ours,
        "obstore 16 range GETs": obstore,
        "boto3 get_object().read()": boto_read,
        "s3fs cat_file": s3fs_read,
    }
    best: dict[str, tuple[float, float]] = {}
    for fn in readers.values():  # warm: connections, credentials, code paths
        fn()
    for _ in range(repeats):
        for name, fn in readers.items():
            wall, cpu = _timed(fn)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
    ours_wall = best["datashard read_into"][0]
    rows: list[dict[str, Any]] = []
    for name, (wall, cpu) in best.items():
        rows.append(
            {
                "group": f"read {size_mib} MiB",
                "name": name,
                "seconds": wall,
                "mb_per_s": size / wall / 1e6,
                "cpu_seconds": cpu,
                "datashard_speedup": wall / ours_wall,
            }
        )
    buffer[:] = bytes(size)  # the peers wrote last: check datashard's own bytes
    ours()
    rows[0]["verified"] = buffer == payload

    # -- small objects ---------------------------------------------------------------------
    body = os.urandom(small_size)
    keys = [f"small/{i:05d}" for i in range(small)]

    def ours_small() -> None:
        for k in keys:
            backend.write(k, body)
        for k in keys:
            assert backend.read(k) == body

    def boto_small() -> None:
        for k in keys:
            raw.put_object(Bucket=bucket, Key=k, Body=body)
        for k in keys:
            assert raw.get_object(Bucket=bucket, Key=k)["Body"].read() == body

    small_best: dict[str, tuple[float, float]] = {}
    for _ in range(max(1, repeats - 1)):
        for name, fn in (("datashard write+read", ours_small), ("boto3 put+get", boto_small)):
            wall, cpu = _timed(fn)
            if name not in small_best or wall < small_best[name][0]:
                small_best[name] = (wall, cpu)
    boto_wall = small_best["boto3 put+get"][0]
    for name, (wall, cpu) in small_best.items():
        rows.append(
            {
                "group": f"{small} x {small_size} B PUT then GET",
                "name": name,
                "seconds": wall,
                "ops_per_s": 2 * small / wall,
                "cpu_seconds": cpu,
                "speed_vs_boto3": boto_wall / wall,
            }
        )
    backend.delete_many(keys + [key])
    raw.delete_bucket(Bucket=bucket)
    backend.close()
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            print(f"\n{group}")
        if "mb_per_s" in row:
            print(
                f"  {row['name']:<28} {row['seconds']:7.3f} s {row['mb_per_s']:8.0f} MB/s "
                f"cpu {row['cpu_seconds']:6.2f} s   "
                f"datashard {row['datashard_speedup']:.2f}x as fast"
                + ("" if row.get("verified", True) else "  (BYTES WRONG)")
            )
        else:
            print(
                f"  {row['name']:<28} {row['seconds']:7.3f} s {row['ops_per_s']:8.0f} op/s "
                f"cpu {row['cpu_seconds']:6.2f} s   {row['speed_vs_boto3']:.2f}x boto3's speed"
            )
    reads = {r["name"]: r["seconds"] for r in rows if "mb_per_s" in r}
    ours = reads["datashard read_into"]
    print(
        f"\ngoals: read_into >= 0.9x obstore: {reads['obstore 16 range GETs'] / ours:.2f}x; "
        f">= 2x s3fs: {reads['s3fs cat_file'] / ours:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--read-part-mib", type=int, default=0, help="default: S3Config's")
    parser.add_argument("--concurrency", type=int, default=0, help="default: S3Config's")
    args = parser.parse_args()
    with s3_server() as (endpoint, access, secret):
        rows = run(
            endpoint,
            access,
            secret,
            size_mib=args.size_mib,
            repeats=args.repeats,
            small=args.small,
            read_part_size=args.read_part_mib * MiB or None,
            max_concurrency=args.concurrency or None,
        )
    print_rows(rows)


if __name__ == "__main__":
    main()
