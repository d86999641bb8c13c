"""``az://container/prefix`` (also ``abfs[s]://container@account.dfs.core.windows.net/prefix``):
Azure Blob Storage through ``azure-storage-blob``.

- ``put_if_absent`` is one ``Put Blob`` with ``If-None-Match: *`` (409 ``BlobAlreadyExists`` or
  412 means another writer won). Each call tags its blob with a unique token in the blob metadata,
  so a retry whose first attempt did land (the response was lost) is recognised as a win.
- ``write`` of more than ``single_put_size`` bytes, or of an iterable of chunks, stages blocks of
  ``block_size`` bytes concurrently under IDs unique to that upload and commits them in one
  ``Put Block List``: readers see the old blob or the new one, and a failed stream leaves nothing.
- ``read``, ``read_range``, ``read_into`` and ``read_ranges`` split large ranges into parts of
  ``part_size`` bytes fetched concurrently into one buffer, every part after the first pinned to
  the first response's ETag.
- The SDK's own retries are off: every request goes through the backend's
  :class:`~datashard.storage.retry.RequestGate`, over one pooled HTTP transport sized to
  ``max_concurrency``.

The Azure SDK is imported only when the first request is made: ``import datashard.storage.azure``
works without it, and a missing SDK raises ``ConfigError`` naming ``pip install
azure-storage-blob azure-identity`` (the ``azure`` extra).
"""

from __future__ import annotations

import builtins
import functools
import heapq
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from datashard.errors import (
    ConfigError,
    DataShardError,
    ObjectExistsError,
    PreconditionFailedError,
    StorageError,
)
from datashard.storage._ranged_backend import RangedBackend, pool_connections
from datashard.storage.azure_config import AzureConfig
from datashard.storage.azure_errors import error_code, http_status, translate
from datashard.storage.base import (
    ObjectMeta,
    ObjectWriter,
    collect_chunks,
    slices,
    validate_key,
    validate_range,
)
from datashard.storage.part_stream import PartStream
from datashard.storage.ranged_reads import Got, Seen, Sink

MiB = 1024 * 1024

#: Blob metadata entry that tags a ``put_if_absent`` attempt (see the module docstring).
TOKEN_METADATA = "datashard_put_token"
#: Azure Blob Batch takes at most 256 sub-requests.
DELETE_BATCH = 256
#: How many times ``write`` of bytes stages its blocks when a concurrent commit discarded them.
STAGE_ATTEMPTS = 3

_INSTALL_HINT = "pip install azure-storage-blob azure-identity"


class _ViewSink:
    """A write-only stream over a memoryview, for the SDK's ``readinto``."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.pos + n > len(self.view):
            raise ValueError(f"server sent more than the {len(self.view)} bytes asked for")
        self.view[self.pos : self.pos + n] = data
        self.pos += n
        return n


def _got(down: Any, start: int) -> Got:
    """What the headers of a ranged download starting at ``start`` tell."""
    total = _total_size(down.properties.content_range, start + down.size)
    return Got(down.size, total, down.properties.etag)


def _total_size(content_range: str | None, fallback: int) -> int:
    """The object size from ``bytes a-b/total``."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return fallback


def utf8_ordered(metas: Iterable[ObjectMeta]) -> Iterator[ObjectMeta]:
    """Re-emit ``metas`` in UTF-8 byte order of their keys, streaming.

    The input is in UTF-16 code-unit order (Azurite sorts like JavaScript) or already in UTF-8
    order (then this changes nothing). The two orders disagree only where a character above
    U+FFFF (a surrogate pair in UTF-16) meets one in U+E000..U+FFFF, so an item is held back only
    until no later key can sort before it: a later key is at least ``key[:i] + U+E000``, where
    ``i`` is the first character above U+FFFF in the newest key.
    """
    heap: list[tuple[bytes, int, ObjectMeta]] = []
    for n, meta in enumerate(metas):
        heapq.heappush(heap, (meta.key.encode("utf-8"), n, meta))
        limit, inclusive = meta.key.encode("utf-8"), True
        for i, ch in enumerate(meta.key):
            if ord(ch) > 0xFFFF:
                limit, inclusive = (meta.key[:i] + "\ue000").encode("utf-8"), False
                break
        while heap and (heap[0][0] < limit or (inclusive and heap[0][0] == limit)):
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


