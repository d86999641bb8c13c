"""The shared pool behind commits and scans: bounded, ordered, errors in turn, no threads per
call."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from datashard import Schema, create_table
from datashard._threads import bounded_map


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
    schema = Schema(schema_id=0, fields=[{"id": 1, "name": "n", "type": "long",
                                          "required": True}])
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
