"""``memory://name``: an in-process backend for users' own tests and as the reference model.

Stores with the same name share their objects within one process. A pickled memory backend
refers to the store of that name in the process that unpickles it: memory stores are never shared
between processes (use ``file://`` for that).
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from datashard.errors import ConfigError, ObjectExistsError, ObjectNotFoundError
from datashard.storage.base import (
    ObjectMeta,
    ObjectWriter,
    StorageBackend,
    WriteData,
    collect_chunks,
    validate_key,
    validate_prefix,
    validate_range,
)
from datashard.storage.config import BackendConfig, split_scheme


@dataclass(frozen=True, kw_only=True)
class MemoryConfig(BackendConfig):
    """``memory://<name>``: ``name`` selects the in-process store."""

    env_name = "MEMORY"

    name: str = "default"

    def root_uri(self) -> str:
        return f"memory://{self.name}"

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> MemoryConfig:
        scheme, rest = split_scheme(uri)
        if scheme != "memory":
            raise ConfigError(f"MemoryConfig takes a memory:// URI, got {uri!r}")
        return cls.build({"name": rest.strip("/") or "default", **options})


@dataclass
class _Entry:
    data: bytes
    meta: ObjectMeta


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, _Entry] = {}


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _store(name: str) -> _Store:
    with _STORES_LOCK:
        return _STORES.setdefault(name, _Store())


class MemoryBackend(StorageBackend):
    """A dict behind a lock; every operation is atomic."""

    scheme = "memory"
    config_class = MemoryConfig
    config: MemoryConfig

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__(config)
        self._store = _store(config.name)

    def _get(self, key: str) -> _Entry:
        validate_key(key)
        with self._store.lock:
            entry = self._store.objects.get(key)
        if entry is None:
            raise ObjectNotFoundError(f"no object {key!r} in {self.root_uri}", key=key)
        return entry

    def read(self, key: str) -> bytes:
        return self._get(key).data

    def read_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        validate_range(key, start, end)
        return self._get(key).data[start:end]

    def head(self, key: str) -> ObjectMeta:
        return self._get(key).meta

    def _entry(self, key: str, data: bytes) -> _Entry:
        meta = ObjectMeta(
            key=key,
            size=len(data),
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            last_modified=datetime.now(timezone.utc),
        )
        return _Entry(data, meta)

    def write(self, key: str, data: WriteData) -> None:
        validate_key(key)
        entry = self._entry(key, collect_chunks(data))
        with self._store.lock:
            self._store.objects[key] = entry

    def open_output(self, key: str) -> ObjectWriter:
        return _MemoryWriter(self, validate_key(key))

    def put_if_absent(self, key: str, data: bytes) -> None:
        validate_key(key)
        entry = self._entry(key, collect_chunks(data))
        with self._store.lock:
            if key in self._store.objects:
                raise ObjectExistsError(
                    f"object {key!r} already exists in {self.root_uri}", key=key
                )
            self._store.objects[key] = entry

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        with self._store.lock:
            metas = [e.meta for k, e in self._store.objects.items() if k.startswith(prefix)]
        return iter(sorted(metas, key=lambda m: m.key))

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._store.lock:
            self._store.objects.pop(key, None)

    def clear(self) -> None:
        """Drop every object of this store (for tests)."""
        with self._store.lock:
            self._store.objects.clear()

    def keys(self) -> builtins.list[str]:
        """Every key, sorted (for tests)."""
        return [m.key for m in self.list()]


class _MemoryWriter(ObjectWriter):
    """A buffer that becomes the object on ``close``."""

    def __init__(self, backend: MemoryBackend, key: str) -> None:
        super().__init__(key)
        self._backend = backend
        self._buffer = bytearray()

    def _write(self, view: memoryview) -> None:
        self._buffer += view

    def _commit(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        self._backend.write(self.key, data)

    def _discard(self) -> None:
        self._buffer = bytearray()
