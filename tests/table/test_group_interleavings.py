"""Group commit under every interleaving hypothesis finds: exactly once, after every step.

Writers run the real commit code in threads against a store whose every call from a writer
waits until the test lets it through, with a fault chosen by hypothesis: go through, fail
before reaching the store, take effect but lose the answer, or crash the writer (its later
calls do nothing, as in a dead process). After every step the test reads the store as a
reader would and checks that no data file is live twice and that every live file exists; at
the end, that each acknowledged append is in the table exactly once and each that raised an
error saying nothing landed is absent.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datashard as ds
from datashard.errors import (
    CommitRetriesExhaustedError,
    CommitStateUnknownError,
    CommitTimeoutError,
    StorageError,
    TransientStorageError,
)
from datashard.iceberg.manifest_codec import read_manifest, read_manifest_list
from datashard.storage.base import ObjectMeta, ObjectWriter
from datashard.storage.memory import MemoryBackend, MemoryConfig
from datashard.table.group import FOLDED, folded_commits
from datashard.table.versions import TablePaths, load_newest

#: which writer and which of its appends the calling code works for
APPEND: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "append", default=None
)

GO, FAIL, LOSE, CRASH = "go", "fail", "lose", "crash"


class Crash(BaseException):
    """The writer's process died (not an ``Exception``: nothing in the package catches it)."""


@dataclass
class Step:
    append: tuple[int, int]
    op: str
    key: str
    released: threading.Event = field(default_factory=threading.Event)
    action: str = GO


class SteppedBackend(MemoryBackend):
    """A memory store whose calls made for an append wait for the scheduler."""

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__(config)
        self.cond = threading.Condition()
        self.pending: list[Step] = []
        self.crashed: set[int] = set()
        #: data file key -> the append that wrote it
        self.owner: dict[str, tuple[int, int]] = {}

    def gate(self, op: str, key: str) -> str:
        who = APPEND.get()
        if who is None:
            return GO
        if who[0] in self.crashed:
            raise Crash()
        step = Step(who, op, key)
        with self.cond:
            self.pending.append(step)
            self.cond.notify_all()
        step.released.wait()
        if step.action == CRASH:
            self.crashed.add(who[0])
            raise Crash()
        if step.action == FAIL:
            raise TransientStorageError(f"injected: {op} {key} failed before the store")
        return step.action

    def _call(self, op: str, key: str, fn: Any, *args: Any) -> Any:
        action = self.gate(op, key)
        out = fn(*args)
        if action == LOSE:
            raise TransientStorageError(f"injected: {op} {key} took effect, answer lost")
        return out

    def read(self, key: str) -> bytes:
        return self._call("read", key, super().read, key)  # type: ignore[no-any-return]

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self._call("read", key, super().read_range, key, start, end)  # type: ignore[no-any-return]

    def head(self, key: str) -> ObjectMeta:
        return self._call("head", key, super().head, key)  # type: ignore[no-any-return]

    def write(self, key: str, data: Any) -> None:
        self._call("write", key, super().write, key, data)

    def put_if_absent(self, key: str, data: bytes) -> None:
        self._call("create", key, super().put_if_absent, key, data)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self._call("list", prefix, lambda: list(super(SteppedBackend, self).list(prefix)))  # type: ignore[no-any-return]

    def delete(self, key: str) -> None:
        self._call("delete", key, super().delete, key)

    def open_output(self, key: str) -> ObjectWriter:
        who = APPEND.get()
        if who is not None:
            self.owner[key] = who
        return super().open_output(key)


def live_files(store: MemoryBackend, paths: TablePaths) -> tuple[list[str], list[str]]:
    """The current snapshot's data files (with repeats) and the folded commit ids of every
    retained snapshot (with repeats), read straight from the store."""
    loaded = load_newest(store, paths)
    if loaded is None:
        return [], []
    md = loaded.metadata
    folded: list[str] = []
    for snap in md.snapshots:
        folded += sorted(folded_commits(snap))
    current = md.current_snapshot()
    files: list[str] = []
    if current is not None:
        rows = read_manifest_list(store.read(store.key_for(current.manifest_list)), "list")
        for m in rows:
            for entry in read_manifest(store.read(store.key_for(m.manifest_path)), "m"):
                if entry.status != 2:
                    files.append(store.key_for(entry.data_file.file_path))
    return files, folded


