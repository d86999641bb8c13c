"""The scan read path: bytes fetched and time, datashard against PyIceberg and pyarrow.dataset.

One run, the same tables, side by side, on the local disk and on Ceph RGW (started here unless
``--skip-s3``):

- (a) projection: 2 of 60 double columns of ~300k rows in 6 data files;
- (b) selective filter: ``id`` in a range of 1,000 rows out of ``--filter-rows`` (a few
  million) rows in 20 files, sorted by ``id`` (manifest statistics leave one file, row-group
  statistics one row group);
- (c) streaming ``--stream-rows`` rows with ``batch_size=65536`` (local disk, each reader in a
  child process): peak RSS above the baseline, against one decoded row group times the
  read-ahead;
- (d) a 50k-row table read whole into pandas against plain ``pyarrow.parquet`` (local disk).

Bytes: on Ceph, the sum of the ``Range`` lengths (or object sizes) of the GETs of data files
counted at a loopback proxy (``datashard.testing.faultproxy``) in front of the server; on the
local disk, the process's ``rchar`` (``/proc/self/io``). "needed" is the column chunks of the
row groups that hold matching rows plus the footers. Times: best of ``--repeat`` warm runs.
Ratios are peer / datashard for time and fetched / needed for bytes.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from datashard import Schema, col, create_table, load_table
from datashard.io.footer import FOOTERS
from datashard.storage.config import open_backend


def _rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def _wide(rows: int, columns: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {"id": np.arange(rows, dtype=np.int64)}
    for i in range(columns - 1):
        data[f"c{i}"] = rng.random(rows)
    return pa.table(data)


class Place:
    """Where the tables live: a warehouse URI, its options, and the peers' file system."""

    def __init__(self, name: str, uri: str, options: dict[str, Any], proxy: Any = None) -> None:
        self.name, self.uri, self.options, self.proxy = name, uri, options, proxy
        self.sizes: dict[str, int] = {}

    def pyiceberg_props(self) -> dict[str, str]:
        if not self.options:
            return {}
        return {
            "s3.endpoint": self.options["endpoint_url"],
            "s3.access-key-id": self.options["access_key_id"],
            "s3.secret-access-key": self.options["secret_access_key"],
            "s3.region": self.options["region"],
            "s3.force-virtual-addressing": "false",
        }

    def filesystem(self) -> tuple[pafs.FileSystem, Callable[[str], str]]:
        if not self.options:
            return pafs.LocalFileSystem(), lambda uri: uri.removeprefix("file://")
        fs = pafs.S3FileSystem(
            access_key=self.options["access_key_id"],
            secret_key=self.options["secret_access_key"],
            region=self.options["region"],
            endpoint_override=self.options["endpoint_url"],
            scheme="http",
        )
        return fs, lambda uri: uri.removeprefix("s3://")

    def measure(self, fn: Callable[[], Any]) -> int:
        """Bytes of data files ``fn`` fetched."""
        if self.proxy is None:
            before = _rchar()
            fn()
            return _rchar() - before
        self.proxy.clear()
        fn()
        total = 0
        for (_, method, path), headers in zip(self.proxy.arrivals, self.proxy.headers, strict=True):
            if method != "GET" or "/data/" not in path:
                continue
            rng = headers.get("range", "")
            if rng.startswith("bytes="):
                start, _, end = rng[6:].partition("-")
                total += int(end) - int(start) + 1 if start else int(end)
            else:
                total += next((s for p, s in self.sizes.items() if path.endswith(p)), 0)
        return total


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _needed(place: Place, table: Any, columns: list[str], keep: Callable[[Any, int], bool]) -> int:
    """Column chunk bytes of the row groups ``keep`` accepts, plus the footers."""
    backend = open_backend(place.uri, **place.options)
    total = 0
    for task in table.scan().plan_files():
        key = backend.key_for(task.file_path)
        md = pq.read_metadata(pa.BufferReader(backend.read(key)))
        total += md.serialized_size + 8
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            if not keep(rg, i):
                continue
            for j in range(rg.num_columns):
                if rg.column(j).path_in_schema in columns:
                    total += rg.column(j).total_compressed_size
    return total


