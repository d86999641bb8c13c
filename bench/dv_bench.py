"""Deletion vectors (format v3): decoding and encoding the deleted positions of one data file.

For each shape of deletes in a data file of ``--rows`` rows (default 10,000,000): datashard's
decoder of a ``deletion-vector-v1`` blob (checks length, magic, CRC-32, then decodes the 64-bit
Roaring bitmap with numpy), against two peers run side by side in this process:

- pyroaring (CRoaring, C): ``BitMap64.deserialize`` then ``to_array`` into numpy, no checks;
- the format v2 equivalent: datashard's reader of a Parquet position delete file holding the
  same positions (``read_position_deletes``).

Prints the median time of ``--repeat`` runs per decoder, the blob and file sizes, and the ratios
(peer / datashard). A benchmark, not a test: it asserts only that all three decode the same
positions.

Then encoding: datashard's writer of the blob (:func:`deletion_vector_blob`, numpy) against
pyroaring building a ``BitMap64`` from the positions, ``run_optimize`` and ``serialize`` plus
the CRC (what :func:`_blob` does); it asserts the bytes are identical.

    .venv/bin/python bench/dv_bench.py
    .venv/bin/python bench/dv_bench.py --rows 1000000 --repeat 9
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyroaring import BitMap64

from datashard.iceberg.puffin import deletion_vector_blob, deletion_vector_positions
from datashard.io.deletes import read_position_deletes

PATH = "s3://bucket/t/data/00000-0-data.parquet"


def _blob(positions: np.ndarray) -> bytes:
    bitmap = BitMap64(positions.tolist())
    bitmap.run_optimize()
    body = bytes.fromhex("D1D33964") + bitmap.serialize()
    return struct.pack(">I", len(body)) + body + struct.pack(">I", zlib.crc32(body))


def _parquet(positions: np.ndarray) -> bytes:
    table = pa.table(
        {
            "file_path": pa.array([PATH] * len(positions), pa.string()),
            "pos": pa.array(positions, pa.int64()),
        },
        schema=pa.schema(
            [
                pa.field("file_path", pa.string(), False, {b"PARQUET:field_id": b"2147483546"}),
                pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": b"2147483545"}),
            ]
        ),
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _median(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    n = args.rows
    shapes = {
        "sparse 0.1%": np.sort(rng.choice(n, n // 1000, replace=False)),
        "random 10%": np.sort(rng.choice(n, n // 10, replace=False)),
        "every other row": np.arange(0, n, 2),
        "one long range": np.arange(n // 4, n // 2),
    }
    print(f"== decoding the deleted positions of one data file of {n:,} rows ==")
    print(
        f"{'deletes':16} {'positions':>10} {'DV KB':>8} {'parquet KB':>10} {'datashard ms':>12} "
        f"{'pyroaring ms':>12} {'parquet ms':>10} {'pyroaring/ds':>12} {'parquet/ds':>10}"
    )
    for name, positions in shapes.items():
        positions = positions.astype(np.int64)
        blob, parquet = _blob(positions), _parquet(positions)
        ours_s, ours = _median(lambda b=blob: deletion_vector_positions(b, "bench"), args.repeat)
        roar_s, roar = _median(
            lambda b=blob: np.frombuffer(BitMap64.deserialize(b[8:-4]).to_array(), np.uint64),
            args.repeat,
        )
        pq_s, by_path = _median(lambda d=parquet: read_position_deletes(d, "bench"), args.repeat)
        assert np.array_equal(ours, positions)
        assert np.array_equal(roar.astype(np.int64), positions)
        assert np.array_equal(by_path[PATH], positions)
        print(
            f"{name:16} {len(positions):>10,} {len(blob) / 1024:>8.1f} "
            f"{len(parquet) / 1024:>10.1f} {ours_s * 1000:>12.2f} {roar_s * 1000:>12.2f} "
            f"{pq_s * 1000:>10.2f} "
            f"{roar_s / ours_s:>12.2f} {pq_s / ours_s:>10.2f}"
        )
    print(f"\n== encoding the deletion vector of one data file of {n:,} rows ==")
    print(f"{'deletes':16} {'datashard ms':>12} {'pyroaring ms':>12} {'pyroaring/ds':>12}")
    for name, positions in shapes.items():
        positions = positions.astype(np.int64)
        ours_s, mine = _median(lambda p=positions: deletion_vector_blob(p), args.repeat)
        roar_s, theirs = _median(lambda p=positions: _blob(p), args.repeat)
        assert mine == theirs
        print(f"{name:16} {ours_s * 1000:>12.2f} {roar_s * 1000:>12.2f} {roar_s / ours_s:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