WRITERS, APPENDS = 4, 3


def key_of(append: tuple[int, int]) -> str:
    """The idempotency key of an append in the keyed schedules: writers 0 and 1 make the same
    appends, as two attempts of one task would; the others' keys are their own."""
    w, j = append
    return f"task-{0 if w < 2 else w}-{j}"


def run_schedule(
    choices: list[tuple[int, str]], max_wait_ms: int = 60_000, keyed: bool = False
) -> tuple[dict[tuple[int, int], str], list[str], int]:
    """Run the writers on ``choices`` ((which pending call, what happens to it), in turn;
    then every call goes through): the appends' outcomes, the commit ids the snapshots name,
    and how many snapshots folded other appends in. With ``keyed``, every append carries the
    idempotency key :func:`key_of` gives: each key must land at most once, and exactly once
    if an append with it was acknowledged."""
    name = f"stepped-{uuid.uuid4().hex[:8]}"
    store = SteppedBackend(MemoryConfig(name=name))
    table = ds.create_table(
        "t",
        pa.schema([("w", pa.int64()), ("j", pa.int64())]),
        warehouse=store,
        properties={
            "commit.group.enabled": "true",
            "commit.retry.min-wait-ms": "0",
            "commit.retry.max-wait-ms": "0",
            "commit.retry.num-retries": "3",
            "commit.group.max-wait-ms": str(max_wait_ms),
            "commit.group.clock-skew-ms": "0",
        },
    )
    paths = TablePaths("t")
    outcome: dict[tuple[int, int], str] = {}
    finished: list[int] = []

    def writer(w: int) -> None:
        try:
            t = ds.load_table("t", warehouse=store)
            for j in range(APPENDS):
                token = APPEND.set((w, j))
                try:
                    key = key_of((w, j)) if keyed else None
                    t.append(pa.table({"w": [w], "j": [j]}), idempotency_key=key)
                    outcome[(w, j)] = "acked"
                except Crash:
                    outcome[(w, j)] = "crashed"
                    return
                except CommitStateUnknownError:
                    outcome[(w, j)] = "unknown"
                except (CommitRetriesExhaustedError, CommitTimeoutError, StorageError):
                    outcome[(w, j)] = "failed"
                finally:
                    APPEND.reset(token)
                    try:
                        t.flush()
                    except BaseException:  # its background work crashed with it
                        pass
        finally:
            with store.cond:
                finished.append(w)
                store.cond.notify_all()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    for th in threads:
        th.start()
    script = list(choices)
    rnd = random.Random(repr(choices))  # after the script: picks that vary with it
    deadline = time.monotonic() + 120
    try:
        while True:
            with store.cond:
                store.cond.wait_for(lambda: store.pending or len(finished) == WRITERS, timeout=10)
                if not store.pending and len(finished) == WRITERS:
                    break
            time.sleep(0.002)  # let concurrent calls of the same moment arrive
            with store.cond:
                assert store.pending, "a writer is stuck outside the store"
                pick, action = script.pop(0) if script else (rnd.randrange(1 << 16), GO)
                step = store.pending.pop(pick % len(store.pending))
            step.action = action
            step.released.set()
            # wait until that call has run, then check the table as a reader sees it
            time.sleep(0.001)
            files, folded = live_files(MemoryBackend(MemoryConfig(name=name)), paths)
            assert len(files) == len(set(files)), f"a data file is live twice: {files}"
            assert len(folded) == len(set(folded)), f"a commit was folded in twice: {folded}"
            if keyed:
                keys = [key_of(store.owner[k]) for k in files]
                assert len(keys) == len(set(keys)), f"a key landed twice: {keys}"
            assert time.monotonic() < deadline, "the schedule did not finish in 120 s"
    finally:
        with store.cond:
            for step in store.pending:
                step.released.set()
        for th in threads:
            th.join(timeout=30)
    raw = MemoryBackend(MemoryConfig(name=name))
    files, _ = live_files(raw, paths)
    for key in files:
        assert raw.exists(key), f"live data file {key} is missing"
    landed = [store.owner[k] for k in files]
    for append, result in outcome.items():
        if keyed:  # the append, or the other one with its key, landed once
            twins = [a for a in landed if key_of(a) == key_of(append)]
            assert len(twins) <= 1 and (result != "acked" or twins), (append, outcome, landed)
        elif result == "acked":
            assert landed.count(append) == 1, (append, outcome, landed)
        if result == "failed":
            assert append not in landed, (append, outcome, landed)
    rows = ds.load_table("t", warehouse=raw).to_arrow()
    assert rows.num_rows == len(files)
    del table
    md = ds.load_table("t", warehouse=raw).metadata
    folds = sum(1 for snap in md.snapshots if FOLDED in snap.summary)
    return outcome, live_files(raw, paths)[1], folds


