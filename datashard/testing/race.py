"""Run many ``put_if_absent`` calls on one key at the same instant, in processes or threads.

The conformance suite (:mod:`datashard.testing.store`) uses this to prove that a backend's atomic
create has exactly one winner. Each writer gets a distinct payload, waits on a start barrier (so
every writer is ready, its client built and its connection open, before any of them writes), then
calls ``put_if_absent`` once and reports what happened.

Processes are started with ``forkserver`` (or ``spawn`` where that is missing), never ``fork``:
a forked child would inherit the parent's SDK clients and connection pools in a broken state.
The backend reaches each child pickled (backends pickle their config, never a live client).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Literal

from datashard.errors import ObjectExistsError
from datashard.storage.base import StorageBackend

Outcome = Literal["won", "lost", "error"]
RaceMode = Literal["process", "thread"]

#: Bound on how long any writer may wait at the barrier or in its call, in seconds.
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class WriterResult:
    """What one writer saw: ``won``, ``lost`` (with the exception class) or ``error``."""

    index: int
    outcome: Outcome
    #: ``module.QualName`` of the exception raised, ``""`` for a win.
    exc_type: str = ""
    #: The exception's message (or a traceback for an unexpected error).
    detail: str = ""


@dataclass(frozen=True)
class RaceResult:
    """Every writer's payload and result, in writer order."""

    payloads: list[bytes]
    results: list[WriterResult]

    @property
    def winners(self) -> list[WriterResult]:
        return [r for r in self.results if r.outcome == "won"]

    @property
    def losers(self) -> list[WriterResult]:
        return [r for r in self.results if r.outcome == "lost"]

    @property
    def errors(self) -> list[WriterResult]:
        return [r for r in self.results if r.outcome == "error"]

    def describe(self) -> str:
        """One line per writer, for assertion messages."""
        return "\n".join(
            f"writer {r.index}: {r.outcome} {r.exc_type} {r.detail}".rstrip() for r in self.results
        )


def payload_for(index: int, size: int = 64 * 1024) -> bytes:
    """A payload unique to writer ``index``: its own header, filler and length.

    Lengths differ per writer, so a stored object mixed from two payloads cannot pass as either.
    """
    header = f"writer-{index:04d}|".encode()
    body_len = max(0, size + 997 * index - len(header))
    return header + bytes([index % 251 + 1]) * body_len


def qualified_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception's class."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _attempt(backend: StorageBackend, key: str, payload: bytes, index: int) -> WriterResult:
    try:
        backend.put_if_absent(key, payload)
    except ObjectExistsError as exc:
        return WriterResult(index, "lost", qualified_name(exc), str(exc))
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none swallowed
        return WriterResult(index, "error", qualified_name(exc), traceback.format_exc())
    return WriterResult(index, "won")


def _warm_up(backend: StorageBackend, key: str) -> None:
    """Build the client and open a connection before the barrier (a read of a missing key)."""
    backend.exists(f"{key}.warm-up")


def _process_writer(
    backend: StorageBackend,
    key: str,
    payload: bytes,
    index: int,
    barrier: Any,
    results: Any,
    timeout: float,
) -> None:
    """Body of one writer process: warm up, wait for everyone, write once, report."""
    try:
        _warm_up(backend, key)
        barrier.wait(timeout)
    except BaseException as exc:  # noqa: BLE001
        results.put(WriterResult(index, "error", qualified_name(exc), traceback.format_exc()))
        return
    results.put(_attempt(backend, key, payload, index))


