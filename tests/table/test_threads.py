"""The shared pool behind commits and scans: bounded, ordered, errors in turn, no threads per
call."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from datashard import Schema, create_table
from datashard.table.process import bounded_map


def test_bounded_map_keeps_order_and_the_bound() -> None:
    lock = threading.Lock()
    running, peak = 0, 0

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01 * (i % 3))
        with lock:
            running -= 1
        return i * i

    assert list(bounded_map(work, range(20), 3)) == [i * i for i in range(20)]
    assert 1 <= peak <= 3


def test_bounded_map_raises_when_the_failed_items_turn_comes() -> None:
    def work(i: int) -> int:
        if i == 4:
            raise ValueError("item 4 is bad")
        return i

    results = bounded_map(work, range(8), 2)
    assert [next(results) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="item 4"):
        next(results)


def test_repeated_scans_start_no_new_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long", "required": True}])
    table = create_table("t", schema, warehouse=f"file://{tmp_path}/wh")
    for i in range(6):
        table.append_records([{"n": i}])
    for _ in range(3):  # the pool has its threads now
        assert len(table.to_pandas()) == 6
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    for _ in range(20):
        assert sorted(table.to_pandas()["n"]) == list(range(6))
    assert started == []  # six files per scan read on the shared pool's threads


def test_a_thread_outliving_the_main_one_still_loads_appends_and_reads(tmp_path: Path) -> None:
    """Python shuts executors down when the main thread ends, before it joins other threads;
    work from such a thread runs inline instead of failing with RuntimeError."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import threading, time
        from datashard import Schema, create_table, load_table
        wh = "file://{tmp_path}/wh"
        schema = Schema(schema_id=0, fields=[{{"id": 1, "name": "n", "type": "long",
                                               "required": True}}])
        create_table("t", schema, warehouse=wh).append_records([{{"n": 0}}])

        def late():
            time.sleep(0.5)  # the main thread has returned: the pools are shut down
            table = load_table("t", warehouse=wh)
            table.append_records([{{"n": 1}}])
            print("rows", sorted(table.to_pandas()["n"]), flush=True)

        threading.Thread(target=late).start()
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "rows [0, 1]" in done.stdout, done.stderr


def test_a_child_forked_while_the_manifest_cache_is_busy_can_scan(tmp_path: Path) -> None:
    import os
    import signal

    from datashard.table.process import MANIFEST_CACHE

    schema = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long", "required": True}])
    table = create_table("t", schema, warehouse=f"file://{tmp_path}/wh")
    table.append_records([{"n": 7}])
    lock = MANIFEST_CACHE._lock
    assert lock.acquire(timeout=5)  # as if a scan thread were inside the cache at fork time
    try:
        pid = os.fork()
        if pid == 0:  # the child: a scan must not wait on the parent's lock
            ok = False
            try:
                signal.alarm(20)  # a child stuck on the lock dies instead of hanging the run
                ok = table.to_pandas()["n"].tolist() == [7]
            finally:
                os._exit(0 if ok else 1)
    finally:
        lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_to_arrow_reads_at_most_max_workers_files_at_once(tmp_path: Path) -> None:
    from datashard.table.scan import Scan
    from datashard.testing.faults import FaultyBackend

    schema = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long", "required": True}])
    table = create_table("t", schema, warehouse=f"file://{tmp_path}/wh")
    for i in range(12):
        table.append_records([{"n": i}])
    lock = threading.Lock()
    running, peak = 0, 0

    class Slow(FaultyBackend):
        def read(self, key: str) -> bytes:
            nonlocal running, peak
            if not key.endswith(".parquet"):
                return super().read(key)
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.02)
            try:
                return super().read(key)
            finally:
                with lock:
                    running -= 1

    slow = Slow(table.backend)
    rows = Scan(slow, table.metadata, max_workers=3).to_arrow().column("n").to_pylist()
    assert rows == list(range(12)) and peak <= 3  # the bound (overlap itself is timing)
