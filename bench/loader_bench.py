"""Row-group loading for training: datashard's loader against pyarrow and s3dlio, side by side.

One run, same files, same machine: a data set of about ``--size-mib`` MiB of uncompressed Parquet
in row groups of about ``--row-group-mib`` MiB (uncompressed, because s3dlio's wheel decodes only
uncompressed files; every peer reads the very same objects), read for two epochs by:

- ``datashard``: :class:`datashard.io.loader.RowGroupLoader` (footer cache, column-chunk ranges
  into one buffer, concurrent part GETs on S3);
- ``pyarrow.dataset``: a dataset over pyarrow's S3 (or local) file system, ``to_batches``;
- ``s3dlio``: ``create_async_loader(uri, {"format": "parquet", "decode": "arrow"})``: row groups
  decoded in Rust to Arrow IPC, opened zero-copy;
- locally also plain ``pyarrow.parquet`` reading row group after row group.

For each: seconds, MiB/s and CPU seconds per epoch, then ratios against datashard. On S3 a second
pass runs every peer through a counting loopback proxy (``datashard.testing.faultproxy``) and
prints the requests each made per epoch (that pass is slower; its times are not reported).

Runs Ceph RGW itself (``datashard.testing.servers.start_ceph``) unless ``--skip-s3``.
Peers to install for the bench only: ``pip install -r bench/requirements.txt``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from datashard.io.loader import RowGroupLoader
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend

MiB = 1024 * 1024
FEATURES = 15  # float32 features + an int64 id: 68 bytes a row


def make_files(size_mib: int, row_group_mib: int, files: int) -> list[bytes]:
    """``files`` uncompressed Parquet files totalling about ``size_mib`` MiB."""
    row_bytes = 8 + 4 * FEATURES
    rows_per_group = max(1, row_group_mib * MiB // row_bytes)
    groups_total = max(files, round(size_mib / row_group_mib))
    rng = np.random.default_rng(0)
    out, first = [], 0
    for f in range(files):
        groups = groups_total // files + (1 if f < groups_total % files else 0)
        rows = groups * rows_per_group
        cols: dict[str, Any] = {"id": np.arange(first, first + rows, dtype=np.int64)}
        block = rng.random((rows, FEATURES), dtype=np.float32)
        for j in range(FEATURES):
            cols[f"f{j}"] = block[:, j]
        sink = io.BytesIO()
        pq.write_table(
            pa.table(cols),
            sink,
            row_group_size=rows_per_group,
            compression="NONE",
            use_dictionary=False,
            write_statistics=False,
        )
        out.append(sink.getvalue())
        first += rows
    return out


def _epoch(fn: Callable[[], Iterator[pa.RecordBatch]]) -> dict[str, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    rows = nbytes = 0
    for batch in fn():
        rows += batch.num_rows
        nbytes += batch.nbytes
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,
        "rows": rows,
        "mib": nbytes / MiB,
    }


def _peers_s3(
    backend: StorageBackend,
    endpoint: str,
    creds: dict[str, str],
    bucket: str,
    prefix: str,
    keys: list[str],
    prefetch: int,
) -> dict[str, Callable[[], Callable[[], Iterator[pa.RecordBatch]]]]:
    """Factories: each makes the per-epoch iterator of one peer (state kept across epochs)."""

    def ours() -> Callable[[], Iterator[pa.RecordBatch]]:
        loader = RowGroupLoader([(backend, k) for k in keys], prefetch=prefetch)
        epoch = iter(range(1_000))
        return lambda: loader.iter_epoch(next(epoch))

    def pyarrow_dataset() -> Callable[[], Iterator[pa.RecordBatch]]:
        fs = pafs.S3FileSystem(
            access_key=creds["key"],
            secret_key=creds["secret"],
            region=creds["region"],
            endpoint_override=endpoint,
            scheme="http",
        )
        dataset = pads.dataset(
            [f"{bucket}/{prefix}/{k}" for k in keys], filesystem=fs, format="parquet"
        )
        return lambda: dataset.to_batches(batch_readahead=prefetch)

    def s3dlio_loader() -> Callable[[], Iterator[pa.RecordBatch]]:
        import s3dlio

        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID=creds["key"],
            AWS_SECRET_ACCESS_KEY=creds["secret"],
            AWS_REGION=creds["region"],
        )

        def epoch() -> Iterator[pa.RecordBatch]:
            loader = s3dlio.create_async_loader(
                f"s3://{bucket}/{prefix}/data/",
                {"format": "parquet", "decode": "arrow", "prefetch": prefetch},
            )
            for item in loader:
                yield from pa.ipc.open_stream(pa.py_buffer(memoryview(item)))

        return epoch

    return {"datashard": ours, "pyarrow.dataset": pyarrow_dataset, "s3dlio": s3dlio_loader}


def _peers_local(
    directory: Path, keys: list[str], prefetch: int
) -> dict[str, Callable[[], Callable[[], Iterator[pa.RecordBatch]]]]:
    paths = [str(directory / k) for k in keys]

    def ours(scheme: str) -> Callable[[], Callable[[], Iterator[pa.RecordBatch]]]:
        def make() -> Callable[[], Iterator[pa.RecordBatch]]:
            backend = open_backend(f"{scheme}://{directory}")
            loader = RowGroupLoader([(backend, k) for k in keys], prefetch=prefetch)
            epoch = iter(range(1_000))
            return lambda: loader.iter_epoch(next(epoch))

        return make

    def plain() -> Callable[[], Iterator[pa.RecordBatch]]:
        def epoch() -> Iterator[pa.RecordBatch]:
            for path in paths:
                parquet = pq.ParquetFile(path)
                for rg in range(parquet.num_row_groups):
                    yield from parquet.read_row_group(rg).to_batches()

        return epoch

    def dataset() -> Callable[[], Iterator[pa.RecordBatch]]:
        data = pads.dataset(paths, format="parquet")
        return lambda: data.to_batches(batch_readahead=prefetch)

    def s3dlio_loader() -> Callable[[], Iterator[pa.RecordBatch]]:
        import s3dlio

        def epoch() -> Iterator[pa.RecordBatch]:
            loader = s3dlio.create_async_loader(
                f"file://{directory}/data/",
                {"format": "parquet", "decode": "arrow", "prefetch": prefetch},
            )
            for item in loader:
                yield from pa.ipc.open_stream(pa.py_buffer(memoryview(item)))

        return epoch

    return {
        "datashard file://": ours("file"),
        "datashard direct://": ours("direct"),
        "pyarrow.parquet": plain,
        "pyarrow.dataset": dataset,
        "s3dlio": s3dlio_loader,
    }


def _drop_caches(directory: Path) -> str:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        for path in directory.rglob("*.parquet"):
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        return "fadvise"


def _run(
    peers: dict[str, Callable[[], Callable[[], Iterator[pa.RecordBatch]]]],
    epochs: int,
    before_first: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    results = []
    for name, factory in peers.items():
        try:
            epoch_fn = factory()
            for e in range(epochs):
                if e == 0 and before_first is not None:
                    before_first()
                row = _epoch(epoch_fn)
                results.append({"peer": name, "epoch": e + 1, **row})
        except Exception as exc:  # a peer that breaks is reported, not fatal to the run
            results.append({"peer": name, "epoch": 0, "error": f"{type(exc).__name__}: {exc}"})
    return results


def _print(title: str, results: list[dict[str, Any]], base: str, expect_rows: int) -> None:
    print(f"\n== {title}")
    print(f"{'peer':<22}{'epoch':>6}{'s':>9}{'MiB/s':>10}{'cpu s':>9}  {'vs ' + base:>22}")
    ref = {r["epoch"]: r["seconds"] for r in results if r["peer"] == base and "seconds" in r}
    for r in results:
        if "error" in r:
            print(f"{r['peer']:<22}{'':>6}  failed: {r['error'][:200]}")
            continue
        ratio = ref.get(r["epoch"], float("nan")) / r["seconds"]
        flag = "" if r["rows"] == expect_rows else f"  ROWS {r['rows']} != {expect_rows}"
        speed = r["mib"] / r["seconds"]
        print(
            f"{r['peer']:<22}{r['epoch']:>6}{r['seconds']:>9.3f}{speed:>10.0f}"
            f"{r['cpu_s']:>9.2f}  {f'x{ratio:.2f}':>22}{flag}"
        )
    print(f"(ratio > 1: the peer is faster than {base}; < 1: {base} is faster)")


def bench_local(datasets: list[bytes], prefetch: int, epochs: int, directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "data").mkdir(parents=True)
    keys = []
    for i, data in enumerate(datasets):
        key = f"data/part-{i:03d}.parquet"
        (directory / key).write_bytes(data)
        keys.append(key)
    rows = sum(pq.read_metadata(directory / k).num_rows for k in keys)
    how: list[str] = []
    results = _run(
        _peers_local(directory, keys, prefetch),
        epochs,
        before_first=lambda: how.append(_drop_caches(directory)),
    )
    _print(
        f"local disk {directory} (epoch 1 cold via {how[0] if how else '?'}; then warm)",
        results,
        "pyarrow.parquet",
        rows,
    )
    shutil.rmtree(directory, ignore_errors=True)


def bench_s3(datasets: list[bytes], prefetch: int, epochs: int) -> None:
    from datashard.testing.faultproxy import FaultProxy
    from datashard.testing.servers import start_ceph, stop_server

    server = start_ceph()
    try:
        creds = {
            "key": server.access_key_id,
            "secret": server.secret_access_key,
            "region": server.region,
        }
        prefix = "loader-bench"

        def backend_at(endpoint: str) -> StorageBackend:
            return open_backend(
                f"s3://{server.bucket}/{prefix}",
                endpoint_url=endpoint,
                region=server.region,
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
            )

        backend = backend_at(server.endpoint_url)
        keys = []
        for i, data in enumerate(datasets):
            key = f"data/part-{i:03d}.parquet"
            backend.write(key, data)
            keys.append(key)
        rows = sum(pq.read_metadata(io.BytesIO(d)).num_rows for d in datasets)
        peers = _peers_s3(
            backend, server.endpoint_url, creds, server.bucket, prefix, keys, prefetch
        )
        _print("S3 on Ceph RGW over loopback", _run(peers, epochs), "datashard", rows)

        print("\n== requests per epoch on S3 (through a counting proxy)")
        with FaultProxy(server.endpoint_url) as proxy:
            proxied = backend_at(proxy.url)
            counted = _peers_s3(proxied, proxy.url, creds, server.bucket, prefix, keys, prefetch)
            for name, factory in counted.items():
                if name == "s3dlio":  # it keeps its first endpoint per process: use a child
                    _count_s3dlio_child(
                        proxy, creds, f"s3://{server.bucket}/{prefix}/data/", prefetch, epochs
                    )
                    continue
                try:
                    epoch_fn = factory()
                    for e in range(epochs):
                        before = dict(proxy.requests)
                        _epoch(epoch_fn)
                        diff = {
                            m: n - before.get(m, 0)
                            for m, n in proxy.requests.items()
                            if n - before.get(m, 0)
                        }
                        print(f"{name:<22} epoch {e + 1}: {diff}")
                except Exception as exc:
                    print(f"{name:<22} failed: {type(exc).__name__}: {exc}"[:300])
    finally:
        stop_server(server)


_CHILD = """
import os, sys, pyarrow as pa, s3dlio
uri, prefetch, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for e in range(epochs):
    loader = s3dlio.create_async_loader(
        uri, {"format": "parquet", "decode": "arrow", "prefetch": prefetch})
    rows = sum(b.num_rows for item in loader
               for b in pa.ipc.open_stream(pa.py_buffer(memoryview(item))))
    print(rows, flush=True)
    sys.stdin.readline()
