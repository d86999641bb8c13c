"""The storage contract: one abstract :class:`StorageBackend` that every backend implements.

Keys are ``/``-separated and relative to the backend root (``s3://bucket/prefix``,
``file:///path`` ...). A key with ``..`` or ``.`` segments, a leading ``/``, an empty segment or a
NUL byte raises :class:`~datashard.errors.InvalidPathError` before any request is made.

Every backend raises the same exception classes for the same situations; the conformance suite in
:mod:`datashard.testing.store` proves it.
"""

from __future__ import annotations

import builtins
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from datashard.errors import (
    InvalidPathError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)

if TYPE_CHECKING:
    from datashard.storage.config import BackendConfig

#: What ``write`` accepts: the whole object, or an iterable of chunks (uploaded in parts where the
#: backend supports it, so the object never has to be held in memory at once).
WriteData = bytes | bytearray | memoryview | Iterable[bytes]


@dataclass(frozen=True)
class ObjectMeta:
    """What ``head`` and ``list`` tell about one object."""

    key: str
    size: int
    etag: str | None = None
    version: str | None = None
    last_modified: datetime | None = None


def validate_key(key: object) -> str:
    """Return ``key`` if it is a well-formed object key, else raise ``InvalidPathError``.

    A key is a non-empty ``str`` of ``/``-separated segments; no segment is empty, ``.`` or
    ``..``; it does not start with ``/`` and holds no NUL byte.
    """
    if not isinstance(key, str):
        raise InvalidPathError(
            f"object key must be a str, got {type(key).__name__}: {key!r}", key=None
        )
    if key == "":
        raise InvalidPathError("object key is empty; expected a path such as 'dir/name'", key=key)
    if "\x00" in key:
        raise InvalidPathError(f"object key {key!r} contains a NUL byte", key=key)
    if key.startswith("/"):
        raise InvalidPathError(
            f"object key {key!r} starts with '/'; keys are relative to the backend root", key=key
        )
    for segment in key.split("/"):
        if segment == "":
            raise InvalidPathError(
                f"object key {key!r} has an empty segment ('//' or a trailing '/')", key=key
            )
        if segment in (".", ".."):
            raise InvalidPathError(
                f"object key {key!r} has a {segment!r} segment; keys cannot leave the root",
                key=key,
            )
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it may be listed: ``""``, or a key-like string that may end in ``/``."""
    if not isinstance(prefix, str):
        raise InvalidPathError(
            f"list prefix must be a str, got {type(prefix).__name__}: {prefix!r}", key=None
        )
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def validate_range(key: str, start: int, end: int) -> None:
    """Raise ``InvalidPathError`` unless ``0 <= start <= end`` (both ints)."""
    if not isinstance(start, int) or not isinstance(end, int):
        raise InvalidPathError(
            f"range for {key!r} must be two ints, got ({start!r}, {end!r})", key=key
        )
    if start < 0 or end < start:
        raise InvalidPathError(
            f"range for {key!r} must satisfy 0 <= start <= end, got ({start}, {end})", key=key
        )


class StorageBackend(ABC):
    """A flat store of immutable-by-convention objects under one root.

    Implementations must make ``put_if_absent`` atomic (exactly one of many concurrent callers
    wins) and ``write`` atomic (a reader sees the old object or the new one, never a mix).
    ``list`` yields every object under a string prefix, recursively, in lexicographic key order.
    Backends are picklable (they pickle their config, never a live client) so they can be sent to
    worker processes, and close their clients on ``close()``.
    """

    #: The URI scheme this backend serves (``file``, ``s3`` ...).
    scheme: str = ""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    # -- identity --------------------------------------------------------------------------

    @property
    def root_uri(self) -> str:
        """The absolute URI of the backend root, without a trailing ``/``."""
        return self.config.root_uri()

    def uri_for(self, key: str) -> str:
        """The absolute URI of ``key`` (what Iceberg metadata records as a path)."""
        return f"{self.root_uri}/{validate_key(key)}"

    def key_for(self, uri: str) -> str:
        """The key of an absolute URI under this backend's root; ``InvalidPathError`` otherwise."""
        root = self.root_uri + "/"
        if not uri.startswith(root):
            raise InvalidPathError(f"{uri!r} is not under this backend's root {root!r}", key=uri)
        return validate_key(uri[len(root) :])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.config,))

    # -- reads -----------------------------------------------------------------------------

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The whole object. Raises ``ObjectNotFoundError``."""

    @abstractmethod
    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object, ``end`` clamped to its size.

        ``start >= size`` or ``start == end`` gives ``b""``. Raises ``ObjectNotFoundError``, and
        ``InvalidPathError`` for a negative or inverted range.
        """

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        """Many ranges of one object, in the order given; backends may fetch them concurrently."""
        validate_key(key)
        for start, end in ranges:
            validate_range(key, start, end)
        return [self.read_range(key, start, end) for start, end in ranges]

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        """Fill ``buffer`` with the object's bytes from position ``offset``; return the count.

        Reads ``min(len(buffer), size - offset)`` bytes into the start of ``buffer`` (any writable
        buffer: ``bytearray``, ``memoryview``, numpy array, ``mmap``). This is the high-throughput
        path: backends override it with concurrent range requests or O_DIRECT reads.
        """
        view = memoryview(buffer).cast("B")
        validate_range(key, offset, offset)
        data = self.read_range(key, offset, offset + len(view))
        view[: len(data)] = data
        return len(data)

    def read_tail(self, key: str, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes of the object (all of it if shorter) and its total size.

        One suffix request where the backend supports it (S3 ``Range: bytes=-N``); this default
        costs a ``head`` and a ``read_range``. Format readers use it to fetch a footer.
        """
        validate_range(key, 0, length)
        size = self.head(key).size
        return self.read_range(key, max(0, size - length), size), size

    def read_range_if_match(self, key: str, start: int, end: int, etag: str) -> bytes:
        """Like ``read_range``, but raise ``PreconditionFailedError`` unless the object still
        has ``etag``: a reader pinned to one version never mixes bytes of two.

        Backends with conditional GETs override this with one request; this default reads,
        then checks the etag with a ``head`` (so it raises if the object changed before the
        read finished).
        """
        data = self.read_range(key, start, end)
        current = self.head(key).etag
        if current != etag:
            raise PreconditionFailedError(
                f"object {key!r} changed while being read: etag {etag!r} is now {current!r}",
                key=key,
            )
        return data

    @abstractmethod
    def head(self, key: str) -> ObjectMeta:
        """Size, etag, version and last-modified time. Raises ``ObjectNotFoundError``."""

    def exists(self, key: str) -> bool:
        """Whether the object exists (one ``head``)."""
        try:
            self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    # -- writes ----------------------------------------------------------------------------

    @abstractmethod
    def write(self, key: str, data: WriteData) -> None:
        """Create or replace the object atomically: readers see the old bytes or the new."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create the object only if no object has the key: atomic, never check-then-write.

        Raises ``ObjectExistsError`` when the key exists (including when another writer wins a
        concurrent race). A retried request whose first attempt in fact created the object is
        detected and reported as a win, not a loss.
        """

    def open_output(self, key: str) -> ObjectWriter:
        """A new object ``key`` written as a stream: bytes go in by ``write``; ``close`` makes
        them the object, atomically (readers see the old object or the whole new one, never a
        part); ``abort``, or leaving a ``with`` block by an exception, discards them and leaves
        no object behind. Not a conditional create: the key should be new (data files have
        unique names), and an existing object is replaced.

        This default feeds ``write`` an iterable of blocks from a thread (so the backend's
        streaming upload runs: an S3 multipart upload aborted on failure, Azure blocks committed
        as a list at the end, a GCS resumable upload finished only by the last block); at most
        a few blocks of ``block_size`` bytes are held at once.
        """
        return _StreamWriter(self, validate_key(key))

    # -- listing and deletes ---------------------------------------------------------------

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Every object whose key starts with ``prefix``, recursively, in lexicographic order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove many objects; missing keys are not an error. Backends batch where they can."""
        for key in [validate_key(k) for k in keys]:
            self.delete(key)

    def remove_abandoned(
        self, prefix: str, modified_before: datetime, *, dry_run: bool = False
    ) -> builtins.list[str]:
        """Remove what writes that never finished left under ``prefix`` (the temporary files of
        a local writer killed mid-write), last modified before ``modified_before``; what was
        (or, with ``dry_run``, would be) removed, as URIs. ``list`` never shows these; a backend
        whose writes leave nothing behind returns ``[]``."""
        return []

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - a no-op hook backends override
        """Release clients, pools and buffers. The backend may not be used afterwards."""

    def __enter__(self) -> StorageBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ObjectWriter(ABC):
    """One object being written by :meth:`StorageBackend.open_output`: a binary file-like
    object (``write``, ``tell``, ``flush``, ``closed``) whose ``close`` publishes the bytes
    written and whose ``abort`` discards them.

    In a ``with`` block, leaving by an exception aborts and leaving normally closes. A writer
    dropped without ``close`` is aborted: a half-written object is never published. After a
    failed ``close`` the object was not published (its error is raised).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._position = 0
        self._state = "open"

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        """Append ``data`` (any bytes-like object); the count of bytes taken."""
        if self._state != "open":
            raise ValueError(f"write to {self.key!r} after the stream was {self._state}")
        if isinstance(data, str):
            raise TypeError("write() takes bytes-like data, not str; encode it first")
        view = memoryview(data).cast("B")
        if view:
            try:
                self._write(view)
            except BaseException:
                self.abort()
                raise
            self._position += len(view)
        return len(view)

    def tell(self) -> int:
        """Bytes written so far."""
        return self._position

    def flush(self) -> None:  # noqa: B027 - a no-op writers may override
        """A no-op: bytes are published by ``close`` only."""

    def close(self) -> None:
        """Publish the bytes written as the object (a no-op once closed or aborted)."""
        if self._state != "open":
            return
        self._state = "closing"
        try:
            self._commit()
        except BaseException:
            self._state = "aborted"
            self._discard()
            raise
        self._state = "closed"

    def abort(self) -> None:
        """Discard what was written; no object is published (a no-op once closed)."""
        if self._state not in ("open", "closing"):
            return
        self._state = "aborted"
        self._discard()

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open":
            self.abort()

    @abstractmethod
    def _write(self, view: memoryview) -> None:
        """Take ``view`` (not empty); its bytes may be buffered until ``_commit``."""

    @abstractmethod
    def _commit(self) -> None:
        """Publish everything written; raise (after which ``_discard`` runs) on failure."""

    @abstractmethod
    def _discard(self) -> None:
        """Drop everything written; quietly, never publishing."""


#: What the stream writer's queue carries besides blocks: the end, or an abort.
_END = object()
_ABORT = object()


class StreamAborted(Exception):
    """Raised inside a backend's ``write`` when the stream feeding it was aborted."""


class _StreamWriter(ObjectWriter):
    """:meth:`StorageBackend.open_output` by default: blocks handed through a small queue to a
    thread running ``backend.write(key, blocks)``."""

    block_size = 8 << 20

    def __init__(self, backend: StorageBackend, key: str) -> None:
        super().__init__(key)
        self._backend = backend
        self._buffer = bytearray()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._upload, name=f"datashard-stream-{key}", daemon=True
        )
        self._thread.start()

    def _blocks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise StreamAborted(f"the stream writing {self.key!r} was aborted")
            assert isinstance(item, bytes)
            yield item

    def _upload(self) -> None:
        try:
            self._backend.write(self.key, self._blocks())
        except BaseException as exc:  # delivered to the writing thread
            self._error = exc
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _hand(self, item: object) -> None:
        """Queue ``item`` for the upload thread; raise its error if it has stopped."""
        while True:
            if self._error is not None or not self._thread.is_alive():
                self._raise_failure()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _raise_failure(self) -> None:
        self._thread.join()
        error = self._error
        if error is None:
            raise StorageError(f"the upload of {self.key!r} stopped before its end", key=self.key)
        raise error

    def _write(self, view: memoryview) -> None:
        size = self.block_size
        if not self._buffer and len(view) >= size:
            self._hand(bytes(view))
            return
        self._buffer += view
        if len(self._buffer) >= size:
            block, self._buffer = bytes(self._buffer), bytearray()
            self._hand(block)

    def _commit(self) -> None:
        if self._buffer:
            block, self._buffer = bytes(self._buffer), bytearray()
            self._hand(block)
        self._hand(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._thread.is_alive():
            try:
                self._hand(_ABORT)
            except BaseException:  # noqa: S110 - the upload already failed: nothing to stop
                pass
            self._thread.join()


def byte_view(data: WriteData) -> memoryview | None:
    """``write`` input as one flat byte view, or ``None`` for an iterable of chunks.

    Raises ``TypeError`` for a ``str`` (which would otherwise iterate as characters).
    """
    if isinstance(data, str):
        raise TypeError("write() takes bytes or an iterable of bytes, not str; encode it first")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).cast("B")
    return None


def collect_chunks(data: WriteData) -> bytes:
    """Join ``write`` input into one ``bytes`` (for backends that cannot stream)."""
    if isinstance(data, bytes):
        return data
    view = byte_view(data)
    if view is not None:
        return bytes(view)
    return b"".join(bytes(chunk) for chunk in data)


def slices(view: memoryview, size: int) -> Iterator[memoryview]:
    """``view`` cut into consecutive slices of ``size`` bytes (the last shorter, none if empty)."""
    return (view[i : i + size] for i in range(0, len(view), size))


def rechunk(chunks: Iterable[Any], size: int) -> Iterator[bytes]:
    """The bytes of ``chunks`` (bytes-like) re-cut into blocks of ``size``: every block but the
    last exactly ``size`` bytes, none at all for no data. Raises ``TypeError`` for a ``str``."""
    pending = bytearray()
    for chunk in chunks:
        if isinstance(chunk, str):
            raise TypeError("write() chunks must be bytes-like, got str; encode it first")
        if not pending and len(chunk) == size:  # already a block: no trip through the buffer
            yield bytes(chunk)
            continue
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
