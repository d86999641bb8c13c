"""The read path fetches what a scan needs and no more, and returns exactly the rows a whole-file
read would: projections fetch their column chunks only, filters skip row groups by statistics,
deletes and schema evolution apply per row group, batches stream in the size asked."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import ValidationError
from datashard.iceberg.expressions import col
from datashard.io.footer import FOOTERS
from datashard.storage.config import open_backend
from datashard.table.row_delta import RowDelta
from datashard.testing.faultproxy import FaultProxy

ROW_GROUPS = {"write.parquet.row-group-limit": "1000"}


def _wide(columns: int, rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    data = {"id": pa.array(np.arange(rows), pa.int64())}
    for i in range(columns - 1):
        data[f"c{i}"] = pa.array(rng.random(rows))
    return pa.table(data)


def _through_proxy(server: Any, bucket: str, uri: str, proxy: FaultProxy) -> Any:
    return open_backend(
        uri,
        endpoint_url=proxy.url,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        region=server.region,
        path_style=True,
    )


def _data_bytes(proxy: FaultProxy) -> tuple[int, int]:
    """(GET requests, bytes they asked for) on data files, from their Range headers."""
    requests = total = 0
    for (_, method, path), headers in zip(proxy.arrivals, proxy.headers, strict=True):
        if method != "GET" or "/data/" not in path:
            continue
        requests += 1
        found = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("range", ""))
        assert found is not None, f"a whole-object GET of {path}"
        start, end = found.groups()
        total += int(end) - int(start) + 1 if start else int(end)
    return requests, total


def _chunk_bytes(path: str, backend: Any, columns: list[str], row_groups: list[int]) -> int:
    key = backend.key_for(path)
    md = pq.read_metadata(pa.BufferReader(backend.read(key)))
    total = 0
    for i in row_groups:
        rg = md.row_group(i)
        for j in range(rg.num_columns):
            chunk = rg.column(j)
            if chunk.path_in_schema in columns:
                total += chunk.total_compressed_size
    return total


@pytest.fixture
def proxied(ceph_s3: Any, ceph_bucket: str, ceph_wh: Any) -> Any:
    proxy = FaultProxy(ceph_s3.endpoint_url).start()
    try:
        yield ceph_wh, _through_proxy(ceph_s3, ceph_bucket, ceph_wh.uri, proxy), proxy
    finally:
        proxy.stop()


def test_two_of_thirty_columns_fetch_their_chunks_and_the_footer_only(proxied: Any) -> None:
    wh, backend, proxy = proxied
    data = _wide(30, 20_000)
    create_table("t", Schema.from_arrow(data.schema), warehouse=wh.uri, **wh.options).append(data)
    table = load_table("t", warehouse=backend)
    (task,) = table.scan().plan_files()
    FOOTERS.clear()
    proxy.clear()
    got = table.scan(columns=["c3", "c17"]).to_arrow()
    assert got.equals(data.select(["c3", "c17"]))
    requests, fetched = _data_bytes(proxy)
    needed = _chunk_bytes(task.file_path, wh.backend, ["c3", "c17"], [0])
    size = task.file_size_in_bytes
    assert fetched <= 1.2 * needed + 64 * 1024 + 1  # the chunks and one footer read
    assert fetched < size / 8, (fetched, size)
    assert requests <= 3  # the footer, then the two chunks (concurrently)
    proxy.clear()  # a second read finds the footer in the process's cache
    assert table.scan(columns=["c3"]).to_arrow().equals(data.select(["c3"]))
    assert _data_bytes(proxy)[0] == 1


def test_a_filter_fetches_only_the_row_groups_its_statistics_allow(proxied: Any) -> None:
    wh, backend, proxy = proxied
    data = _wide(4, 10_000)
    t = create_table(
        "t", Schema.from_arrow(data.schema), warehouse=wh.uri, properties=ROW_GROUPS, **wh.options
    )
    t.append(data)
    table = load_table("t", warehouse=backend)
    (task,) = table.scan().plan_files()
    FOOTERS.clear()
    proxy.clear()
    expr = (col("id") >= 4200) & (col("id") < 4300)
    got = table.scan(filter=expr).to_arrow()
    assert got.equals(data.filter((pc.field("id") >= 4200) & (pc.field("id") < 4300)))
    _, fetched = _data_bytes(proxy)
    one = _chunk_bytes(task.file_path, wh.backend, data.column_names, [4])
    assert fetched <= 1.2 * one + 64 * 1024 + 1  # row group 4 of 10, and the footer
    proxy.clear()
    assert table.scan(filter=col("id") > 10**9).to_arrow().num_rows == 0
    assert _data_bytes(proxy)[0] == 0  # manifest statistics rule the file out: nothing read


# --------------------------------------------------------------------------------------------
# the same rows as a whole-file read

TYPES = Schema(
    0,
    [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "i", "type": "int", "required": False},
        {"id": 3, "name": "f", "type": "float", "required": False},
        {"id": 4, "name": "d", "type": "double", "required": False},
        {"id": 5, "name": "dec", "type": "decimal(12, 3)", "required": False},
        {"id": 6, "name": "day", "type": "date", "required": False},
        {"id": 7, "name": "ts", "type": "timestamp", "required": False},
        {"id": 8, "name": "tstz", "type": "timestamptz", "required": False},
        {"id": 9, "name": "s", "type": "string", "required": False},
        {"id": 10, "name": "b", "type": "binary", "required": False},
        {"id": 11, "name": "ok", "type": "boolean", "required": False},
        {"id": 12, "name": "t", "type": "time", "required": False},
    ],
)
EPOCH = dt.datetime(2024, 1, 1)


def _typed(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))

    def maybe(values: list[Any]) -> list[Any]:
        return [None if i % 13 == 0 else v for i, v in zip(ids, values, strict=True)]

    utc = dt.timezone.utc
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "i": pa.array(maybe([i % 500 - 250 for i in ids]), pa.int32()),
            "f": pa.array(
                maybe([float("nan") if i % 7 == 0 else i / 4 for i in ids]), pa.float32()
            ),
            "d": pa.array(maybe([float("nan") if i % 11 == 0 else -i / 3 for i in ids])),
            "dec": pa.array(maybe([Decimal(i) / 1000 for i in ids]), pa.decimal128(12, 3)),
            "day": pa.array(maybe([EPOCH.date() + dt.timedelta(days=i) for i in ids])),
            "ts": pa.array(
                maybe([EPOCH + dt.timedelta(minutes=i) for i in ids]), pa.timestamp("us")
            ),
            "tstz": pa.array(
                maybe([(EPOCH + dt.timedelta(seconds=i)).replace(tzinfo=utc) for i in ids]),
                pa.timestamp("us", tz="UTC"),
            ),
            "s": pa.array(maybe([f"s{i:06d}" for i in ids])),
            "b": pa.array(maybe([i.to_bytes(4, "big") for i in ids]), pa.binary()),
            "ok": pa.array(maybe([i % 3 == 0 for i in ids])),
            "t": pa.array(
                maybe([dt.time(i // 3600 % 24, i // 60 % 60, i % 60) for i in ids]), pa.time64("us")
            ),
        }
    )


FILTERS = [
    col("id") == 1234,
    (col("id") >= 2990) & (col("id") < 3020),
    col("i") < -240,
    col("i").isin([7, 8, 9]),
    col("f") > 700.0,
    col("f") == float("nan"),
    col("d") <= -990.0,
    col("dec") >= Decimal("4.9"),
    col("day") == (EPOCH.date() + dt.timedelta(days=2500)),
    col("ts") < EPOCH + dt.timedelta(minutes=100),
    col("tstz") > (EPOCH + dt.timedelta(seconds=4950)).replace(tzinfo=dt.timezone.utc),
    col("s") >= "s004990",
    col("b") == (4321).to_bytes(4, "big"),
    col("ok") == True,  # noqa: E712 - a filter expression, not a comparison
    col("t") < dt.time(0, 0, 30),
    col("s").is_null(),
    col("i").not_null() & (col("id") < 1500),
    (col("id") < 100) | (col("id") > 4900),
    col("id") != 5,
    col("s").not_in(["s000001", "s000002"]),
]


def _arrow_filter(expr: Any) -> Any:
    from datashard.iceberg.expressions import bind_schema, to_arrow_expression

    return to_arrow_expression(bind_schema(expr, TYPES))


@pytest.fixture(scope="module")
def typed_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, pa.Table]:
    root = tmp_path_factory.mktemp("typed")
    table = create_table("t", TYPES, warehouse=f"file://{root}", properties=ROW_GROUPS)
    whole = []
    for start in (0, 2500):
        part = _typed(start, 2500)
        table.append(part)
        whole.append(part)
    return table, pa.concat_tables(whole)


@pytest.mark.parametrize("expr", FILTERS, ids=repr)
def test_every_type_filters_to_the_rows_a_whole_file_read_keeps(
    typed_table: tuple[Any, pa.Table], expr: Any
) -> None:
    table, _ = typed_table
    whole = pa.concat_tables(
        pq.read_table(t.file_path.removeprefix("file://")) for t in table.scan().plan_files()
    )
    want = whole.filter(_arrow_filter(expr))
    got = table.scan(filter=expr).to_arrow()
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    for name in want.column_names:  # NaN != NaN: compare values as text
        assert [repr(v) for v in got.column(name).to_pylist()] == [
            repr(v) for v in want.column(name).to_pylist()
        ]
    batches = list(table.scan(filter=expr).to_batches(batch_size=100))
    assert sum(b.num_rows for b in batches) == want.num_rows
    assert table.scan(filter=expr).count() == want.num_rows


def test_a_selective_filter_decodes_few_row_groups(typed_table: tuple[Any, pa.Table]) -> None:
    table, _ = typed_table
    scan = table.scan(filter=(col("id") >= 4100) & (col("id") < 4110))
    readers = [scan._open(task) for task in scan.plan_files()]
    assert [r.row_groups() for r in readers] == [[1]]  # ids 2500..4999: group 1 has 3500..4499
    nan = table.scan(filter=col("f") > 1e9)
    assert [nan._open(t).row_groups() for t in nan.plan_files()] == []


def test_renamed_added_and_widened_columns_read_by_field_id(tmp_path: Path) -> None:
    schema = Schema(
        0,
        [
            {"id": 1, "name": "id", "type": "long", "required": True},
            {"id": 2, "name": "small", "type": "int", "required": False},
            {"id": 3, "name": "ratio", "type": "float", "required": False},
        ],
    )
    table = create_table("t", schema, warehouse=f"file://{tmp_path}", properties=ROW_GROUPS)
    table.append(
        pa.table(
            {
                "id": pa.array(range(3000), pa.int64()),
                "small": pa.array([i % 100 for i in range(3000)], pa.int32()),
                "ratio": pa.array([i / 2 for i in range(3000)], pa.float32()),
            }
        )
    )
    with table.update_schema() as u:
        u.rename_column("small", "bucket")
        u.update_column("bucket", "long")
        u.update_column("ratio", "double")
        u.add_column("tag", "string", default="old")
        u.add_column("note", "string")
    table = load_table("t", warehouse=f"file://{tmp_path}")
    got = table.scan(filter=(col("bucket") == 42) & (col("id") < 1500)).to_arrow()
    assert got.column("id").to_pylist() == [
        42,
        142,
        242,
        342,
        442,
        542,
        642,
        742,
        842,
        942,
        1042,
        1142,
        1242,
        1342,
        1442,
    ]
    assert got.schema.field("bucket").type == pa.int64()
    assert got.schema.field("ratio").type == pa.float64()
    assert set(got.column("tag").to_pylist()) == {"old"}
    assert got.column("note").null_count == got.num_rows
    assert table.scan(filter=col("tag") == "old").count() == 3000
    assert table.scan(filter=col("ratio") >= 1499.0).to_arrow().column("id").to_pylist() == [
        2998,
        2999,
    ]


def test_position_and_equality_deletes_apply_in_every_row_group(tmp_path: Path) -> None:
    schema = Schema(
        0,
        [
            {"id": 1, "name": "id", "type": "long", "required": True},
            {"id": 2, "name": "label", "type": "string", "required": False},
        ],
    )
    table = create_table("t", schema, warehouse=f"file://{tmp_path}", properties=ROW_GROUPS)
    labels = [None if i % 10 == 0 else f"l{i % 3}" for i in range(5000)]
    table.append(pa.table({"id": pa.array(range(5000), pa.int64()), "label": labels}))
    (task,) = table.scan().plan_files()
    gone = [0, 999, 1000, 1001, 2500, 4998, 4999]  # row group edges on both sides
    rd = RowDelta(table.backend, table._paths, table._loaded)
    rd.stage_position_deletes({task.file_path: gone}, {task.file_path: (0, {})})
    rd.stage_equality_deletes(pa.table({"label": pa.array(["l1"], pa.string())}), [2])
    rd.commit()
    table = load_table("t", warehouse=f"file://{tmp_path}")
    want = [i for i in range(5000) if i not in gone and labels[i] != "l1"]
    assert table.scan(columns=["id"]).to_arrow().column("id").to_pylist() == want
    expr = (col("id") >= 990) & (col("id") < 1010)
    assert table.scan(columns=["id"], filter=expr).to_arrow().column("id").to_pylist() == [
        i for i in want if 990 <= i < 1010
    ]
    streamed = [b.num_rows for b in table.scan(columns=["id"]).to_batches(batch_size=512)]
    assert streamed[:-1] == [512] * (len(streamed) - 1) and sum(streamed) == len(want)
    assert table.count() == len(want)
    # one planned file read alone (as a Dask or Ray worker does), whole or by row group
    scan = table.scan(columns=["id"], filter=col("id") >= 990)
    (task,) = scan.plan_files()
    assert scan.read_task(task).column("id").to_pylist() == [i for i in want if i >= 990]
    assert scan.read_task(task).schema == scan.output_schema()
    # row group 0 (ids 0-999) holds 990-998; row group 2 (2000-2999) is read whole but 2500
    picked = scan.read_task(task, row_groups=[0, 2]).column("id").to_pylist()
    assert picked == [i for i in want if 990 <= i < 1000 or 2000 <= i < 3000]
    assert scan.read_task(task, row_groups=[]).num_rows == 0


# --------------------------------------------------------------------------------------------
# streaming


def test_to_batches_yields_batches_of_the_size_asked_in_commit_order(tmp_path: Path) -> None:
    data = _wide(3, 2500)
    table = create_table(
        "t", Schema.from_arrow(data.schema), warehouse=f"file://{tmp_path}", properties=ROW_GROUPS
    )
    for start in range(0, 2500, 500):
        table.append(data.slice(start, 500))
    sizes = [b.num_rows for b in table.scan().to_batches(batch_size=700)]
    assert sizes == [700, 700, 700, 400]
    ids = pa.Table.from_batches(list(table.scan().to_batches(batch_size=700))).column("id")
    assert ids.to_pylist() == list(range(2500))
    reader = table.scan(columns=["id"]).to_arrow_batch_reader(batch_size=1000)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema.names == ["id"]
    assert [b.num_rows for b in reader] == [1000, 1000, 500]
    assert [b.num_rows for b in table.scan().to_batches()] == [500] * 5  # one per row group
    with pytest.raises(ValidationError, match="batch_size must be None or an int >= 1, got 0"):
        table.scan().to_batches(batch_size=0)


def test_a_stream_stopped_early_reads_no_further(tmp_path: Path) -> None:
    from datashard.testing.faults import FaultyBackend

    data = _wide(3, 10_000)
    create_table(
        "t", Schema.from_arrow(data.schema), warehouse=f"file://{tmp_path}", properties=ROW_GROUPS
    ).append(data)
    counting = FaultyBackend(open_backend(f"file://{tmp_path}"))
    table = load_table("t", warehouse=counting)
    FOOTERS.clear()
    counting.reset()
    stream = table.scan().to_batches(batch_size=100)
    assert next(stream).num_rows == 100
    stream.close()
    ranged = [m for m, k in counting.calls if m in ("read_ranges", "read_into") and "/data/" in k]
    assert 1 <= len(ranged) <= 5  # the row group yielded and a bounded read-ahead, of 10


def test_planning_a_filtered_scan_imports_no_pandas(tmp_path: Path) -> None:
    table = create_table("t", TYPES, warehouse=f"file://{tmp_path}")
    table.append(_typed(0, 50))
    code = textwrap.dedent(
        f"""
        import datetime as dt, sys
        from decimal import Decimal
        import datashard
        from datashard import col, load_table
        table = load_table("t", warehouse="file://{tmp_path}")
        utc = dt.timezone.utc
        expr = ((col("id") > 3) & (col("day") < dt.date(2030, 1, 1))
                & (col("ts") >= dt.datetime(2020, 1, 1)) & (col("s") == "x")
                & (col("tstz") < dt.datetime(2030, 1, 1, tzinfo=utc))
                & (col("dec") > Decimal("1.5")) & col("i").isin([1, 2]) & (col("d") < 2.0))
        tasks = list(table.scan(filter=expr).plan_files())
        print(len(tasks), "pandas" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.split() == ["0", "False"], out.stdout + out.stderr


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_a_local_file_is_read_in_the_chunks_needed_and_a_missing_one_is_not_found(
    tmp_path: Path,
) -> None:
    from datashard.errors import ObjectNotFoundError
    from datashard.io.parquet import open_data_file

    data = _wide(30, 20_000)
    table = create_table("t", Schema.from_arrow(data.schema), warehouse=f"file://{tmp_path}")
    table.append(data)
    (task,) = table.scan().plan_files()
    backend = open_backend(f"file://{tmp_path}")
    key = backend.key_for(task.file_path)
    fields = [table.schema().find_field(name) for name in ("c3", "c17")]
    reader = open_data_file(backend, key, fields, size=task.file_size_in_bytes)
    before = _rchar()
    got = reader.read()
    read = _rchar() - before
    assert got.equals(data.select(["c3", "c17"]))
    needed = _chunk_bytes(task.file_path, backend, ["c3", "c17"], [0])
    assert needed <= read <= 1.2 * needed + 64 * 1024, (read, needed)
    os.remove(tmp_path / key)  # the footer stays cached; the file is gone
    with pytest.raises(ObjectNotFoundError, match="data/"):
        open_data_file(backend, key, fields, size=task.file_size_in_bytes).read()