"""


def _count_s3dlio_child(
    proxy: Any, creds: dict[str, str], uri: str, prefetch: int, epochs: int
) -> None:
    """Run s3dlio's epochs in a child whose endpoint is the proxy; count each epoch."""
    import subprocess

    env = dict(
        os.environ,
        AWS_ENDPOINT_URL=proxy.url,
        AWS_ACCESS_KEY_ID=creds["key"],
        AWS_SECRET_ACCESS_KEY=creds["secret"],
        AWS_REGION=creds["region"],
    )
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, uri, str(prefetch), str(epochs)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        for e in range(epochs):
            before = dict(proxy.requests)
            line = child.stdout.readline().strip()
            diff = {
                m: n - before.get(m, 0) for m, n in proxy.requests.items() if n - before.get(m, 0)
            }
            print(f"{'s3dlio':<22} epoch {e + 1}: {diff} ({line or 'no'} rows)")
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        child.stdin.close()
        child.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--row-group-mib", type=int, default=64)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/datashard-loader-bench"))
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args(argv)
    datasets = make_files(args.size_mib, args.row_group_mib, args.files)
    total = sum(map(len, datasets)) / MiB
    print(
        f"data: {len(datasets)} files, {total:.0f} MiB uncompressed Parquet, row groups of "
        f"~{args.row_group_mib} MiB, {args.epochs} epochs, prefetch {args.prefetch}"
    )
    if not args.skip_local:
        bench_local(datasets, args.prefetch, args.epochs, args.dir)
    if not args.skip_s3:
        bench_s3(datasets, args.prefetch, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
