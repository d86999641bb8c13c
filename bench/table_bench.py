"""Table benchmark: the same work through datashard, deltalake, lance and pyiceberg.

Workloads (issue 3), on the local disk and on Ceph RGW (started here, on 127.0.0.1):
  create; append 100 rows; append 10,000 rows; N sequential appends of 100 rows (median, and
  commits 1-10 against N-9..N); read 50,000 rows into pandas, and through plain pyarrow on the
  same files; a time-travel read; P processes x C appends x 10 rows (commits per second, rows
  lost); HTTP requests per warm append on S3 (counted by a loopback proxy).

Usage::

    .venv/bin/python bench/table_bench.py                      # everything, the issue's counts
    .venv/bin/python bench/table_bench.py --backends local --seq 200 --systems datashard,deltalake

Prints one table per backend with the ratio of each peer to datashard (peer / datashard: above
1 means datashard is faster for times, and for commits per second below 1 means faster).
``ds-nofsync`` is datashard on file:// with ``fsync=False`` (local runs only): atomic, not
crash-durable, the durability lance and delta-rs give on a local disk by default.
Peers are bench-only dependencies: bench/requirements.txt.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SYSTEMS = ("datashard", "ds-nofsync", "deltalake", "lance", "pyiceberg")


# --------------------------------------------------------------------------------------------
# where tables live


@dataclass
class Root:
    """A warehouse root: a local directory, or an S3 bucket prefix with its credentials."""

    kind: str  # "local" | "s3"
    path: str  # a directory, or "bucket/prefix"
    endpoint: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    region: str = "us-east-1"

    def uri(self, name: str) -> str:
        return f"{self.path}/{name}" if self.kind == "local" else f"s3://{self.path}/{name}"

    def with_endpoint(self, endpoint: str) -> Root:
        return Root(self.kind, self.path, endpoint, self.access_key, self.secret_key, self.region)

    def arrow_fs(self) -> Any:
        if self.kind == "local":
            return pa.fs.LocalFileSystem()
        return pa.fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            endpoint_override=self.endpoint,
            scheme="http",
        )


def rows(n: int, start: int = 0, writer: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "writer": pa.array([writer] * n, pa.int32()),
            "event": pa.array([f"event-{i % 17}" for i in ids], pa.string()),
            "value": pa.array([i * 0.5 for i in ids], pa.float64()),
        }
    )


SCHEMA = rows(1).schema


# --------------------------------------------------------------------------------------------
# the four systems behind one small interface


class System:
    name = ""

    def __init__(self, root: Root) -> None:
        self.root = root

    def create(self, name: str) -> Any: ...
    def open(self, name: str) -> Any: ...
    def append(self, handle: Any, table: pa.Table) -> Any: ...
    def read(self, handle: Any) -> Any: ...  # pandas
    def files(self, handle: Any) -> list[str]: ...
    def version(self, handle: Any) -> Any: ...
    def read_version(self, handle: Any, version: Any) -> Any: ...
    def count(self, handle: Any) -> int:
        return len(self.read(self.open_fresh(handle)))

    def open_fresh(self, handle: Any) -> Any:
        return handle


class Datashard(System):
    name = "datashard"

    def _options(self) -> dict[str, Any]:
        if self.root.kind == "local":
            return {}
        return {
            "endpoint_url": self.root.endpoint,
            "access_key_id": self.root.access_key,
            "secret_access_key": self.root.secret_key,
            "region": self.root.region,
            "path_style": True,
        }

    def _wh(self) -> str:
        return f"file://{self.root.path}" if self.root.kind == "local" else f"s3://{self.root.path}"

    def create(self, name: str) -> Any:
        from datashard import Schema, create_table

        return create_table(
            name,
            Schema.from_arrow(SCHEMA),
            warehouse=self._wh(),
            properties={"commit.retry.num-retries": "100"},
            **self._options(),
        )

    def open(self, name: str) -> Any:
        from datashard import load_table

        return load_table(name, warehouse=self._wh(), **self._options())

    def append(self, handle: Any, table: pa.Table) -> Any:
        return handle.append(table)

    def read(self, handle: Any) -> Any:
        return handle.to_pandas()

    def files(self, handle: Any) -> list[str]:
        return [t.file_path for t in handle.scan().plan_files()]

    def version(self, handle: Any) -> Any:
        return handle.current_snapshot().snapshot_id

    def read_version(self, handle: Any, version: Any) -> Any:
        return handle.scan(snapshot_id=version).to_pandas()

    def open_fresh(self, handle: Any) -> Any:
        return handle.refresh()


class DeltaLake(System):
    name = "deltalake"

    def _opts(self) -> dict[str, str] | None:
        if self.root.kind == "local":
            return None
        return {
            "AWS_ENDPOINT_URL": self.root.endpoint,
            "AWS_ACCESS_KEY_ID": self.root.access_key,
            "AWS_SECRET_ACCESS_KEY": self.root.secret_key,
            "AWS_REGION": self.root.region,
            "AWS_ALLOW_HTTP": "true",
            "AWS_CONDITIONAL_PUT": "etag",
            "AWS_S3_ADDRESSING_STYLE": "path",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
        }

    def create(self, name: str) -> Any:
        from deltalake import DeltaTable

        return DeltaTable.create(self.root.uri(name), schema=SCHEMA, storage_options=self._opts())

    def open(self, name: str) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(self.root.uri(name), storage_options=self._opts())

    def append(self, handle: Any, table: pa.Table) -> Any:
        from deltalake import write_deltalake

        write_deltalake(handle, table, mode="append")

    def read(self, handle: Any) -> Any:
        return handle.to_pandas()

    def files(self, handle: Any) -> list[str]:
        return list(handle.file_uris())

    def version(self, handle: Any) -> Any:
        return handle.version()

    def read_version(self, handle: Any, version: Any) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(
            handle.table_uri, version=version, storage_options=self._opts()
        ).to_pandas()

    def open_fresh(self, handle: Any) -> Any:
        handle.update_incremental()
        return handle


class Lance(System):
    name = "lance"

    def _opts(self) -> dict[str, str] | None:
        if self.root.kind == "local":
            return None
        return {
            "endpoint": self.root.endpoint,
            "access_key_id": self.root.access_key,
            "secret_access_key": self.root.secret_key,
            "region": self.root.region,
            "allow_http": "true",
        }

    def create(self, name: str) -> Any:
        import lance

        return lance.write_dataset(
            SCHEMA.empty_table(), self.root.uri(name), storage_options=self._opts()
        )

    def open(self, name: str) -> Any:
        import lance

        return lance.dataset(self.root.uri(name), storage_options=self._opts())

    def append(self, handle: Any, table: pa.Table) -> Any:
        import lance

        return lance.write_dataset(table, handle.uri, mode="append", storage_options=self._opts())

    def read(self, handle: Any) -> Any:
        import lance

        return lance.dataset(handle.uri, storage_options=self._opts()).to_table().to_pandas()

    def files(self, handle: Any) -> list[str]:
        return []  # lance files are not Parquet

    def version(self, handle: Any) -> Any:
        import lance

        return lance.dataset(handle.uri, storage_options=self._opts()).version

    def read_version(self, handle: Any, version: Any) -> Any:
        import lance

        return (
            lance.dataset(handle.uri, version=version, storage_options=self._opts())
            .to_table()
            .to_pandas()
        )


class PyIceberg(System):
    name = "pyiceberg"

    def _catalog(self) -> Any:
        from pyiceberg.catalog.sql import SqlCatalog

        props: dict[str, str] = {}
        if self.root.kind == "s3":
            # fsspec FileIO: pyarrow's multipart upload gets 411 from Ceph RGW
            props = {
                "s3.endpoint": self.root.endpoint,
                "s3.access-key-id": self.root.access_key,
                "s3.secret-access-key": self.root.secret_key,
                "s3.region": self.root.region,
                "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO",
            }
            warehouse = f"s3://{self.root.path}"
        else:
            warehouse = f"file://{self.root.path}"
        db = os.path.join(_catalog_dir(self.root), "catalog.db")
        catalog = SqlCatalog("bench", uri=f"sqlite:///{db}", warehouse=warehouse, **props)
        return catalog

    def create(self, name: str) -> Any:
        catalog = self._catalog()
        try:
            catalog.create_namespace("bench")
        except Exception:
            pass
        return catalog.create_table(f"bench.{name.replace('-', '_')}", schema=SCHEMA)

    def open(self, name: str) -> Any:
        return self._catalog().load_table(f"bench.{name.replace('-', '_')}")

    def append(self, handle: Any, table: pa.Table) -> Any:
        from pyiceberg.exceptions import CommitFailedException

        for _ in range(200):
            try:
                return handle.append(table)
            except CommitFailedException:
                handle.refresh()
        raise RuntimeError("pyiceberg: commit retries exhausted")

    def read(self, handle: Any) -> Any:
        return handle.scan().to_pandas()

    def files(self, handle: Any) -> list[str]:
        return [t.file.file_path for t in handle.scan().plan_files()]

    def version(self, handle: Any) -> Any:
        return handle.current_snapshot().snapshot_id

    def read_version(self, handle: Any, version: Any) -> Any:
        return handle.scan(snapshot_id=version).to_pandas()

    def open_fresh(self, handle: Any) -> Any:
        return handle.refresh()


def _catalog_dir(root: Root) -> str:
    d = os.path.join(tempfile.gettempdir(), "ds-bench-catalog-" + root.path.replace("/", "_"))
    os.makedirs(d, exist_ok=True)
    return d


class DatashardNoFsync(Datashard):
    """datashard on file:// with ``fsync=False``: atomic but not crash-durable writes, which is
    what lance's and delta-rs's local object store do by default (local runs only)."""

    name = "ds-nofsync"

    def _options(self) -> dict[str, Any]:
        return {"fsync": False} if self.root.kind == "local" else super()._options()


IMPLS: dict[str, type[System]] = {
    "datashard": Datashard,
    "ds-nofsync": DatashardNoFsync,
    "deltalake": DeltaLake,
    "lance": Lance,
    "pyiceberg": PyIceberg,
}
#: Systems that only make sense on some backends.
LOCAL_ONLY = {"ds-nofsync"}


# --------------------------------------------------------------------------------------------
# workloads


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _worker(
    system: str, root: Root, name: str, writer: int, commits: int, n: int, barrier: Any
) -> tuple[int, float, float]:
    """Append ``commits`` batches once every writer is ready (imports done, table loaded);
    (acknowledged commits, start, end of the loop)."""
    impl = IMPLS[system](root)
    handle = impl.open(name)
    done = 0
    barrier.wait(timeout=300)
    began = time.time()
    for c in range(commits):
        try:
            impl.append(handle, rows(n, start=writer * 1_000_000 + c * n, writer=writer))
            done += 1
        except Exception as exc:  # a peer that cannot commit concurrently: count it, go on
            print(
                f"  {system} writer {writer}: {type(exc).__name__}: {str(exc)[:120]}",
                file=sys.stderr,
            )
            if system not in ("datashard", "ds-nofsync", "pyiceberg"):
                handle = impl.open(name)
    return done, began, time.time()


def run_system(system: str, root: Root, args: argparse.Namespace) -> dict[str, float]:
    impl = IMPLS[system](root)
    out: dict[str, float] = {}
    tag = uuid.uuid4().hex[:6]

    parts = set(args.only.split(","))
    if "basic" in parts:
        _basic(impl, tag, out)
    if "seq" in parts:
        _sequential(impl, tag, args, out)
    if "read" in parts:
        _reads(impl, root, tag, args, out)
    if "contention" in parts and args.procs:
        _contention(system, impl, root, tag, args, out)
    return out


def _basic(impl: System, tag: str, out: dict[str, float]) -> None:
    out["create_s"], handle = timed(lambda: impl.create(f"c-{tag}"))
    out["append_100_s"] = statistics.median(
        timed(lambda: impl.append(handle, rows(100)))[0] for _ in range(3)
    )
    out["append_10k_s"] = statistics.median(
        timed(lambda: impl.append(handle, rows(10_000)))[0] for _ in range(3)
    )


def _sequential(impl: System, tag: str, args: argparse.Namespace, out: dict[str, float]) -> None:
    seq = impl.create(f"s-{tag}")
    lat = [
        timed(lambda i=i: impl.append(seq, rows(100, start=i * 100)))[0] for i in range(args.seq)
    ]
    out["seq_median_s"] = statistics.median(lat)
    out["seq_first10_s"] = statistics.mean(lat[:10])
    out["seq_last10_s"] = statistics.mean(lat[-10:])
    out["seq_age_ratio"] = out["seq_last10_s"] / out["seq_first10_s"]
    # medians of the same ten commits: one descheduled commit on a shared machine moves a mean
    out["seq_age_ratio_median"] = statistics.median(lat[-10:]) / statistics.median(lat[:10])
    if args.seq >= 200:  # after the metadata reached its retention bounds (100 snapshots)
        out["seq_101_110_s"] = statistics.mean(lat[100:110])
        out["seq_age_ratio_steady"] = out["seq_last10_s"] / out["seq_101_110_s"]


#: Reads of the 50,000 rows per system (ours and plain pyarrow, interleaved); medians reported.
READ_REPEATS = 7


def _reads(
    impl: System, root: Root, tag: str, args: argparse.Namespace, out: dict[str, float]
) -> None:
    rd = impl.create(f"r-{tag}")
    chunk = args.read_rows // 5
    impl.append(rd, rows(chunk, start=0))
    first = impl.version(impl.open_fresh(rd))
    for k in range(1, 5):
        impl.append(rd, rows(chunk, start=k * chunk))
    rd = impl.open_fresh(rd)
    files = impl.files(rd)
    fs = root.arrow_fs()
    paths = [_fs_path(p) for p in files]
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(READ_REPEATS):  # interleaved, each a fresh open: medians of the two
        took, df = timed(lambda: impl.read(impl.open_fresh(rd)))
        assert len(df) == args.read_rows, (impl.name, len(df))
        ours.append(took)
        if files:
            took, t = timed(lambda: pq.read_table(paths, filesystem=fs).to_pandas())
            assert len(t) == args.read_rows
            plain.append(took)
    out["read_50k_s"] = statistics.median(ours)
    if plain:
        out["read_50k_pyarrow_s"] = statistics.median(plain)
        out["read_vs_pyarrow"] = out["read_50k_s"] / out["read_50k_pyarrow_s"]
    out["time_travel_s"], old = timed(lambda: impl.read_version(rd, first))
    assert len(old) == chunk, (impl.name, len(old))


def _contention(
    system: str,
    impl: System,
    root: Root,
    tag: str,
    args: argparse.Namespace,
    out: dict[str, float],
) -> None:
    if args.procs:
        name = f"p-{tag}"
        impl.create(name)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(args.procs, mp_context=ctx) as pool:
            barrier = manager.Barrier(args.procs)
            futs = [
                pool.submit(_worker, system, root, name, w, args.proc_commits, 10, barrier)
                for w in range(args.procs)
            ]
            results = [f.result() for f in futs]
        acked = sum(r[0] for r in results)
        # from the common start to the last writer's last commit (start-up excluded)
        elapsed = max(r[2] for r in results) - min(r[1] for r in results)
        final = impl.count(impl.open(name))
        out["contention_commits_per_s"] = acked / elapsed
        out["contention_rows_lost"] = acked * 10 - final
        out["contention_commits_failed"] = args.procs * args.proc_commits - acked


def _fs_path(uri: str) -> str:
    for prefix in ("file://", "s3://", "s3a://"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri


def requests_per_append(system: str, root: Root) -> float:
    """HTTP requests of one warm append, counted by a proxy in front of the S3 server."""
    from datashard.testing.faultproxy import FaultProxy

    with FaultProxy(root.endpoint) as proxy:
        impl = IMPLS[system](root.with_endpoint(proxy.url))
        handle = impl.create(f"q-{uuid.uuid4().hex[:6]}")
        impl.append(handle, rows(100))
        impl.append(handle, rows(100))
        counts = []
        for i in range(3):
            before = sum(proxy.requests.values())
            impl.append(handle, rows(100, start=i * 100))
            counts.append(sum(proxy.requests.values()) - before)
    return statistics.median(counts)


# --------------------------------------------------------------------------------------------
# report


ROWS_ORDER = [
    "create_s",
    "append_100_s",
    "append_10k_s",
    "seq_median_s",
    "seq_first10_s",
    "seq_last10_s",
    "seq_age_ratio",
    "seq_age_ratio_median",
    "seq_101_110_s",
    "seq_age_ratio_steady",
    "read_50k_s",
    "read_50k_pyarrow_s",
    "read_vs_pyarrow",
    "time_travel_s",
    "contention_commits_per_s",
    "contention_rows_lost",
    "contention_commits_failed",
    "requests_per_append",
]


def report(backend: str, results: dict[str, dict[str, float]]) -> None:
    systems = list(results)
    print(f"\n== {backend} ==")
    header = f"{'metric':28}" + "".join(f"{s:>14}" for s in systems)
    header += "".join(f"{s + '/ds':>16}" for s in systems if s != "datashard")
    print(header)
    for metric in ROWS_ORDER:
        if not any(metric in r for r in results.values()):
            continue
        line = f"{metric:28}"
        for s in systems:
            v = results[s].get(metric)
            line += f"{'-':>14}" if v is None else f"{v:14.4f}"
        base = results.get("datashard", {}).get(metric)
        for s in systems:
            if s == "datashard":
                continue
            v = results[s].get(metric)
            ok = v is not None and base not in (None, 0)
            line += f"{v / base:16.2f}" if ok else f"{'-':>16}"  # type: ignore[operator]
        print(line)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backends", default="local,ceph")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--seq", type=int, default=1000, help="sequential appends (default 1000)")
    p.add_argument("--read-rows", type=int, default=50_000)
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--proc-commits", type=int, default=25)
    p.add_argument(
        "--only",
        default="basic,seq,read,contention,requests",
        help="workloads to run (default: all)",
    )
    a = p.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    for backend in a.backends.split(","):
        server = None
        tmp = tempfile.mkdtemp(prefix="ds-table-bench-")
        try:
            if backend == "local":
                root = Root("local", tmp)
            else:
                from datashard.testing.servers import new_s3_bucket, start_ceph

                server = start_ceph()
                bucket = new_s3_bucket(server, "bench")
                root = Root(
                    "s3",
                    f"{bucket}/b",
                    server.endpoint_url,
                    server.access_key_id,
                    server.secret_access_key,
                    server.region,
                )
            results: dict[str, dict[str, float]] = {}
            for s in systems:
                if s in LOCAL_ONLY and root.kind != "local":
                    continue
                print(f"[{backend}] {s} ...", file=sys.stderr, flush=True)
                try:
                    results[s] = run_system(s, root, a)
                    if root.kind == "s3" and "requests" in a.only:
                        results[s]["requests_per_append"] = requests_per_append(s, root)
                except Exception as exc:
                    print(f"[{backend}] {s} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    results.setdefault(s, {})
                report(backend, results)
        finally:
            if server is not None:
                from datashard.testing.servers import stop_server

                stop_server(server)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(_catalog_dir(Root("local", tmp)), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