class AzureBackend(RangedBackend):
    """Azure Blob Storage (block blobs) under the storage contract."""

    scheme = "az"
    config_class = AzureConfig
    config: AzureConfig
    delete_batch = DELETE_BATCH

    def __init__(self, config: AzureConfig) -> None:
        super().__init__(
            config,
            gate=config.request_gate(),
            max_concurrency=config.max_concurrency,
            part_size=config.part_size,
            write_block_size=config.block_size,
            single_put_size=config.single_put_size,
            write_buffer_size=config.write_buffer_size,
            prefix=config.prefix,
            pool_name="datashard-azure",
        )
        self._session: Any = None

    # -- clients ---------------------------------------------------------------------------

    def _container(self) -> Any:
        """The ``ContainerClient``, made on first use and again after a fork."""
        return self._connected()

    def _connect(self) -> Any:
        cfg = self.config
        try:
            import requests
            from azure.core.pipeline.transport import RequestsTransport
            from azure.storage.blob import ContainerClient
        except ImportError as exc:
            raise ConfigError(
                f"the az:// backend needs azure-storage-blob, which is not installed: "
                f"{_INSTALL_HINT}"
            ) from exc
        _redact_request_logs()
        session = requests.Session()
        pool_connections(session, requests.adapters.HTTPAdapter, cfg.max_concurrency)
        self._session = session
        transport = RequestsTransport(
            session=session,
            session_owner=False,
            connection_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            connection_data_block_size=1024 * 1024,  # the default 4 KiB reads cost 2x throughput
        )
        options: dict[str, Any] = {
            "transport": transport,
            "retry_total": 0,  # the RequestGate retries
            "max_single_get_size": cfg.part_size,
            "max_chunk_get_size": cfg.part_size,
            "max_single_put_size": max(cfg.single_put_size, cfg.block_size),
            "max_block_size": cfg.block_size,
            "user_agent": "datashard",
        }
        if cfg.connection_string:
            return ContainerClient.from_connection_string(
                cfg.connection_string, cfg.container, **options
            )
        url = cfg.account_url or f"https://{cfg.account_name}.blob.core.windows.net"
        return ContainerClient(url, cfg.container, credential=self._credential(), **options)

    def _credential(self) -> Any:
        cfg = self.config
        if cfg.account_key:
            from azure.core.credentials import AzureNamedKeyCredential

            return AzureNamedKeyCredential(cfg.account_name or "", cfg.account_key)
        if cfg.sas_token:
            from azure.core.credentials import AzureSasCredential

            return AzureSasCredential(cfg.sas_token.lstrip("?"))
        if cfg.anonymous:
            return None
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise ConfigError(
                "no Azure credential is configured (connection_string, account_key, sas_token or "
                "anonymous) and azure-identity, which provides the default credential chain, is "
                f"not installed: {_INSTALL_HINT}"
            ) from exc
        return DefaultAzureCredential()

    def _blob(self, key: str) -> Any:
        return self._container().get_blob_client(self._prefix + key)

    def _error(self, exc: BaseException, operation: str, key: str | None) -> DataShardError:
        return translate(
            exc, operation=operation, container=self.config.container, key=key, where=self.root_uri
        )

    def _is_sdk_error(self, exc: BaseException) -> bool:
        return _sdk_error(exc)

    # -- reads -----------------------------------------------------------------------------

    def _download(self, key: str, start: int, length: int, etag: str | None = None) -> Any:
        """One ranged GET (the SDK downloader, its first and only part already fetched)."""
        conditions: dict[str, Any] = {}
        if etag is not None:
            from azure.core import MatchConditions

            conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        return self._blob(key).download_blob(
            offset=start, length=length, max_concurrency=1, **conditions
        )

    def _get_into(self, key: str, start: int, end: int, sink: Sink, pin: str | None) -> int:
        def fetch() -> int:
            down = self._ranged_download(key, start, end, pin)
            if down is None:
                return 0
            view = sink(_got(down, start))
            count: int = down.readinto(_ViewSink(view[: down.size]))
            return count

        return self._call("read", "read", key, fetch)

    def _get_bytes(self, key: str, start: int, end: int, seen: Seen, pin: str | None) -> bytes:
        def fetch() -> bytes:
            down = self._ranged_download(key, start, end, pin)
            if down is None:
                return b""
            seen(_got(down, start))
            data: bytes = down.readall()
            return data

        return self._call("read", "read", key, fetch)

    def _ranged_download(self, key: str, start: int, end: int, pin: str | None) -> Any:
        """The downloader of ``[start, end)`` (not gated), None when ``start`` is at or past
        the end of the blob."""
        try:
            return self._download(key, start, end - start, pin)
        except Exception as exc:
            if http_status(exc) == 416:  # the blob exists; the range starts at/after its end
                return None
            raise

    def read_range_if_match(self, key: str, start: int, end: int, etag: str) -> bytes:
        """One conditional ranged GET (``If-Match``) per part: ``PreconditionFailedError`` when
        the blob no longer has ``etag``."""
        validate_key(key)
        validate_range(key, start, end)
        if start == end:
            current = self.head(key).etag
            if current != etag:
                raise PreconditionFailedError(
                    f"object {key!r} in {self.root_uri} changed: etag {etag!r} is now {current!r}",
                    key=key,
                )
            return b""
        try:
            return self._read_bytes(key, start, end, etag)
        except PreconditionFailedError:
            self.head(key)  # Azure answers 412, not 404, for a deleted blob: tell them apart
            raise

    def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        props = self._call("read", "head", key, lambda: self._blob(key).get_blob_properties())
        return ObjectMeta(
            key=key,
            size=int(props.size),
            etag=props.etag,
            version=props.version_id,
            last_modified=props.last_modified,
        )

    # -- writes ----------------------------------------------------------------------------

    def _put_sliced(self, key: str, view: memoryview) -> None:
        for attempt in range(STAGE_ATTEMPTS):  # bytes can be staged again; a stream cannot
            try:
                self._put_blocks(key, slices(view, self.config.block_size), None)
                return
            except BlocksDiscardedError:
                if attempt == STAGE_ATTEMPTS - 1:
                    raise

    def _put_stream(self, key: str, blocks: Iterable[bytes | memoryview]) -> None:
        self._put_blocks(key, blocks, None)

    def _put(self, key: str, data: bytes) -> None:
        self._call(
            "write",
            "write",
            key,
            lambda: self._blob(key).upload_blob(
                data, length=len(data), overwrite=True, max_concurrency=1
            ),
        )

    def _stage(self, key: str, block_id: str, block: bytes | memoryview) -> None:
        data = _whole(block)
        self._call(
            "write",
            "write",
            key,
            lambda: self._blob(key).stage_block(block_id, data, length=len(data)),
        )

    def _put_blocks(
        self, key: str, blocks: Iterable[bytes | memoryview], token: str | None
    ) -> None:
        """Stage ``blocks`` concurrently (a bounded number in flight), then commit them; with a
        ``token``, commit only if the blob does not exist (``put_if_absent``)."""
        from azure.storage.blob import BlobBlock

        upload = uuid.uuid4().hex
        ids: list[str] = []
        pending: deque[Future[None]] = deque()
        in_flight = max(1, min(self.config.max_concurrency, 8))
        try:
            for index, block in enumerate(blocks):
                block_id = f"{upload}{index:08d}"  # every ID of one upload has the same length
                ids.append(block_id)
                stage = functools.partial(self._stage, key, block_id, block)
                pending.append(self._parts.submit(stage))
                while len(pending) >= in_flight:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
        block_list = [BlobBlock(block_id=b) for b in ids]
        if token is None:
            self._commit_blocks(key, block_list)
            return
        from azure.core import MatchConditions

        self._create(
            key,
            token,
            lambda blob: blob.commit_block_list(
                block_list,
                metadata={TOKEN_METADATA: token},
                match_condition=MatchConditions.IfMissing,
            ),
        )

    def _commit_blocks(self, key: str, block_list: builtins.list[Any]) -> None:
        """Commit the staged ``block_list`` as the blob ``key``."""

        def commit() -> None:
            try:
                self._blob(key).commit_block_list(block_list)
            except Exception as exc:
                if error_code(exc) == "InvalidBlockList":
                    raise BlocksDiscardedError(
                        f"write {key!r} in {self.root_uri}: another writer committed this "
                        "blob while this upload staged its blocks, and Azure discarded them "
                        "(InvalidBlockList); write it again",
                        key=key,
                    ) from exc
                raise

        self._call("write", "write", key, commit)

    def open_output(self, key: str) -> ObjectWriter:
        """A stream that fills buffers of ``block_size``: one ``Put Blob`` if it ends within
        the first, else blocks staged as each fills (up to 8 in flight) and committed as a block
        list by ``close``; all streams of this backend hold at most ``write_buffer_size`` bytes
        of buffers together (plus one block each). An aborted stream commits nothing (Azure
        drops uncommitted blocks after 7 days)."""
        return _AzureStream(self, validate_key(key))

    def put_if_absent(self, key: str, data: bytes) -> None:
        validate_key(key)
        payload = collect_chunks(data)
        token = uuid.uuid4().hex
        if len(payload) > self.config.single_put_size:
            self._put_blocks(key, slices(memoryview(payload), self.config.block_size), token)
            return
        self._create(
            key,
            token,
            lambda blob: blob.upload_blob(
                payload,
                length=len(payload),
                overwrite=False,  # If-None-Match: *
                metadata={TOKEN_METADATA: token},
                max_concurrency=1,
            ),
        )

    def _create(self, key: str, token: str, send: Callable[[Any], object]) -> None:
        """Send a conditional create; a conflict after a retry that carries our ``token`` is our
        own first attempt, which landed: a win."""
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            blob = self._blob(key)
            try:
                send(blob)
                return
            except Exception as exc:
                if isinstance(exc, DataShardError) or not _sdk_error(exc):
                    raise
                code, status = error_code(exc), http_status(exc)
                # InvalidBlockList: a writer committed the blob and so discarded our blocks
                conflict = code in ("BlobAlreadyExists", "ConditionNotMet", "InvalidBlockList") or (
                    not code and status in (409, 412)
                )
                if not conflict:
                    raise self._error(exc, "put_if_absent", key) from exc
                if attempts > 1 and self._carries_token(blob, key, token):
                    return
                raise ObjectExistsError(
                    f"put_if_absent: object {key!r} already exists in {self.root_uri} "
                    f"(Azure {code or 'error'}, HTTP {status})",
                    key=key,
                ) from exc

        self._gate.call("write", attempt)

    def _carries_token(self, blob: Any, key: str, token: str) -> bool:
        load = blob.get_blob_properties
        return self._token_matches(key, token, load, _blob_missing, TOKEN_METADATA)

    # -- listing and deletes ---------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return utf8_ordered(super().list(prefix))

    def _list_page(self, full: str, token: str | None) -> tuple[builtins.list[Any], str | None]:
        def page() -> tuple[builtins.list[Any], str | None]:
            pages = (
                self._container()
                .list_blobs(name_starts_with=full or None, results_per_page=5000)
                .by_page(continuation_token=token)
            )
            items = builtins.list(next(pages, []))
            return items, pages.continuation_token

        return self._call("read", "list", full or None, page)

    def _list_meta(self, item: Any, key: str) -> ObjectMeta:
        return ObjectMeta(
            key=key,
            size=int(item.size),
            etag=_quoted(item.etag),  # listings give it bare, HEAD quoted
            version=item.version_id,
            last_modified=item.last_modified,
        )

    def delete(self, key: str) -> None:
        validate_key(key)

        def remove() -> None:
            try:
                self._blob(key).delete_blob(delete_snapshots="include")
            except Exception as exc:
                if _blob_missing(exc):
                    return
                raise

        self._call("write", "delete", key, remove)

    def _delete_batch(self, batch: builtins.list[str]) -> None:
        from azure.core.exceptions import HttpResponseError

        responses = self._container().delete_blobs(
            *[self._prefix + k for k in batch],
            delete_snapshots="include",
            raise_on_any_failure=False,
        )
        for key, response in zip(batch, responses, strict=False):
            if response.status_code in (200, 202):
                continue
            exc = HttpResponseError(response=response)
            if _blob_missing(exc):
                continue
            raise self._error(exc, "delete_many", key) from exc

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            session, self._session = self._session, None
        if client is not None and self._pid == os.getpid():
            client.close()
        if session is not None:
            session.close()
        self._parts.close()


