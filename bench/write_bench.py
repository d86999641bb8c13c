"""Write benchmark: one large append, side by side with the peers that write the same data.

5,000,000 rows x 8 columns (int64 id, int64 user, two float64, int32, timestamp, bool, a short
string), about 330 MB of Arrow data, written once by each of:

- ``datashard``: ``table.append`` into a new table (streamed data files, all cores);
- ``ds-nofsync`` (local disk only): the same with ``fsync=False``, atomic but not crash-durable,
  the durability every peer here gives on a local disk (none of them fsyncs);
- ``pq.write_table``: one Parquet file with zstd (the same codec), the floor a table format
  adds its bookkeeping to;
- ``pyiceberg``: ``table.append`` (SQLite catalog);
- ``deltalake``: ``write_deltalake``;
- ``lance``: ``lance.write_dataset``.

Every run is a fresh subprocess that builds the input first, then measures the write alone:
wall seconds, the ratio to ``pq.write_table`` in the same run, peak RSS above the RSS with the
input built (``/proc/self/clear_refs`` resets the peak), and CPU seconds / wall seconds (above 1
means more than one core worked); on the local disk also the megabytes written. Each system runs
``--repeat`` times, in turns; the best time (with its CPU figure) and the smallest peak are
reported. On the local disk by default; ``--backends local,ceph``
adds Ceph RGW (started here, on 127.0.0.1; pq.write_table then encodes to memory and uploads
with boto3's managed upload, as pyarrow's own S3 upload gets HTTP 411 from Ceph RGW).
``azurite`` and ``fake-gcs`` run datashard alone on those emulators (its peak memory there is
the point: the emulators are far slower than a real service).

Usage::

    .venv/bin/python bench/write_bench.py                       # local disk, 5M rows, 2 turns
    .venv/bin/python bench/write_bench.py --rows 1000000 --backends local,ceph

Peers are bench-only dependencies: bench/requirements.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

SYSTEMS = ("datashard", "ds-nofsync", "pq.write_table", "pyiceberg", "deltalake", "lance")
#: Systems that only make sense on the local disk.
LOCAL_ONLY = {"ds-nofsync"}
#: A single run is stopped after this many seconds (the whole bench stays bounded).
RUN_TIMEOUT = 120.0


def make_input(rows: int) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    names = pa.array([f"user-{i:04d}" for i in range(1000)])
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "user": pa.array(rng.integers(0, 1_000_000, rows, dtype=np.int64)),
            "price": pa.array(rng.random(rows)),
            "score": pa.array(rng.normal(size=rows)),
            "qty": pa.array(rng.integers(0, 1000, rows, dtype=np.int32)),
            "ts": pa.array(
                np.int64(1_700_000_000_000_000) + np.arange(rows, dtype=np.int64) * 1000,
                pa.timestamp("us"),
            ),
            "flag": pa.array(rng.random(rows) < 0.5),
            "name": names.take(pa.array(rng.integers(0, 1000, rows))),
        }
    )


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _writer(system: str, root: dict[str, str], table: Any) -> Any:
    """A function that writes ``table`` once (anything made before it is not timed)."""
    import pyarrow as pa

    local = root["kind"] == "local"
    where = root["path"]
    if system in ("datashard", "ds-nofsync"):
        from datashard import Schema, create_table

        opts: dict[str, Any] = {"fsync": False} if system == "ds-nofsync" else {}
        if root["kind"] == "az":
            opts = {
                "account_name": root["account"],
                "account_key": root["secret"],
                "account_url": root["endpoint"],
            }
        elif root["kind"] == "gs":
            opts = {"endpoint": root["endpoint"], "project": root["project"], "anonymous": True}
        elif not local:
            opts = {
                "endpoint_url": root["endpoint"],
                "access_key_id": root["key"],
                "secret_access_key": root["secret"],
                "region": "us-east-1",
                "path_style": True,
            }
        scheme = {"local": "file", "s3": "s3", "az": "az", "gs": "gs"}[root["kind"]]
        wh = f"{scheme}://{where}"
        t = create_table("w", Schema.from_arrow(table.schema), warehouse=wh, **opts)
        return lambda: t.append(table)
    if system == "pq.write_table":
        import pyarrow.parquet as pq

        if local:
            return lambda: pq.write_table(table, f"{where}/one.parquet", compression="zstd")
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=root["endpoint"],
            aws_access_key_id=root["key"],
            aws_secret_access_key=root["secret"],
            region_name="us-east-1",
        )
        bucket, _, prefix = where.partition("/")

        def write_and_upload() -> None:
            # pyarrow's own S3 multipart upload gets HTTP 411 from Ceph RGW: encode to memory,
            # then boto3's managed (multipart, concurrent) upload
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            client.upload_fileobj(pa.BufferReader(sink.getvalue()), bucket, f"{prefix}/one.parquet")

        return write_and_upload
    if system == "pyiceberg":
        from pyiceberg.catalog.sql import SqlCatalog

        props: dict[str, str] = {}
        if not local:
            props = {
                "s3.endpoint": root["endpoint"],
                "s3.access-key-id": root["key"],
                "s3.secret-access-key": root["secret"],
                "s3.region": "us-east-1",
                "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO",
            }
        wh = f"file://{where}" if local else f"s3://{where}"
        db = tempfile.mkdtemp(prefix="ds-write-bench-cat-")
        catalog = SqlCatalog("bench", uri=f"sqlite:///{db}/c.db", warehouse=wh, **props)
        catalog.create_namespace("bench")
        t = catalog.create_table("bench.w", schema=table.schema)
        return lambda: t.append(table)
    if system == "deltalake":
        from deltalake import write_deltalake

        uri = where if local else f"s3://{where}/delta"
        storage = None
        if not local:
            storage = {
                "AWS_ENDPOINT_URL": root["endpoint"],
                "AWS_ACCESS_KEY_ID": root["key"],
                "AWS_SECRET_ACCESS_KEY": root["secret"],
                "AWS_REGION": "us-east-1",
                "AWS_ALLOW_HTTP": "true",
                "AWS_S3_ADDRESSING_STYLE": "path",
            }
        return lambda: write_deltalake(uri, table, storage_options=storage)
    if system == "lance":
        import lance

        uri = where if local else f"s3://{where}/lance"
        storage = None
        if not local:
            storage = {
                "endpoint": root["endpoint"],
                "access_key_id": root["key"],
                "secret_access_key": root["secret"],
                "region": "us-east-1",
                "allow_http": "true",
            }
        return lambda: lance.write_dataset(table, uri, storage_options=storage)
    raise ValueError(f"unknown system {system!r}")


def child(system: str, rows: int, root: dict[str, str]) -> dict[str, float]:
    """Run in a fresh process: build the input, set the writer up, time one write."""
    import gc

    table = make_input(rows)
    write = _writer(system, root, table)
    gc.collect()
    base_kb = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    write()
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    peak_kb = _rss_kb("VmHWM")
    written = 0
    if root["kind"] == "local":
        for folder, _, names in os.walk(root["path"]):
            written += sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    return {
        "written_mb": written / 1e6,
        "seconds": wall,
        "peak_mb": max(0, peak_kb - base_kb) / 1024,
        "cores": cpu / wall,
        "input_mb": table.nbytes / 1e6,
    }


def run_one(system: str, rows: int, root: dict[str, str]) -> dict[str, float]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps([system, rows, root])],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def report(backend: str, rows: int, results: dict[str, dict[str, float]]) -> None:
    floor = results.get("pq.write_table", {}).get("seconds")
    first = next(iter(results.values()), {})
    print(f"\n{backend}: {rows:,} rows x 8 columns ({first.get('input_mb', 0):.0f} MB of Arrow)")
    print(f"{'system':<16}{'seconds':>9}{'/ pq':>7}{'peak MB':>9}{'cpu/wall':>10}{'MB out':>8}")
    for name, r in results.items():
        if not r:
            print(f"{name:<16}{'failed':>9}")
            continue
        ratio = f"{r['seconds'] / floor:.2f}" if floor else "-"
        print(
            f"{name:<16}{r['seconds']:>9.2f}{ratio:>7}{r['peak_mb']:>9.0f}{r['cores']:>10.2f}"
            f"{r['written_mb']:>8.0f}"
        )


def _runs_on(system: str, kind: str) -> bool:
    if kind in ("az", "gs"):
        return system == "datashard"
    return system not in LOCAL_ONLY or kind == "local"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--backends", default="local")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        system, rows, root = json.loads(a.child)
        print(json.dumps(child(system, rows, root)))
        return
    systems = a.systems.split(",")
    for backend in a.backends.split(","):
        server = None
        try:
            base: dict[str, str] = {"kind": "local"}
            if backend == "ceph":
                from datashard.testing.servers import new_s3_bucket, start_ceph

                server = start_ceph()
                base = {
                    "kind": "s3",
                    "bucket": new_s3_bucket(server, "wbench"),
                    "endpoint": server.endpoint_url,
                    "key": server.access_key_id,
                    "secret": server.secret_access_key,
                }
            elif backend == "azurite":
                from datashard.testing.servers import new_azure_container, start_azurite

                server = start_azurite()
                base = {
                    "kind": "az",
                    "bucket": new_azure_container(server, "wbench"),
                    "endpoint": server.endpoint,
                    "account": server.account_name,
                    "secret": server.account_key,
                }
            elif backend == "fake-gcs":
                from datashard.testing.servers import new_gcs_bucket, start_fake_gcs

                server = start_fake_gcs()
                base = {
                    "kind": "gs",
                    "bucket": new_gcs_bucket(server, "wbench"),
                    "endpoint": server.endpoint,
                    "project": server.project,
                }
            runs = [s for s in systems if _runs_on(s, base["kind"])]
            results: dict[str, dict[str, float]] = {s: {} for s in runs}
            for turn in range(a.repeat):
                for s in runs:
                    print(f"[{backend}] {s} turn {turn + 1} ...", file=sys.stderr, flush=True)
                    tmp = tempfile.mkdtemp(prefix="ds-write-bench-")
                    if base["kind"] == "local":
                        root = {**base, "path": tmp}
                    else:
                        root = {**base, "path": f"{base['bucket']}/{s}-{turn}"}
                    try:
                        r = run_one(s, a.rows, root)
                    except Exception as exc:
                        print(f"[{backend}] {s} failed: {exc}", file=sys.stderr)
                        continue
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                    best = results[s]
                    if not best or r["seconds"] < best["seconds"]:  # the best run's figures
                        results[s] = {**r, "peak_mb": min(r["peak_mb"], best.get("peak_mb", 1e9))}
                    else:
                        best["peak_mb"] = min(best["peak_mb"], r["peak_mb"])
            report(backend, a.rows, results)
        finally:
            if server is not None:
                from datashard.testing.servers import stop_server

                stop_server(server)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
