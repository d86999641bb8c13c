"""The storage conformance suite (datashard.testing.store) bound to every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend
from datashard.storage.memory import MemoryBackend
from datashard.testing.store import StorageConformance


class TestMemory(StorageConformance):
    """``memory://``: objects live in this process, so its race runs 16 threads and a pickled
    copy in another process sees an empty store. The back door is a second backend on the same
    named store (there is nothing under the backend to reach more directly)."""

    race_mode = "thread"
    shared_across_processes = False

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        backend = open_backend(f"memory://conformance-{uuid.uuid4().hex}")
        assert isinstance(backend, MemoryBackend)
        yield backend
        backend.clear()
        backend.close()
