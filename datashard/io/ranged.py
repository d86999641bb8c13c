"""A seekable, read-only file object over any storage backend.

:class:`RangedReader` is pinned to the object's etag when it opens: if the object is replaced
while the reader is in use, the next fetch raises
:class:`~datashard.errors.PreconditionFailedError` instead of mixing bytes of two versions.
Two strategies, chosen by :class:`ReaderConfig`:

- ``"sequential"``: each miss fetches ``buffer_size`` bytes ahead and serves later reads from
  that buffer. Few, large requests: best for reading a whole object front to back.
- ``"range"``: every ``read`` fetches exactly the bytes asked for and buffers nothing. Best for
  random access, such as pyarrow reading a Parquet footer and then a few column chunks.

pyarrow and pandas read Parquet through it (``pq.ParquetFile(reader)``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from datashard.errors import ConfigError, InvalidPathError
from datashard.storage.base import ObjectMeta, StorageBackend, validate_key
from datashard.storage.config import open_backend

Strategy = Literal["sequential", "range"]


@dataclass(frozen=True)
class ReaderConfig:
    """How a :class:`RangedReader` fetches.

    ``strategy``: ``"sequential"`` (read-ahead buffer) or ``"range"`` (exact requests).
    ``buffer_size``: bytes fetched per miss by the sequential strategy.
    ``pin``: fetch with the etag seen at open, so a replaced object raises.
    """

    strategy: Strategy = "sequential"
    buffer_size: int = 8 * 1024 * 1024
    pin: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in ("sequential", "range"):
            raise ConfigError(
                f"ReaderConfig.strategy must be 'sequential' or 'range', got {self.strategy!r}"
            )
        if not isinstance(self.buffer_size, int) or self.buffer_size < 1:
            raise ConfigError(
                f"ReaderConfig.buffer_size must be a positive int, got {self.buffer_size!r}"
            )


def split_object_uri(uri: str) -> tuple[str, str]:
    """``("s3://bucket/dir", "name.parquet")`` from ``"s3://bucket/dir/name.parquet"``.

    The root is the object's directory, so any object URI can be opened with
    :func:`~datashard.storage.config.open_backend` on its root.
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidPathError(f"{uri!r} is not an object URI such as 's3://bucket/key'", key=None)
    scheme_end = uri.find("://")
    path_start = scheme_end + 3 if scheme_end >= 0 else 0
    cut = uri.rfind("/")
    if cut < 0 and scheme_end < 0:  # a bare file name: the current directory
        return ".", validate_key(uri)
    if cut <= path_start or cut == len(uri) - 1:
        raise InvalidPathError(
            f"{uri!r} does not name an object under a root such as 's3://bucket/key'", key=None
        )
    root, key = uri[:cut], uri[cut + 1 :]
    return root, validate_key(key)


def resolve_object(
    source: str | tuple[StorageBackend, str], **options: Any
) -> tuple[StorageBackend, str]:
    """A ``(backend, key)`` pair from an object URI or from such a pair (validated)."""
    if isinstance(source, tuple):
        backend, key = source
        if not isinstance(backend, StorageBackend):
            raise ConfigError(
                f"expected (StorageBackend, key), got ({type(backend).__name__}, {key!r})"
            )
        return backend, validate_key(key)
    root, key = split_object_uri(source)
    return open_backend(root, **options), key


class RangedReader(io.RawIOBase):
    """A read-only, seekable binary file over one object of a backend.

    Not thread-safe: it keeps a position and a buffer. Give each thread (and each loader
    worker) its own reader. Raises ``ObjectNotFoundError`` at open for a missing object and
    ``PreconditionFailedError`` when the object changes while pinned.
    """

    def __init__(
        self,
        backend: StorageBackend,
        key: str,
        config: ReaderConfig | None = None,
        meta: ObjectMeta | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.key = validate_key(key)
        self.config = config or ReaderConfig()
        self.meta = meta if meta is not None else backend.head(key)
        self._size = self.meta.size
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        #: ``(start, end)`` of every request this reader made, in order.
        self.requests: list[tuple[int, int]] = []
        self._fetch: Callable[[int, int], bytes]
        if self.config.pin and self.meta.etag:
            etag = self.meta.etag
            self._fetch = lambda s, e: backend.read_range_if_match(self.key, s, e, etag)
        else:
            self._fetch = lambda s, e: backend.read_range(self.key, s, e)

    @classmethod
    def open(
        cls, source: str | tuple[StorageBackend, str], config: ReaderConfig | None = None
    ) -> RangedReader:
        """Open an object URI (``s3://bucket/dir/obj``) or a ``(backend, key)`` pair."""
        backend, key = resolve_object(source)
        return cls(backend, key, config)

    # -- file protocol ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.backend.uri_for(self.key)

    def size(self) -> int:
        """The object's size in bytes, as seen at open."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, got {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos} in {self.name}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            size = max(0, self._size - self._pos)
        end = min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._read_span(self._pos, end)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on a closed reader of {self.key!r}")

    # -- strategies ------------------------------------------------------------------------

    def _request(self, start: int, end: int) -> bytes:
        self.requests.append((start, end))
        return self._fetch(start, end)

    def _read_span(self, start: int, end: int) -> bytes:
        if self.config.strategy == "range":
            return self._request(start, end)
        buf_end = self._buf_start + len(self._buf)
        if self._buf_start <= start and end <= buf_end:
            return self._buf[start - self._buf_start : end - self._buf_start]
        head = b""
        if self._buf_start <= start < buf_end:  # serve the buffered part, fetch the rest
            head = self._buf[start - self._buf_start :]
            start = buf_end
        fetch_end = min(self._size, max(end, start + self.config.buffer_size))
        self._buf = self._request(start, fetch_end)
        self._buf_start = start
        return head + self._buf[: end - start]
