"""The logic the Azure and GCS backends share: gated SDK calls, parallel ranged reads, writes.

:class:`RangedBackend` is a :class:`~datashard.storage.base.StorageBackend` whose subclass
supplies a handful of SDK-specific hooks (one ranged GET, one whole-object PUT, one streamed
upload, the error table); it then provides:

- ``_call``: one request through the backend's :class:`~datashard.storage.retry.RequestGate`, SDK
  errors translated so that transient ones are retried;
- ``read``, ``read_range``, ``read_ranges`` and ``read_into``: large ranges split into parts of
  ``part_size`` bytes fetched concurrently (:class:`~datashard.storage.parallel.PartPool`), every
  part after the first pinned to the first response's version (ETag or generation), the whole
  read started over up to :data:`READ_ATTEMPTS` times when the object changes between its parts;
- ``write``: bytes up to ``single_put_size`` in one request, anything larger (or a stream of
  chunks) as an upload of parts;
- ``delete_many`` in batches, the listing loop and the ``put_if_absent`` token check.

Nothing here imports an SDK.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import os
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from datashard.errors import DataShardError, PreconditionFailedError
from datashard.storage.base import (
    ObjectMeta,
    StorageBackend,
    WriteData,
    byte_view,
    validate_key,
    validate_prefix,
    validate_range,
)
from datashard.storage.parallel import PartPool, RangeFetch, split_range
from datashard.storage.retry import RequestGate, RequestKind

if TYPE_CHECKING:
    from datashard.storage.config import BackendConfig

T = TypeVar("T")

#: Whole reads that meet a concurrent overwrite between their parts start over this many times.
READ_ATTEMPTS = 3

#: What a first ranged GET gives: the bytes (or their count, written into a view), the object
#: size and the version that later parts are pinned to; ``None`` when the range starts at or past
#: the end of the object.
FirstPart = tuple[bytes | int, int, str | None] | None


class RangedBackend(StorageBackend):
    """A cloud backend whose reads are concurrent ranged GETs (see the module docstring)."""

    #: Largest number of keys one ``_delete_batch`` call takes.
    delete_batch: int = 100

    def __init__(
        self,
        config: BackendConfig,
        *,
        gate: RequestGate,
        max_concurrency: int,
        part_size: int,
        write_block_size: int,
        single_put_size: int,
        prefix: str,
        pool_name: str,
    ) -> None:
        super().__init__(config)
        self._gate = gate
        self._parts = PartPool(max_concurrency, name=pool_name)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._client: Any = None  # made by _connect, once per process
        self._prefix = f"{prefix}/" if prefix else ""
        self._part_size = part_size
        self._write_block_size = write_block_size
        self._single_put_size = single_put_size

    def _connected(self) -> Any:
        """This process's SDK client, made by :meth:`_connect` on first use and again after a
        fork (a child must not use its parent's connections)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._connect()
                self._pid = os.getpid()
            return self._client

    # -- hooks the subclass supplies -------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new SDK client for this backend's settings."""

    @abstractmethod
    def _is_sdk_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` comes from the SDK or the network (not a bug in the caller's code)."""

    @abstractmethod
    def _error(self, exc: BaseException, operation: str, key: str | None) -> DataShardError:
        """``exc`` translated through the SDK's error table."""

    @abstractmethod
    def _first_part(
        self, key: str, start: int, end: int, view: memoryview | None, pin: str | None = None
    ) -> FirstPart:
        """The first ranged GET of a read, through :meth:`_call` (see :data:`FirstPart`)."""

    @abstractmethod
    def _get_pinned(self, key: str, start: int, end: int, pin: str | None) -> bytes | None:
        """One ranged GET of ``[start, end)`` pinned to ``pin`` (not gated: run in ``_call``)."""

    @abstractmethod
    def _get_pinned_into(
        self, key: str, start: int, end: int, view: memoryview, pin: str | None
    ) -> int:
        """The same, written into ``view``; the count written."""

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None:
        """Write ``data`` in one gated request."""

    @abstractmethod
    def _put_stream(self, key: str, blocks: Iterable[bytes | memoryview]) -> None:
        """Write ``blocks`` (each ``write_block_size`` bytes but the last) as one upload."""

    @abstractmethod
    def _delete_batch(self, keys: builtins.list[str]) -> None:
        """Delete up to :attr:`delete_batch` keys (gated by the caller); missing ones are fine."""

    @abstractmethod
    def _list_page(self, full: str, token: str | None) -> tuple[builtins.list[Any], str | None]:
        """One gated page of a listing of ``full`` and the token of the next page."""

    @abstractmethod
    def _list_meta(self, item: Any, key: str) -> ObjectMeta:
        """The :class:`ObjectMeta` of one listed item, named ``key``."""

    # -- requests --------------------------------------------------------------------------

    def _call(self, kind: RequestKind, operation: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run ``fn`` through the gate, SDK errors translated (so transient ones are retried)."""

        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                if isinstance(exc, DataShardError) or not self._is_sdk_error(exc):
                    raise
                raise self._error(exc, operation, key) from exc

        return self._gate.call(kind, attempt)

    # -- reads -----------------------------------------------------------------------------

    def _fetch_pinned(self, key: str, pin: str | None) -> RangeFetch:
        def fetch(start: int, end: int, view: memoryview) -> int:
            count: int = self._call(
                "read", "read", key, lambda: self._get_pinned_into(key, start, end, view, pin)
            )
            return count

        return fetch

    def _read_span(self, key: str, start: int, end: int, pin: str | None = None) -> bytes:
        part = self._part_size
        first = self._first_part(key, start, min(end, start + part), None, pin)
        if first is None:
            return b""
        data, total, pinned = first
        assert isinstance(data, bytes)
        stop = min(end, total)
        if start + len(data) >= stop:
            return data

        def fetch(s: int, e: int) -> bytes:
            got = self._call("read", "read", key, lambda: self._get_pinned(key, s, e, pinned))
            if got is None or len(got) != e - s:
                raise PreconditionFailedError(f"{key!r} changed size while read", key=key)
            return got

        # parts as bytes joined once: cheaper than filling a zeroed buffer and copying it out
        parts = split_range(start + len(data), stop, part)
        chunks = self._parts.run([functools.partial(fetch, s, e) for s, e in parts])
        return b"".join([data, *chunks])

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Run a multi-part read again when the object changed between its parts."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return fn()
            except PreconditionFailedError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def read(self, key: str) -> bytes:
        validate_key(key)
        return self._retrying(lambda: self._read_span(key, 0, 1 << 62))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        validate_range(key, start, end)
        if start == end:
            self.head(key)  # a missing object still raises
            return b""
        return self._retrying(lambda: self._read_span(key, start, end))

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        validate_key(key)
        for start, end in ranges:
            validate_range(key, start, end)
        tasks = [functools.partial(self.read_range, key, s, e) for s, e in ranges]
        return self._parts.run(tasks)

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        validate_key(key)
        view = memoryview(buffer).cast("B")
        validate_range(key, offset, offset)
        if view.readonly:
            raise TypeError(f"read_into({key!r}) needs a writable buffer, got a read-only one")
        if len(view) == 0:
            self.head(key)
            return 0
        return self._retrying(lambda: self._read_into(key, view, offset))

    def _read_into(self, key: str, view: memoryview, offset: int) -> int:
        part = self._part_size
        first_len = min(len(view), part)
        first = self._first_part(key, offset, offset + first_len, view[:first_len])
        if first is None:
            return 0
        count, total, pin = first
        assert isinstance(count, int)
        stop = min(offset + len(view), total)
        if offset + count >= stop:
            return count
        rest = view[count : stop - offset]
        fetch = self._fetch_pinned(key, pin)
        return count + self._parts.fetch_into(fetch, rest, offset + count, total, part)

    # -- writes ----------------------------------------------------------------------------

    def write(self, key: str, data: WriteData) -> None:
        validate_key(key)
        size = self._write_block_size
        view = byte_view(data)
        if view is not None:
            if len(view) <= self._single_put_size:
                self._put(key, bytes(view))
                return
            self._put_sliced(key, view)
            return
        chunks = rechunk(data, size)
        first = next(chunks, b"")
        second = next(chunks, None)
        if second is None:
            self._put(key, first)
            return
        self._put_stream(key, itertools.chain([first, second], chunks))

    def _put_sliced(self, key: str, view: memoryview) -> None:
        """Write ``view`` (more than ``single_put_size`` bytes) as one upload of blocks."""
        self._put_stream(key, slices(view, self._write_block_size))

    def _token_matches(
        self,
        key: str,
        token: str,
        load: Callable[[], Any],
        missing: Callable[[BaseException], bool],
        metadata_key: str,
    ) -> bool:
        """Whether the object ``load`` fetches carries ``token`` under ``metadata_key`` (so a
        ``put_if_absent`` whose response was lost did create it); ``False`` when it is gone."""
        try:
            found = load()
        except Exception as exc:
            if isinstance(exc, DataShardError) or not self._is_sdk_error(exc):
                raise
            if missing(exc):
                return False  # deleted since: whoever created it, it was not this call
            raise self._error(exc, "put_if_absent", key) from exc
        return bool((found.metadata or {}).get(metadata_key) == token)

    # -- listing and deletes ---------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        full = self._prefix + prefix
        items, token = self._list_page(full, None)  # the first page now: errors raise here
        return self._list_rest(full, items, token)

    def _list_rest(
        self, full: str, items: builtins.list[Any], token: str | None
    ) -> Iterator[ObjectMeta]:
        cut = len(self._prefix)
        while True:
            for item in items:
                yield self._list_meta(item, item.name[cut:])
            if not token:
                return
            items, token = self._list_page(full, token)

    def delete_many(self, keys: Iterable[str]) -> None:
        names = builtins.list(dict.fromkeys(validate_key(k) for k in keys))
        for start in range(0, len(names), self.delete_batch):
            batch = names[start : start + self.delete_batch]
            self._call(
                "write", "delete_many", batch[0], functools.partial(self._delete_batch, batch)
            )


def pool_connections(session: Any, adapter_class: Any, max_concurrency: int) -> None:
    """Mount on ``session`` (a ``requests.Session``) one ``adapter_class`` whose connection pool
    holds ``max_concurrency`` concurrent requests and a few spare."""
    adapter = adapter_class(pool_connections=4, pool_maxsize=max_concurrency + 4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def slices(view: memoryview, size: int) -> Iterator[memoryview]:
    """``view`` cut into consecutive slices of ``size`` bytes (the last shorter)."""
    return (view[i : i + size] for i in range(0, len(view), size))


def rechunk(chunks: Iterable[Any], size: int) -> Iterator[bytes]:
    """The bytes of ``chunks`` cut into blocks of ``size`` (the last shorter, none if empty)."""
    pending = bytearray()
    for chunk in chunks:
        if isinstance(chunk, str):
            raise TypeError("write() takes bytes chunks, not str; encode them first")
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
