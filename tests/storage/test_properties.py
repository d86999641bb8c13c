"""Random operation sequences: a backend must answer exactly as the memory:// reference model.

Hypothesis drives writes, ``put_if_absent``, deletes, reads, ranges, ``read_into``, ``head`` and
``list`` against the backend under test and a fresh ``memory://`` store side by side; every
answer (bytes, sizes, key lists, or the exact exception class) must match. Keys are drawn from a
small set so that sequences collide on the same keys and prefixes, and no key is a directory of
another (a file system cannot hold both ``a`` and ``a/b``, which the conformance suite covers).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.testing.race import qualified_name
from datashard.testing.servers import S3Server

KEYS = ("a", "ab", "a.b", "a-b", "b/x", "b/y", "bx", "c/d/e", "c/d.e", "c/d0", "é", "日本/語")
PREFIXES = ("", "a", "a/", "b", "b/", "c/d", "c/d/", "c/", "z", "é", "日")

keys = st.sampled_from(KEYS)
payloads = st.binary(max_size=300)
offsets = st.integers(min_value=0, max_value=400)

Outcome = tuple[str, Any]


def outcome(fn: Callable[[], Any]) -> Outcome:
    """``("ok", value)`` or ``("raised", exception class)``: what a caller would observe."""
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - the class is the observation
        return ("raised", qualified_name(exc))


class BackendMatchesModel(RuleBasedStateMachine):
    """One backend under test against ``memory://`` as the model."""

    make_backend: Callable[[], tuple[StorageBackend, Callable[[], None]]]

    def __init__(self) -> None:
        super().__init__()
        self.backend, self._cleanup = type(self).make_backend()
        self.model = open_backend(f"memory://model-{uuid.uuid4().hex}")

    def teardown(self) -> None:
        self.backend.close()
        self.model.clear()  # type: ignore[attr-defined]
        self._cleanup()

    def same(self, call: Callable[[StorageBackend], Any]) -> Any:
        got = outcome(lambda: call(self.backend))
        expected = outcome(lambda: call(self.model))
        assert got == expected
        return got

    # -- writes -----------------------------------------------------------------------------

    @rule(key=keys, data=payloads)
    def write(self, key: str, data: bytes) -> None:
        self.same(lambda b: b.write(key, data))

    @rule(key=keys, data=payloads, chunk=st.integers(min_value=1, max_value=128))
    def write_chunks(self, key: str, data: bytes, chunk: int) -> None:
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.same(lambda b: b.write(key, iter(pieces)))

    @rule(key=keys, data=payloads)
    def put_if_absent(self, key: str, data: bytes) -> None:
        self.same(lambda b: b.put_if_absent(key, data))

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.same(lambda b: b.delete(key))

    @rule(some=st.lists(keys, max_size=4))
    def delete_many(self, some: list[str]) -> None:
        self.same(lambda b: b.delete_many(some))

    # -- reads ------------------------------------------------------------------------------

    @rule(key=keys)
    def read(self, key: str) -> None:
        self.same(lambda b: b.read(key))

    @rule(key=keys, start=offsets, length=st.integers(min_value=0, max_value=400))
    def read_range(self, key: str, start: int, length: int) -> None:
        self.same(lambda b: b.read_range(key, start, start + length))

    @rule(key=keys, start=st.integers(min_value=-3, max_value=400), end=offsets)
    def read_range_any_bounds(self, key: str, start: int, end: int) -> None:
        self.same(lambda b: b.read_range(key, start, end))

    @rule(
        key=keys,
        ranges=st.lists(st.tuples(offsets, st.integers(0, 200)), max_size=4).map(
            lambda rs: [(s, s + n) for s, n in rs]
        ),
    )
    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> None:
        if ranges:  # an empty list reads nothing, so it cannot observe a missing key
            self.same(lambda b: b.read_ranges(key, ranges))

    @rule(key=keys, size=st.integers(min_value=0, max_value=400), offset=offsets)
    def read_into(self, key: str, size: int, offset: int) -> None:
        def call(b: StorageBackend) -> tuple[int, bytes]:
            buf = bytearray(size)
            count = b.read_into(key, buf, offset=offset)
            return count, bytes(buf[:count])

        self.same(call)

    @rule(key=keys, length=st.integers(min_value=0, max_value=400))
    def read_tail(self, key: str, length: int) -> None:
        self.same(lambda b: b.read_tail(key, length))

    @rule(key=keys)
    def head_size(self, key: str) -> None:
        self.same(lambda b: (b.head(key).key, b.head(key).size))

    @rule(key=keys)
    def exists(self, key: str) -> None:
        self.same(lambda b: b.exists(key))

    @rule(prefix=st.sampled_from(PREFIXES))
    def list_prefix(self, prefix: str) -> None:
        self.same(lambda b: [(m.key, m.size) for m in b.list(prefix)])

    @invariant()
    def listing_matches(self) -> None:
        self.same(lambda b: [(m.key, m.size) for m in b.list()])


def run_machine(
    make: Callable[[], tuple[StorageBackend, Callable[[], None]]],
    max_examples: int,
    steps: int,
) -> None:
    machine = type("Machine", (BackendMatchesModel,), {"make_backend": staticmethod(make)})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_local_backend_behaves_like_the_model(tmp_path: Path) -> None:
    def make() -> tuple[StorageBackend, Callable[[], None]]:
        root = tempfile.mkdtemp(dir=tmp_path)
        return open_backend(f"file://{root}"), lambda: shutil.rmtree(root, ignore_errors=True)

    run_machine(make, max_examples=25, steps=30)


def test_direct_backend_behaves_like_the_model() -> None:
    """On /var/tmp: tmpfs (where pytest's tmp_path lives here) refuses O_DIRECT."""
    base = Path(tempfile.mkdtemp(prefix="datashard-props-", dir="/var/tmp"))

    def make() -> tuple[StorageBackend, Callable[[], None]]:
        root = tempfile.mkdtemp(dir=base)
        return open_backend(f"direct://{root}"), lambda: shutil.rmtree(root, ignore_errors=True)

    try:
        run_machine(make, max_examples=10, steps=30)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.s3
def test_s3_backend_on_moto_behaves_like_the_model(moto_s3: S3Server) -> None:
    options = {
        "endpoint_url": moto_s3.endpoint_url,
        "access_key_id": moto_s3.access_key_id,
        "secret_access_key": moto_s3.secret_access_key,
        "region": moto_s3.region,
        "path_style": True,
    }

    def make() -> tuple[StorageBackend, Callable[[], None]]:
        uri = f"s3://{moto_s3.bucket}/properties/{uuid.uuid4().hex}"
        return open_backend(uri, **options), lambda: None

    run_machine(make, max_examples=6, steps=25)