@st.composite
def schedules(draw: st.DrawFn) -> list[tuple[int, str]]:
    """Which pending call goes next, and what happens to it: mostly through, some failing
    before the store, some taking effect with the answer lost, rarely a crash."""
    seed = draw(st.integers(0, 1 << 32))
    faults = draw(st.floats(0.0, 0.25))
    crashes = draw(st.floats(0.0, 0.03))
    length = draw(st.integers(0, 400))
    rnd = random.Random(seed)
    out = []
    for _ in range(length):
        x = rnd.random()
        action = CRASH if x < crashes else (rnd.choice([FAIL, LOSE]) if x < faults else GO)
        out.append((rnd.randrange(1 << 16), action))
    return out


def explored(examples: int) -> Any:
    """Run a test on ``examples`` schedules hypothesis draws (the same ones every run)."""

    def wrap(test: Any) -> Any:
        return settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            derandomize=True,
        )(given(schedules())(test))

    return wrap


@explored(30)
def test_group_commit_is_exactly_once_under_any_interleaving(
    choices: list[tuple[int, str]],
) -> None:
    run_schedule(choices)


@explored(15)
def test_records_past_their_deadline_are_settled_exactly_once(
    choices: list[tuple[int, str]],
) -> None:
    """With a deadline of a few milliseconds, records expire while writers still race:
    writers that give up must find their record unfolded (then nothing of theirs is live) or
    folded (then they return it), never both."""
    run_schedule(choices, max_wait_ms=5)


@pytest.mark.parametrize("seed", range(3))
def test_writers_released_in_turn_are_folded_together(seed: int) -> None:
    """Writers released in turn lose races and get folded in (so the schedules above do
    explore group commit); with no fault, every append is acknowledged and lands once."""
    outcome, folded, folds = run_schedule([(seed + i, GO) for i in range(200)])
    assert set(outcome.values()) == {"acked"}, outcome
    assert len(outcome) == WRITERS * APPENDS
    assert sorted(folded) == sorted(set(folded)) and len(folded) == WRITERS * APPENDS
    assert folds > 0, "no append was folded into another writer's snapshot"


@explored(15)
def test_keyed_appends_land_once_per_key_under_any_interleaving(
    choices: list[tuple[int, str]],
) -> None:
    """Pairs of writers make the same appends with the same idempotency keys (a task and its
    retry): whoever folds whom, each key's rows are in the table at most once, and once if an
    append with it was acknowledged."""
    run_schedule(choices, keyed=True)


@pytest.mark.parametrize("seed", range(2))
def test_keyed_appends_are_folded_and_land_once(seed: int) -> None:
    """Without faults, keyed appends are folded in like others (their keys named in the
    folding snapshots) and each key lands exactly once."""
    outcome, folded, folds = run_schedule([(seed + i, GO) for i in range(200)], keyed=True)
    assert set(outcome.values()) == {"acked"}, outcome
    assert folds > 0, "no keyed append was folded into another writer's snapshot"