def process_context() -> BaseContext:
    """A ``forkserver`` context (``spawn`` where the platform has none): never plain ``fork``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _race_processes(
    backend: StorageBackend, key: str, payloads: list[bytes], timeout: float
) -> list[WriterResult]:
    ctx = process_context()
    barrier = ctx.Barrier(len(payloads))
    results = ctx.Queue()
    procs = [
        ctx.Process(  # type: ignore[attr-defined]
            target=_process_writer,
            args=(backend, key, payload, i, barrier, results, timeout),
            name=f"datashard-race-writer-{i}",
            daemon=True,
        )
        for i, payload in enumerate(payloads)
    ]
    for proc in procs:
        proc.start()
    got: dict[int, WriterResult] = {}
    deadline = time.monotonic() + timeout
    try:
        for _ in procs:
            try:
                item: WriterResult = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue_module.Empty:
                break
            got[item.index] = item
    finally:
        for proc in procs:
            proc.join(timeout=10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10.0)
        results.close()
    return [
        got.get(i)
        or WriterResult(i, "error", "", f"writer process {i} reported nothing in {timeout}s")
        for i in range(len(payloads))
    ]


def _race_threads(
    backend: StorageBackend, key: str, payloads: list[bytes], timeout: float
) -> list[WriterResult]:
    barrier = threading.Barrier(len(payloads))

    def writer(index: int) -> WriterResult:
        barrier.wait(timeout)
        return _attempt(backend, key, payloads[index], index)

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        futures = [pool.submit(writer, i) for i in range(len(payloads))]
        return [f.result(timeout=timeout) for f in futures]


def race_put_if_absent(
    backend: StorageBackend,
    key: str,
    writers: int = 16,
    *,
    mode: RaceMode = "process",
    payload_size: int = 64 * 1024,
    timeout: float = DEFAULT_TIMEOUT,
) -> RaceResult:
    """Have ``writers`` writers ``put_if_absent(key, <own payload>)`` at once; report each.

    ``mode="process"`` runs one OS process per writer (the real test of an atomic create across
    machines); ``mode="thread"`` runs threads in this process, for backends whose objects live in
    one process (``memory://``). Never raises for a writer's failure: it is in the result.
    """
    if writers < 2:
        raise ValueError(f"a race needs at least 2 writers, got {writers}")
    payloads = [payload_for(i, payload_size) for i in range(writers)]
    run: Callable[[StorageBackend, str, list[bytes], float], list[WriterResult]]
    run = _race_processes if mode == "process" else _race_threads
    return RaceResult(payloads, run(backend, key, payloads, timeout))


def _call_in_child(fn: Callable[..., Any], args: tuple[Any, ...], results: Any) -> None:
    try:
        results.put(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001
        results.put(("raised", qualified_name(exc), str(exc)))


def run_in_process(
    fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT
) -> tuple[Any, ...]:
    """Call ``fn(*args)`` in a fresh process; ``("ok", value)`` or ``("raised", cls, message)``.

    ``fn`` must be importable by name and ``args`` picklable (a backend is).
    """
    ctx = process_context()
    results = ctx.Queue()
    proc = ctx.Process(  # type: ignore[attr-defined]
        target=_call_in_child, args=(fn, args, results), daemon=True
    )
    proc.start()
    try:
        outcome: tuple[Any, ...] = results.get(timeout=timeout)
    except queue_module.Empty:
        outcome = ("raised", "", f"child process reported nothing within {timeout}s")
    finally:
        proc.join(timeout=10.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10.0)
        results.close()
    return outcome


def read_object(backend: StorageBackend, key: str) -> bytes:
    """``backend.read(key)``: a named function a child process can run."""
    return backend.read(key)


# --------------------------------------------------------------------------------------------
# commit loops: many writers append to one version log, the way table commits do


@dataclass(frozen=True)
class CommitLoopResult:
    """One writer of :func:`commit_loops`: the versions it won, its attempts, any error."""

    writer: int
    won: list[int]
    attempts: int
    error: str = ""


def version_key(version: int) -> str:
    """The key of one version of the log: ``log/v000001`` ..."""
    return f"log/v{version:06d}"


def commit_payload(writer: int, nth: int) -> bytes:
    """What writer ``writer`` stores for its ``nth`` win."""
    return f"writer {writer} commit {nth}".encode()


def _commit_loop(
    backend: StorageBackend, writer: int, commits: int, limit: int, barrier: Any, timeout: float
) -> CommitLoopResult:
    won: list[int] = []
    attempts = 0
    try:
        _warm_up(backend, version_key(0))
        barrier.wait(timeout)
        deadline = time.monotonic() + timeout
        version = 0
        while len(won) < commits and version < limit and time.monotonic() < deadline:
            version += 1
            attempts += 1
            try:
                backend.put_if_absent(version_key(version), commit_payload(writer, len(won)))
            except ObjectExistsError:
                continue  # another writer holds this version: probe the next one
            won.append(version)
    except BaseException:  # noqa: BLE001 - reported, never swallowed
        return CommitLoopResult(writer, won, attempts, traceback.format_exc())
    return CommitLoopResult(writer, won, attempts)


def _commit_process(
    backend: StorageBackend,
    writer: int,
    commits: int,
    limit: int,
    barrier: Any,
    results: Any,
    timeout: float,
) -> None:
    results.put(_commit_loop(backend, writer, commits, limit, barrier, timeout))


def commit_loops(
    backend: StorageBackend,
    writers: int = 8,
    commits: int = 5,
    *,
    mode: RaceMode = "process",
    timeout: float = DEFAULT_TIMEOUT,
) -> list[CommitLoopResult]:
    """``writers`` writers each append ``commits`` versions to one log at once.

    Each writer probes forward from version 1 and ``put_if_absent``s the first version it finds
    free, moving on when it loses, exactly like a table commit against its metadata versions.
    With an atomic create, versions ``1 .. writers * commits`` end up each held by one writer and
    every writer wins ``commits`` times. Results are in writer order.
    """
    limit = writers * commits
    if mode == "thread":
        tbarrier = threading.Barrier(writers)
        with ThreadPoolExecutor(max_workers=writers) as pool:
            futures = [
                pool.submit(_commit_loop, backend, w, commits, limit, tbarrier, timeout)
                for w in range(writers)
            ]
            return [f.result(timeout=timeout * 2) for f in futures]
    ctx = process_context()
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [
        ctx.Process(  # type: ignore[attr-defined]
            target=_commit_process,
            args=(backend, w, commits, limit, barrier, results, timeout),
            name=f"datashard-commit-writer-{w}",
            daemon=True,
        )
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    got: dict[int, CommitLoopResult] = {}
    deadline = time.monotonic() + timeout * 2
    try:
        for _ in procs:
            try:
                item: CommitLoopResult = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue_module.Empty:
                break
            got[item.writer] = item
    finally:
        for proc in procs:
            proc.join(timeout=10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10.0)
        results.close()
    return [
        got.get(w) or CommitLoopResult(w, [], 0, f"writer process {w} reported nothing")
        for w in range(writers)
    ]
