"""Process-wide state of the table layer, owned here: what exists, its bounds, the fork rule.

============================  =====================================  ===========================
state                         bound                                  in a forked child
============================  =====================================  ===========================
the shared thread pool        :data:`POOL_THREADS` threads, started  a new pool (the parent's
(:func:`shared_pool`)         as work needs them                     threads are not there)
the manifest cache            :data:`MANIFEST_CACHE_ENTRIES` entries  kept; its lock is renewed
(:data:`MANIFEST_CACHE`)      and manifest-list rows in all, LRU
per-writer state              see :class:`ProcessLocal`: a value     re-made empty on first use
(:class:`ProcessLocal`)       made per process                       (work in flight was the
                                                                     parent's)
============================  =====================================  ===========================

Elsewhere, each without locks or threads (so nothing to do after a fork): the memo of encoded
snapshots (:mod:`datashard.iceberg.metadata_codec`, 4,096 entries, cleared whole when full) and
of encoded manifest-list rows (:mod:`datashard.iceberg.manifest_codec`, the same). The storage
layer keeps per-backend state (a part-fetch pool and an SDK client each, re-made in a forked
child, and for S3 one shared botocore loader per process whose lock is renewed after a fork);
see docs/storage.md.

The pool: starting threads per call costs more than reading a small table does (a scan of five
files made a pool of five threads and joined them each time). One kind of task waits for
another: a commit's hint write waits for the same table's previous hint write, which was
submitted earlier; the queue is first in, first out, so that one is running or done by then, and
sharing the pool cannot deadlock. Once the interpreter shuts the pool down, work runs inline.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Threads in the shared pool, at most.
POOL_THREADS = 16
#: Manifest entries and manifest-list rows kept in memory by a process for later scans (about
#: 1-2 KB each).
MANIFEST_CACHE_ENTRIES = 20_000

# --------------------------------------------------------------------------------------------
# the shared pool

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
        # the caller's context variables go with the work (whoever reads them sees the same
        # values in the pool as in the thread that asked for it)
        return shared_pool().submit(contextvars.copy_context().run, fn, *args)
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


# --------------------------------------------------------------------------------------------
# the manifest cache


class ManifestCache:
    """Manifest lists and manifest entries already read by this process, least recently used
    dropped first beyond ``budget`` items in all.

    Neither ever changes once written (names are unique, and a manifest list records each
    manifest's length), so what is read once serves every later scan, of any snapshot that
    names it.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._size = 0

    def after_fork(self) -> None:
        """A forked child may have been copied while a thread held the lock: a new one."""
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> list[Any] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[Any, ...], entries: list[Any]) -> None:
        if len(entries) > self.budget:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = entries
            self._size += len(entries)
            while self._size > self.budget:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


MANIFEST_CACHE = ManifestCache(MANIFEST_CACHE_ENTRIES)


# --------------------------------------------------------------------------------------------
# per-process values


class ProcessLocal(Generic[T]):
    """A value that belongs to the process that made it: a forked child gets a fresh one from
    ``factory`` on first use (background work the parent started has no thread in the child)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._pid = os.getpid()
        self._value = factory()

    def get(self) -> T:
        if self._pid != os.getpid():
            self._value, self._pid = self._factory(), os.getpid()
        return self._value

    def set(self, value: T) -> None:
        self._value, self._pid = value, os.getpid()


# --------------------------------------------------------------------------------------------
# interpreter exit

_EXITING = threading.Event()


def exiting() -> bool:
    """Whether the interpreter is shutting down (advisory background work is then skipped, so
    a process exits without waiting for it)."""
    return _EXITING.is_set()


# Runs when the main thread ends, before the pool's threads are joined (the order
# concurrent.futures itself relies on); plain atexit would run after that join.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_EXITING.set)


# --------------------------------------------------------------------------------------------
# the fork rule


def _after_fork_in_child() -> None:
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()
    MANIFEST_CACHE.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "MANIFEST_CACHE",
    "MANIFEST_CACHE_ENTRIES",
    "POOL_THREADS",
    "ManifestCache",
    "ProcessLocal",
    "bounded_map",
    "exiting",
    "shared_pool",
    "submit",
]
