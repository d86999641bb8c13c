"""The thread pool that runs the parts of ranged reads and of uploads, for any backend.

This module knows nothing about S3, Azure or GCS: :class:`PartPool` runs callables, and
:func:`split_range` plans the parts of a byte range. The read engine that uses them is
:mod:`datashard.storage.ranged_reads`.

The pool is created lazily and again after a ``fork``; a fetch that runs inside a pool worker and
asks for more parallel work runs it inline, so nested use cannot deadlock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


def split_range(start: int, end: int, part_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into consecutive parts of ``part_size`` bytes (the last shorter).

    >>> split_range(0, 10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    if part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {part_size}")
    return [(s, min(s + part_size, end)) for s in range(start, end, part_size)]


_worker = threading.local()


def _mark_worker() -> None:
    _worker.active = True


def in_worker() -> bool:
    """Whether the calling thread is one of a :class:`PartPool`'s workers."""
    return bool(getattr(_worker, "active", False))


def gather(futures: Sequence[Future[T]]) -> list[T]:
    """The results of ``futures`` in order.

    If one raises, the ones not yet started are cancelled, the running ones are waited for (they
    may write into a caller's buffer) and the first error is raised.
    """
    if not futures:
        return []
    wait(futures, return_when=FIRST_EXCEPTION)
    failed = [f for f in futures if f.done() and not f.cancelled() and f.exception()]
    if failed:
        for f in futures:
            f.cancel()
        wait(futures)
        error = failed[0].exception()
        assert error is not None
        raise error
    return [f.result() for f in futures]


class PartPool:
    """A pool of up to ``max_workers`` threads for the parts of ranged reads and writes."""

    def __init__(self, max_workers: int, name: str = "datashard-part") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                # after a fork the parent's threads do not exist here: start a fresh pool
                self._executor = ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix=self._name, initializer=_mark_worker
                )
                self._pid = os.getpid()
            return self._executor

    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """Run ``tasks`` concurrently; their results in order.

        If a task raises, the tasks not yet started are cancelled, the running ones are waited
        for (they write into the caller's buffer) and the first error is raised.
        """
        if len(tasks) <= 1 or in_worker():
            return [task() for task in tasks]
        pool = self._pool()
        return gather([pool.submit(task) for task in tasks])

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Start ``fn`` on the pool (inline, already done, when called from a pool worker)."""
        if in_worker():
            future: Future[T] = Future()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
            return future
        return self._pool().submit(fn)

    def spawn(self, fn: Callable[[], T]) -> Future[T]:
        """Start ``fn`` on the pool, also when called from a pool worker. A worker must not wait
        for what it spawns (the pool may have no other thread): only a caller outside it may."""
        return self._pool().submit(fn)

    def close(self) -> None:
        """Stop the threads (after the running parts finish); the pool restarts if used again."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=True, cancel_futures=True)
