"""Retries with jittered exponential backoff, a limit on requests in flight, and rate limits.

Only :class:`~datashard.errors.TransientStorageError` is retried. Every backend sends each request
through one :class:`RequestGate`, so the concurrency limit and the rate limits hold for the whole
backend object, across all the threads that share it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

from datashard.errors import ConfigError, TransientStorageError

T = TypeVar("T")
log = logging.getLogger("datashard.storage.retry")
RequestKind = Literal["read", "write"]

_budget = threading.local()
_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def _steady() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended where there is
    one (Linux), else the monotonic clock: a budget measured by it ends on time even across
    a suspend."""
    return time.clock_gettime(_BOOT_CLOCK) if _BOOT_CLOCK is not None else time.monotonic()


@contextmanager
def retry_budget(seconds: float) -> Iterator[None]:
    """Within this block, requests made by this thread stop retrying once ``seconds`` have
    passed (the last error propagates then): for advisory work, such as a version-hint write,
    that must not keep a process from exiting while a server is away."""
    previous = getattr(_budget, "deadline", None)
    deadline = _steady() + seconds
    _budget.deadline = deadline if previous is None else min(previous, deadline)
    try:
        yield
    finally:
        _budget.deadline = previous


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``attempts`` tries within ``deadline`` seconds in all; before try ``n+1`` sleep a
    uniform random time in ``[0, min(max_delay, first_delay * 2**n)]`` ("full jitter"). A retry
    whose sleep would end past the deadline is not made."""

    attempts: int = 32
    first_delay: float = 1.0
    max_delay: float = 32.0
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry_attempts must be >= 1, got {self.attempts}")
        if self.first_delay < 0 or self.max_delay < 0:
            raise ConfigError(
                f"retry delays must be >= 0, got first={self.first_delay} max={self.max_delay}"
            )
        if not self.deadline > 0:
            raise ConfigError(f"retry_deadline must be > 0 seconds, got {self.deadline}")

    def delays(self) -> Iterator[float]:
        """The sleep before each retry: ``attempts - 1`` values."""
        for n in range(self.attempts - 1):
            yield random.uniform(0.0, min(self.max_delay, self.first_delay * (2.0**n)))


class _TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of up to ``rate`` (min 1)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ConfigError(f"rate limit must be > 0 requests per second, got {rate}")
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = _steady()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = _steady()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self._rate
            time.sleep(wait)


class RequestGate:
    """The one door every request of a backend goes through: limits, then retries."""

    def __init__(
        self,
        policy: RetryPolicy,
        max_concurrency: int,
        read_rate: float | None = None,
        write_rate: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        endpoint: str = "",
    ) -> None:
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.policy = policy
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._buckets: dict[str, _TokenBucket | None] = {
            "read": _TokenBucket(read_rate) if read_rate else None,
            "write": _TokenBucket(write_rate) if write_rate else None,
        }
        self._sleep = sleep
        #: where requests go (named in retry logs and in the error when retries run out)
        self.endpoint = endpoint
        self.retries = 0  # how many retries this gate has made; for tests and diagnostics

    @contextmanager
    def slot(self, kind: RequestKind) -> Iterator[None]:
        """Hold one of the ``max_concurrency`` slots, after waiting for the rate limit."""
        bucket = self._buckets[kind]
        if bucket is not None:
            bucket.acquire()
        with self._slots:
            yield

    def call(self, kind: RequestKind, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a slot; retry it on ``TransientStorageError`` per the policy, logging
        each retry at INFO with the endpoint and the reason.

        When the attempts or the deadline run out, the last ``TransientStorageError``
        propagates, its message extended with the endpoint, the tries made, the time spent and
        the settings that bounded them.
        """
        delays = self.policy.delays()
        start = _steady()
        deadline = start + self.policy.deadline
        outer = getattr(_budget, "deadline", None)
        if outer is not None:
            deadline = min(deadline, outer)
        tries = 0
        while True:
            tries += 1
            try:
                with self.slot(kind):
                    return fn()
            except TransientStorageError as exc:
                delay = next(delays, None)
                if delay is None or _steady() + delay > deadline:
                    spent = _steady() - start
                    exc.args = (
                        f"{exc} (gave up after {tries} tr{'y' if tries == 1 else 'ies'} in "
                        f"{spent:.1f} s{self._where()}; retry_attempts="
                        f"{self.policy.attempts}, retry_deadline={self.policy.deadline:g} s)",
                        *exc.args[1:],
                    )
                    raise
                log.info(
                    "retrying a %s request%s in %.2f s (try %d of at most %d): %s",
                    kind,
                    self._where(),
                    delay,
                    tries + 1,
                    self.policy.attempts,
                    exc,
                )
                self.retries += 1
                self._sleep(delay)

    def _where(self) -> str:
        return f" to {self.endpoint}" if self.endpoint else ""