def _peers(
    place: Place, table: Any, columns: list[str], ds_filter: Any, pi_filter: Any, expr: Any
) -> dict[str, Callable[[], pa.Table]]:
    from pyiceberg.table import StaticTable

    static = StaticTable.from_metadata(table.metadata_location, properties=place.pyiceberg_props())
    fs, path_of = place.filesystem()
    files = [path_of(t.file_path) for t in table.scan().plan_files()]
    dataset = pads.dataset(files, filesystem=fs, format="parquet")
    fresh = load_table("t", warehouse=place.uri, **place.options)

    def ours() -> pa.Table:
        return fresh.scan(columns=columns, filter=expr).to_arrow()

    def pyiceberg() -> pa.Table:
        kwargs: dict[str, Any] = {"selected_fields": tuple(columns)}
        if pi_filter is not None:
            kwargs["row_filter"] = pi_filter
        return static.scan(**kwargs).to_arrow()

    def pyarrow_dataset() -> pa.Table:
        return dataset.to_table(columns=columns, filter=ds_filter)

    return {"datashard": ours, "pyiceberg": pyiceberg, "pyarrow.dataset": pyarrow_dataset}


def _report(
    title: str, place: Place, peers: dict[str, Callable[[], pa.Table]], needed: int, repeat: int
) -> None:
    print(f"\n{title} [{place.name}]  needed {needed / 2**20:.2f} MiB")
    rows = None
    base = None
    for name, fn in peers.items():
        FOOTERS.clear()
        got = fn()  # warm-up, and the row count
        rows = got.num_rows if rows is None else rows
        assert got.num_rows == rows, (name, got.num_rows, rows)
        FOOTERS.clear()
        fetched = place.measure(fn)
        seconds = _best(fn, repeat)
        base = seconds if base is None else base
        print(
            f"  {name:16s} {seconds * 1000:8.1f} ms  x{seconds / base:5.2f} time   "
            f"{fetched / 2**20:8.2f} MiB  x{fetched / needed:6.2f} bytes/needed   rows {rows}"
        )


def projection(place: Place, repeat: int) -> None:
    schema = Schema.from_arrow(_wide(1, 60, 0).schema)
    table = create_table("t", schema, warehouse=place.uri, **place.options)
    for f in range(6):
        table.append(_wide(50_000, 60, f))
    _record_sizes(place, table)
    columns = ["c7", "c41"]
    needed = _needed(place, table, columns, lambda rg, i: True)
    _report(
        "(a) 2 of 60 columns, 300k rows, 6 files",
        place,
        _peers(place, table, columns, None, None, None),
        needed,
        repeat,
    )


