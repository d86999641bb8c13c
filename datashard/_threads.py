"""One process-wide thread pool for table work: a commit's concurrent writes and merge reads,
its background hint write, and a scan's manifest and data-file reads.

Starting threads per call costs more than reading a small table does (a scan of five files made
a pool of five threads and joined them each time). The pool starts its threads as work needs
them, and is replaced in a forked child (a child has none of its parent's threads). One kind of
task waits for another: a commit's hint write waits for the same table's previous hint write,
which was submitted earlier; the queue is first in, first out, so that one is running or done
by then, and sharing the pool cannot deadlock.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Threads in the shared pool, at most.
POOL_THREADS = 16

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    """The process's pool (made on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="datashard")
        return _POOL


def submit(fn: Callable[..., R], *args: object) -> Future[R]:
    """``fn(*args)`` on the shared pool; run here, at once, once the interpreter is shutting
    the pool down (a thread that outlives the main one still gets its work done)."""
    try:
        return shared_pool().submit(fn, *args)
    except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
        done: Future[R] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # delivered by result(), as the pool would
            done.set_exception(exc)
        return done


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` of each item, in order, at most ``workers`` running at once on the shared pool.

    Results come back as they are consumed; an error is raised when its item's turn comes (the
    items already started run to their end on the pool).
    """
    source = iter(items)
    running: deque[Future[R]] = deque()
    for item in source:
        running.append(submit(fn, item))
        if len(running) >= max(1, workers):
            break
    while running:
        result = running.popleft().result()
        for item in source:
            running.append(submit(fn, item))
            break
        yield result


def _forget_pool_after_fork() -> None:
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)

__all__ = ["POOL_THREADS", "bounded_map", "shared_pool", "submit"]
