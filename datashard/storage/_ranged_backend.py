"""The logic the Azure and GCS backends share: gated SDK calls, writes, listing, deletes.

:class:`RangedBackend` is a :class:`~datashard.storage.ranged_reads.RangedReads` (the read engine
S3 uses too) whose subclass supplies a handful of SDK-specific hooks (one ranged GET, one
whole-object PUT, one streamed upload, the error table); it then provides:

- ``_call``: one request through the backend's :class:`~datashard.storage.retry.RequestGate`, SDK
  errors translated so that transient ones are retried;
- the read engine's plan: ``part_size`` is both the split threshold and the part size, and a
  read with no caller buffer joins its parts' bytes (``read_gather = "join"``);
- ``write``: bytes up to ``single_put_size`` in one request, anything larger (or a stream of
  chunks) as an upload of parts;
- the :class:`~datashard.storage.part_stream.WriteBudget` its streams (``open_output``) share;
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
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from datashard.errors import DataShardError
from datashard.storage.base import (
    ObjectMeta,
    WriteData,
    byte_view,
    rechunk,
    slices,
    validate_key,
    validate_prefix,
)
from datashard.storage.parallel import PartPool
from datashard.storage.part_stream import WriteBudget
from datashard.storage.ranged_reads import RangedReads
from datashard.storage.retry import RequestGate, RequestKind

if TYPE_CHECKING:
    from datashard.storage.config import BackendConfig

T = TypeVar("T")


class RangedBackend(RangedReads):
    """A cloud backend whose reads are concurrent ranged GETs (see the module docstring)."""

    #: Largest number of keys one ``_delete_batch`` call takes.
    delete_batch: int = 100
    #: Both SDKs read a body into ``bytes`` anyway: join the parts' bytes (see RangedReads).
    read_gather = "join"

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
        write_buffer_size: int,
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
        self._write_buffer_size = write_buffer_size
        self._budget: WriteBudget | None = None
        self._budget_pid = -1

    def _connected(self) -> Any:
        """This process's SDK client, made by :meth:`_connect` on first use and again after a
        fork (a child must not use its parent's connections)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._connect()
                self._pid = os.getpid()
            return self._client

    @property
    def write_budget(self) -> WriteBudget:
        """This process's count of the part buffers held by this backend's streams."""
        with self._lock:
            if self._budget is None or self._budget_pid != os.getpid():
                self._budget = WriteBudget(self._write_buffer_size)
                self._budget_pid = os.getpid()
            return self._budget

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

    # -- reads: the shared engine's hooks (the backend supplies _get_into, _get_bytes) ----

    def _read_pool(self) -> PartPool:
        return self._parts

    def _read_plan(self) -> tuple[int, int]:
        return self._part_size, self._part_size

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