def selective(place: Place, rows: int, repeat: int) -> None:
    data = _wide(rows // 20, 4, 1)
    table = create_table(
        "t",
        Schema.from_arrow(data.schema),
        warehouse=place.uri,
        properties={"write.parquet.row-group-limit": "100000"},
        **place.options,
    )
    for f in range(20):
        part = data.set_column(0, "id", pa.array(np.arange(f * len(data), (f + 1) * len(data))))
        table.append(part)
    _record_sizes(place, table)
    lo = rows // 2 + 12_345
    expr = (col("id") >= lo) & (col("id") < lo + 1000)
    ds_filter = (pads.field("id") >= lo) & (pads.field("id") < lo + 1000)
    pi_filter = f"id >= {lo} and id < {lo + 1000}"

    def keep(rg: Any, i: int) -> bool:
        s = rg.column(0).statistics
        return bool(s.min <= lo + 999 and s.max >= lo)

    columns = list(data.column_names)
    needed = _needed(place, table, columns, keep)
    peers = _peers(place, table, columns, ds_filter, pi_filter, expr)
    _report(f"(b) filter keeping 1,000 of {rows:,} rows, 20 files", place, peers, needed, repeat)


def _record_sizes(place: Place, table: Any) -> None:
    for t in table.scan().plan_files():
        place.sizes[t.file_path.split("/", 3)[-1]] = t.file_size_in_bytes


_STREAM_CHILD = """
import os, sys, time
import pyarrow.dataset as pads
from datashard import load_table
which, uri = sys.argv[1], sys.argv[2]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
table = load_table("t", warehouse=uri)
files = [t.file_path.removeprefix("file://") for t in table.scan().plan_files()]
dataset = pads.dataset(files, format="parquet")
base = rss()
peak = base
t0 = time.perf_counter()
rows = 0
if which == "datashard":
    batches = table.scan().to_batches(batch_size=65536)
else:
    batches = dataset.to_batches(batch_size=65536)
for b in batches:
    rows += b.num_rows
    peak = max(peak, rss())
print(rows, peak - base, time.perf_counter() - t0)
"""


def streaming(uri: str, rows: int) -> None:
    data = _wide(rows // 5, 8, 3)
    table = create_table(
        "t",
        Schema.from_arrow(data.schema),
        warehouse=uri,
        properties={"write.parquet.row-group-limit": "250000"},
    )
    for _ in range(5):
        table.append(data)
    one_group = data.slice(0, 250_000).nbytes
    from datashard.table.scan import READ_AHEAD

    print(
        f"\n(c) streaming {rows:,} rows, batch_size=65536 [local]: one row group "
        f"{one_group / 2**20:.1f} MiB decoded, read-ahead {READ_AHEAD}; bound: the row group "
        "yielded and those read ahead, each fetched and decoded"
    )
    bound = (1 + READ_AHEAD) * 2 * one_group
    for which in ("datashard", "pyarrow.dataset"):
        out = subprocess.run(
            [sys.executable, "-c", _STREAM_CHILD, which, uri],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout.split()
        n, peak, seconds = int(out[0]), int(out[1]), float(out[2])
        print(
            f"  {which:16s} {seconds:6.2f} s  peak RSS +{peak / 2**20:7.1f} MiB = "
            f"x{peak / one_group:5.2f} one row group, x{peak / bound:4.2f} the bound   rows {n:,}"
        )


def to_pandas(uri: str, repeat: int) -> None:
    data = _wide(50_000, 20, 4)
    table = create_table("t", Schema.from_arrow(data.schema), warehouse=uri)
    table.append(data)
    (path,) = [t.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    fresh = load_table("t", warehouse=uri)
    ours = _best(lambda: fresh.to_pandas(), repeat)
    plain = _best(lambda: pq.read_table(path).to_pandas(), repeat)
    print(
        f"\n(d) 50k rows x 20 columns into pandas [local]: datashard {ours * 1000:.1f} ms, "
        f"pyarrow.parquet {plain * 1000:.1f} ms: x{ours / plain:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--filter-rows", type=int, default=4_000_000)
    parser.add_argument("--stream-rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(
            [
                lambda p: projection(p, args.repeat),
                lambda p: selective(p, args.filter_rows, args.repeat),
            ]
        ):
            run(Place("local", f"file://{tmp}/wh{i}", {}))
        streaming(f"file://{tmp}/stream", args.stream_rows)
        to_pandas(f"file://{tmp}/pandas", args.repeat)
    if args.skip_s3:
        return 0
    from datashard.testing.faultproxy import FaultProxy
    from datashard.testing.servers import start_ceph, stop_server

    server = start_ceph()
    try:
        with FaultProxy(server.endpoint_url) as proxy:
            options = {
                "endpoint_url": proxy.url,
                "access_key_id": server.access_key_id,
                "secret_access_key": server.secret_access_key,
                "region": server.region,
                "path_style": True,
            }
            projection(Place("ceph", f"s3://{server.bucket}/a", options, proxy), args.repeat)
            selective(
                Place("ceph", f"s3://{server.bucket}/b", options, proxy),
                args.filter_rows,
                args.repeat,
            )
    finally:
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
