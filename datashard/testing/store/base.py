"""The conformance suite's hooks, shared constants and helpers."""

from __future__ import annotations

import pathlib
import random
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from datashard.storage.base import ObjectMeta, StorageBackend
from datashard.testing.race import RaceMode

MiB = 1024 * 1024

#: Keys that every method must refuse with ``InvalidPathError``.
INVALID_KEYS: tuple[object, ...] = (
    "",
    ".",
    "..",
    "../x",
    "a/../b",
    "a/./b",
    "a/..",
    "/a",
    "//a",
    "a//b",
    "a/",
    "a\x00b",
    "\x00",
    None,
    b"a",
    1,
    pathlib.PurePosixPath("a"),
)

#: Prefixes ``list`` must refuse (a trailing ``/`` is fine for a prefix, so it is not here).
INVALID_PREFIXES: tuple[object, ...] = ("..", "../", "a/../b", "/a", "a//", "a\x00", None, b"a")

#: Keys whose lexicographic order a directory walk or a URL-encoding slip gets wrong.
TRICKY_KEYS: tuple[str, ...] = (
    "a-b",
    "a.b",
    "a/b-c",
    "a/b/c",
    "a/b0",
    "a b",
    "a+b",
    "a%20b",
    "a=b",
    "a~b",
    "ab",
    "ac/x",
    "A",
    "Z/z",
    "_",
    "é",
    "日本/語",
    "\uff01",
    "\U0001f600",
    "e\u0301",
    "AB",
    "q?x",
    "h#x",
    "amp&x",
    "lt<x>",
    'quote"x',
    "apos'x",
    "star*x",
    "bs\\x",
    "colon:x",
    "sp ",
    " lead",
)

Call = Callable[[StorageBackend, Any], object]

#: One call per public method, each taking the key under test.
KEY_CALLS: dict[str, Call] = {
    "read": lambda b, k: b.read(k),
    "read_range": lambda b, k: b.read_range(k, 0, 1),
    "read_ranges": lambda b, k: b.read_ranges(k, [(0, 1)]),
    "read_into": lambda b, k: b.read_into(k, bytearray(4)),
    "read_tail": lambda b, k: b.read_tail(k, 4),
    "read_range_if_match": lambda b, k: b.read_range_if_match(k, 0, 1, "etag"),
    "head": lambda b, k: b.head(k),
    "exists": lambda b, k: b.exists(k),
    "write": lambda b, k: b.write(k, b"x"),
    "write_chunks": lambda b, k: b.write(k, iter([b"x", b"y"])),
    "put_if_absent": lambda b, k: b.put_if_absent(k, b"x"),
    "delete": lambda b, k: b.delete(k),
    "delete_many": lambda b, k: b.delete_many(["ok-key", k]),
    "uri_for": lambda b, k: b.uri_for(k),
}

#: Every read method, for the missing-key tests.
READ_CALLS: dict[str, Call] = {
    name: KEY_CALLS[name]
    for name in ("read", "read_range", "read_ranges", "read_into", "read_tail", "head")
}


def data_of(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def keys_of(metas: Iterator[ObjectMeta]) -> list[str]:
    return [m.key for m in metas]


def _numpy() -> Any:
    return pytest.importorskip("numpy")


class SuiteBase:
    """The hooks a binding sets or overrides, and the helpers the tests share."""

    #: ``"process"``: the race runs in 16 processes; ``"thread"``: in 16 threads of this process.
    race_mode: ClassVar[RaceMode] = "process"
    #: How many writers race ``put_if_absent``.
    race_writers: ClassVar[int] = 16
    #: Whether a backend unpickled in another process sees the same objects.
    shared_across_processes: ClassVar[bool] = True
    #: ``{"test_name": "why this backend fails it"}``: marked ``xfail(strict=True)``.
    expected_failures: ClassVar[Mapping[str, str]] = {}
    #: ``{"test_name": "why"}`` for tests this backend fails only when a race goes a certain way
    #: (an emulator that ignores preconditions loses a race only when writers collide):
    #: marked ``xfail(strict=False)``.
    possible_failures: ClassVar[Mapping[str, str]] = {}
    #: Keys ``test_delete_many_of_many_keys`` deletes: more than one batch of the backend.
    many_delete_keys: ClassVar[int] = 1005

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for table in ("expected_failures", "possible_failures"):
            for name, reason in getattr(cls, table).items():
                if not name.startswith("test_") or not callable(getattr(cls, name, None)):
                    raise TypeError(f"{cls.__name__}.{table} names no test: {name!r}")
                if not reason:
                    raise TypeError(f"{cls.__name__}.{table}[{name!r}] needs a reason")

    # -- hooks ------------------------------------------------------------------------------

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        raise NotImplementedError("bind the suite: define a `backend` fixture in the subclass")

    @pytest.fixture
    def offline_backend(self, backend: StorageBackend) -> StorageBackend:
        return backend

    def raw_put(self, backend: StorageBackend, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` without ``backend``: the default uses a twin backend."""
        type(backend)(backend.config).write(key, data)

    def raw_get(self, backend: StorageBackend, key: str) -> bytes:
        """The stored bytes of ``key`` read without ``backend``: the default uses a twin."""
        return type(backend)(backend.config).read(key)

    def _raw_put_all(self, backend: StorageBackend, keys: list[str]) -> None:
        """Empty objects under ``keys`` through the back door, a few at a time."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(self.raw_put, backend, key, b"") for key in keys]:
                future.result()

    @pytest.fixture(autouse=True)
    def _apply_expected_failures(self, request: pytest.FixtureRequest) -> None:
        name = getattr(request.node, "originalname", None) or request.node.name
        reason = self.expected_failures.get(name)
        if reason:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
        reason = self.possible_failures.get(name)
        if reason:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=False))
