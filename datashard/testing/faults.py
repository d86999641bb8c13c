"""Fault injection: a :class:`StorageBackend` that wraps a real one and fails on purpose.

``FaultyBackend(inner, Fault("put_if_absent", 1, "lose"))`` forwards every call to ``inner``
except the first ``put_if_absent``, which it performs and then reports as failed (the response
was lost). Three kinds of fault:

- ``"fail"``: raise :class:`TransientStorageError` without touching ``inner`` (a refused request);
- ``"timeout"``: wait ``delay`` seconds, then raise ``TransientStorageError`` without touching
  ``inner`` (a request that timed out before reaching the server);
- ``"lose"``: perform the call on ``inner``, then raise ``TransientStorageError`` (the request
  landed but the caller never learns it).

Faults sit outside the backend's own retry gate, so the code under test sees them. ``calls``
records every call as ``(method, key)`` so a test can count requests or choose where to fail.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from datashard.errors import TransientStorageError
from datashard.storage.base import ObjectMeta, StorageBackend, WriteData

T = TypeVar("T")
FaultKind = Literal["fail", "timeout", "lose"]

#: The backend methods that make storage requests, as counted in ``calls``.
METHODS = (
    "read",
    "read_range",
    "read_ranges",
    "read_into",
    "head",
    "write",
    "put_if_absent",
    "list",
    "delete",
    "delete_many",
)


@dataclass(frozen=True)
class Fault:
    """Fail the ``nth`` (1-based) call of ``method`` whose key contains ``key_contains``."""

    method: str
    nth: int = 1
    kind: FaultKind = "fail"
    key_contains: str = ""
    delay: float = 0.05

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.nth < 1:
            raise ValueError(f"nth is 1-based, got {self.nth}")


class FaultyBackend(StorageBackend):
    """Forwards to ``inner``; injects ``faults``; records ``calls``. Not picklable on purpose:
    faults belong to the process that set them up."""

    def __init__(self, inner: StorageBackend, *faults: Fault) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.scheme = inner.scheme
        self.faults = list(faults)
        self.calls: list[tuple[str, str]] = []
        self.injected: list[tuple[Fault, str]] = []
        self._seen: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- identity: the inner backend's --------------------------------------------------------

    @property
    def root_uri(self) -> str:
        return self.inner.root_uri

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("FaultyBackend is for in-process tests; pickle the inner backend")

    def count(self, method: str | None = None) -> int:
        """How many calls were made (of ``method``, or of all)."""
        return sum(1 for m, _ in self.calls if method is None or m == method)

    def reset(self) -> None:
        """Forget recorded calls (faults keep their counters)."""
        with self._lock:
            self.calls.clear()

    def arm(self, *faults: Fault) -> None:
        """Replace the faults (their call counts start from zero) and forget recorded calls."""
        with self._lock:
            self.faults = list(faults)
            self._seen.clear()
            self.injected.clear()
            self.calls.clear()

    # -- the one place a call goes through --------------------------------------------------

    def _call(self, method: str, key: str, fn: Callable[[], T]) -> T:
        fault: Fault | None = None
        with self._lock:
            self.calls.append((method, key))
            for index, candidate in enumerate(self.faults):
                if candidate.method == method and candidate.key_contains in key:
                    self._seen[index] = self._seen.get(index, 0) + 1
                    if self._seen[index] == candidate.nth:
                        fault = candidate
                        self.injected.append((candidate, key))
        if fault is None:
            return fn()
        message = f"injected {fault.kind} on {method} {key!r}"
        if fault.kind == "fail":
            raise TransientStorageError(message, key=key)
        if fault.kind == "timeout":
            time.sleep(fault.delay)
            raise TransientStorageError(message + " (timed out)", key=key)
        fn()
        raise TransientStorageError(
            message + " (response lost after the call took effect)", key=key
        )

    # -- StorageBackend ------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        return self._call("read", key, lambda: self.inner.read(key))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self._call("read_range", key, lambda: self.inner.read_range(key, start, end))

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        return self._call("read_ranges", key, lambda: self.inner.read_ranges(key, ranges))

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        return self._call("read_into", key, lambda: self.inner.read_into(key, buffer, offset))

    def head(self, key: str) -> ObjectMeta:
        return self._call("head", key, lambda: self.inner.head(key))

    def write(self, key: str, data: WriteData) -> None:
        self._call("write", key, lambda: self.inner.write(key, data))

    def put_if_absent(self, key: str, data: bytes) -> None:
        self._call("put_if_absent", key, lambda: self.inner.put_if_absent(key, data))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        # As lazy as the inner listing: a caller that stops early reads no further pages
        # (counted as one call however many pages it reads).
        return self._call("list", prefix, lambda: iter(self.inner.list(prefix)))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = builtins.list(keys)
        self._call("delete_many", ",".join(keys), lambda: self.inner.delete_many(keys))

    def close(self) -> None:
        self.inner.close()


__all__ = ["METHODS", "Fault", "FaultKind", "FaultyBackend"]
