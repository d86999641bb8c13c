"""Where a container lives: a URI, or a backend and a key.

Readers depend only on :class:`RangeSource` (``read_range`` and ``head``), the narrowest part of
the storage contract; every :class:`~datashard.storage.base.StorageBackend` satisfies it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from datashard.errors import ConfigError, CorruptFileError
from datashard.storage.base import ObjectMeta, StorageBackend, validate_key
from datashard.storage.config import open_backend, split_scheme


@runtime_checkable
class RangeSource(Protocol):
    """What a container reader needs from storage: ranged reads and the object's size.

    A source that also has ``read_tail(key, length) -> (bytes, size)`` (every
    ``StorageBackend`` does) is asked for the suffix in one call instead of ``head`` + a range.
    """

    def read_range(self, key: str, start: int, end: int) -> bytes: ...

    def head(self, key: str) -> ObjectMeta: ...


#: A container location: ``"s3://bucket/prefix/name.msgc"``, ``"/path/name.msgc"``,
#: ``"file:///path/name.msgc"``, or ``(backend, key)``.
Target = str | tuple[RangeSource, str]


def split_uri(uri: str) -> tuple[str, str]:
    """``("s3://bucket/prefix", "name.msgc")`` from ``"s3://bucket/prefix/name.msgc"``.

    A plain path is a ``file://`` location; its directory becomes the backend root.
    """
    scheme, rest = split_scheme(uri)
    if "://" not in uri or scheme == "file":
        directory, name = os.path.split(os.path.abspath(rest))
        if not name:
            raise ConfigError(f"container path {uri!r} names a directory, not a file")
        return f"file://{directory}", name
    rest = rest.rstrip("/")
    if "/" not in rest:
        raise ConfigError(
            f"container URI {uri!r} names no object; expected {scheme}://<root>/<name>"
        )
    root, name = rest.rsplit("/", 1)
    return f"{scheme}://{root}", name


@dataclass
class Location:
    """A resolved target: the source (or backend), the key, and whether we opened it."""

    source: RangeSource
    key: str
    owned: bool

    @property
    def uri(self) -> str:
        if isinstance(self.source, StorageBackend):
            return self.source.uri_for(self.key)
        return f"{self.source!r}:{self.key}"

    @property
    def backend(self) -> StorageBackend:
        if not isinstance(self.source, StorageBackend):
            raise ConfigError(
                f"{self.uri} needs a StorageBackend to write to, got {type(self.source).__name__}"
            )
        return self.source

    def close(self) -> None:
        if self.owned and isinstance(self.source, StorageBackend):
            self.source.close()


def resolve(target: Target | RangeSource, key: str | None, options: dict[str, Any]) -> Location:
    """Turn ``target`` (+ ``key``) into a :class:`Location`; ``options`` go to ``open_backend``."""
    if isinstance(target, str):
        if key is not None:
            raise ConfigError(
                f"pass either a URI or (backend, key), not a URI {target!r} and a key"
            )
        root, name = split_uri(target)
        return Location(open_backend(root, **options), validate_key(name), owned=True)
    if isinstance(target, tuple):
        if len(target) != 2 or key is not None:
            raise ConfigError("a container target tuple must be (backend, key)")
        target, key = target
    if options:
        raise ConfigError(
            f"storage options {sorted(options)} only apply to a URI target, not to a backend"
        )
    if key is None or not isinstance(target, RangeSource):
        raise ConfigError(
            "a container target is a URI, (backend, key) or backend and key=...; got "
            f"{type(target).__name__} with key {key!r}"
        )
    return Location(target, validate_key(key), owned=False)


def read_exact(loc: Location, start: int, end: int, name: str) -> bytes:
    """Bytes ``[start, end)`` of the object; ``CorruptFileError`` if fewer come back."""
    data = loc.source.read_range(loc.key, start, end)
    if len(data) != end - start:
        raise CorruptFileError(
            f"{name} is truncated: asked for bytes [{start}, {end}), got {len(data)}",
            key=loc.key,
        )
    return data