def _whole(block: bytes | memoryview) -> bytes | bytearray:
    """``block`` as the SDK takes a body: the ``bytes`` or ``bytearray`` it views when it views
    all of one (a stream's full block buffer: no copy), else a copy."""
    if isinstance(block, memoryview):
        owner = block.obj
        if isinstance(owner, (bytes, bytearray)) and block.nbytes == len(owner):
            return owner
        return bytes(block)
    return block


class _AzureStream(PartStream):
    """``AzureBackend.open_output`` (see there)."""

    def __init__(self, backend: AzureBackend, key: str) -> None:
        cfg = backend.config
        super().__init__(
            key,
            part_size=cfg.block_size,
            in_flight=max(1, min(cfg.max_concurrency, 8)),
            pool=backend._parts,
            budget=backend.write_budget,
        )
        self._backend = backend
        self._upload = uuid.uuid4().hex

    def _put_whole(self, data: memoryview) -> None:
        self._backend._put(self.key, bytes(data))

    def _start(self) -> None:
        pass  # blocks are staged under IDs unique to this stream; nothing to begin

    def _send(self, number: int, offset: int, data: memoryview, last: bool) -> Any:
        block_id = f"{self._upload}{number:08d}"  # every ID of one upload has the same length
        self._backend._stage(self.key, block_id, data)
        return block_id

    def _finish(self, tokens: builtins.list[Any]) -> None:
        from azure.storage.blob import BlobBlock

        self._backend._commit_blocks(self.key, [BlobBlock(block_id=b) for b in tokens])

    def _cancel(self) -> None:
        pass  # uncommitted blocks are invisible, and dropped by the service after 7 days


class BlocksDiscardedError(StorageError):
    """A concurrent commit of the same blob discarded this upload's staged blocks."""


_SIGNATURE = re.compile(r"(?i)\b(sig=)[^&\s\"']+")


class _RedactSignatures(logging.Filter):
    """Hide SAS signatures in urllib3's request lines (it logs URLs, query strings included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sig=" in message.lower():
            record.msg = _SIGNATURE.sub(r"\1REDACTED", message)
            record.args = ()
        return True


_REDACTOR = _RedactSignatures()


def _redact_request_logs() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if _REDACTOR not in logger.filters:
        logger.addFilter(_REDACTOR)


def _sdk_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the SDK or the network (not a bug in the caller's code)."""
    from azure.core.exceptions import AzureError

    return isinstance(exc, (AzureError, OSError))


def _quoted(etag: str | None) -> str | None:
    return f'"{etag}"' if etag and not etag.startswith('"') else etag


def _blob_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the blob (not the container) does not exist."""
    code = error_code(exc)
    return code == "BlobNotFound" or (not code and http_status(exc) == 404)
