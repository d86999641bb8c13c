"""``s3://bucket/prefix``: the S3 backend (AWS, Ceph RADOS Gateway, moto, MinIO ...).

boto3 carries the requests; this module adds what the contract needs on top:

- every request goes through one :class:`~datashard.storage.retry.RequestGate` per backend
  (concurrency limit, rate limits, retries of transient errors only; botocore's own retries are
  off), and every botocore error is translated by :mod:`datashard.storage.s3_errors`;
- reads are the shared engine of :mod:`datashard.storage.ranged_reads` (large spans split into
  range GETs run concurrently, pinned to the first response's ETag, restarted when the object is
  replaced); this module gives it one ``GetObject`` that reads the body from the socket straight
  into its slice of the buffer (:meth:`S3Backend._get_into`);
- on plain-HTTP path-style endpoints, GETs, listings, single PUTs, HEADs and DELETEs are sent
  without boto3 (:mod:`datashard.storage.s3_lean`), which costs a fraction of its CPU;
- ``put_if_absent`` is one ``PutObject`` with ``If-None-Match: *`` carrying a unique token in its
  metadata, so a retry after a lost response that then meets its own object reports a win;
- ``write`` of large data is a multipart upload, aborted on failure; ``open_output`` (and
  ``write`` of an iterable of chunks) streams through part buffers bounded per backend
  (:mod:`datashard.storage.s3_multipart`).

The boto3 client, the gate and the thread pool are made lazily in each process: a pickled
backend carries only its config, and a forked child makes its own.
"""

from __future__ import annotations

import builtins
import http.client
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from datashard.errors import (
    ObjectExistsError,
    PreconditionFailedError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    UnsupportedOperationError,
)
from datashard.storage.base import (
    ObjectMeta,
    ObjectWriter,
    WriteData,
    byte_view,
    slices,
    validate_key,
    validate_prefix,
    validate_range,
)
from datashard.storage.parallel import PartPool
from datashard.storage.part_stream import WriteBudget
from datashard.storage.ranged_reads import Got, RangedReads, Sink
from datashard.storage.retry import RequestGate, RequestKind
from datashard.storage.s3_body import body_of, parse_total, read_body_into, unquote_etag
from datashard.storage.s3_config import MAX_SINGLE_PUT, S3Config
from datashard.storage.s3_errors import classify, error_code, http_status, translate
from datashard.storage.s3_lean import LeanS3
from datashard.storage.s3_multipart import S3Stream, upload_chunks, upload_multipart

__all__ = ["S3Backend", "S3Config"]

log = logging.getLogger("datashard.storage.s3")
T = TypeVar("T")

#: The metadata entry (``x-amz-meta-datashard-token``) that identifies a ``put_if_absent`` call.
TOKEN_META = "datashard-token"
#: Everything a botocore call can raise that the error table translates.
SDK_ERRORS = (ClientError, BotoCoreError, Urllib3HTTPError, http.client.HTTPException, OSError)
DELETE_BATCH = 1000


class S3Backend(RangedReads):
    """A :class:`StorageBackend` over one S3 bucket and prefix."""

    scheme = "s3"
    config_class = S3Config
    config: S3Config

    def __init__(self, config: S3Config) -> None:
        if not isinstance(config, S3Config):
            raise TypeError(f"S3Backend takes an S3Config, got {type(config).__name__}")
        super().__init__(config)
        self._lock = threading.Lock()
        self._pid = -1
        self._client: Any = None
        self._gate: RequestGate | None = None
        self._pool: PartPool | None = None
        self._budget: WriteBudget | None = None
        self._lean: LeanS3 | None = None

    # -- per-process state -----------------------------------------------------------------

    def _state(self) -> tuple[Any, RequestGate, PartPool]:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    # first use, or a forked child: the parent's client, locks and threads are
                    # not ours to use
                    self._client = self.config.make_client()
                    self._gate = self.config.request_gate()
                    self._pool = PartPool(self.config.max_concurrency, "datashard-s3")
                    self._budget = WriteBudget(self.config.write_buffer_size)
                    self._lean = (
                        LeanS3(self.config, self._client)
                        if LeanS3.usable(self.config, self._client)
                        else None
                    )
                    self._pid = pid
        assert self._gate is not None and self._pool is not None
        return self._client, self._gate, self._pool

    @property
    def client(self) -> Any:
        """This process's boto3 client (made on first use)."""
        return self._state()[0]

    @property
    def write_budget(self) -> WriteBudget:
        """This process's count of the part buffers held by this backend's streams."""
        self._state()
        assert self._budget is not None
        return self._budget

    @property
    def gate(self) -> RequestGate:
        """This process's request gate: concurrency, rate limits, retries."""
        return self._state()[1]

    def __enter__(self) -> S3Backend:
        return self

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                if self._pool is not None:
                    self._pool.close()
                if self._client is not None:
                    self._client.close()
                if self._lean is not None:
                    self._lean.close()
            self._client, self._gate, self._pool, self._pid = None, None, None, -1
            self._budget, self._lean = None, None

    # -- requests --------------------------------------------------------------------------

    def _extra(self) -> dict[str, str]:
        return {"RequestPayer": "requester"} if self.config.requester_pays else {}

    def _error(self, exc: BaseException, operation: str, key: str | None) -> StorageError:
        return translate(
            exc, operation=operation, bucket=self.config.bucket, key=key, where=self.root_uri
        )

    def _request(
        self, kind: RequestKind, operation: str, key: str | None, fn: Callable[[Any], T]
    ) -> T:
        """Run ``fn(client)`` through the gate, translating SDK errors; retried if transient."""
        client, gate, _ = self._state()

        def attempt() -> T:
            try:
                return fn(client)
            except StorageError:
                raise
            except SDK_ERRORS as exc:
                error = self._error(exc, operation, key)
                if isinstance(error, TransientStorageError):
                    log.debug("%s (the gate retries it if attempts remain)", error)
                raise error from exc

        return gate.call(kind, attempt)

    # -- reads -----------------------------------------------------------------------------

    def _get_into(self, key: str, start: int, end: int, sink: Sink, pin: str | None) -> int:
        params: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Key": self.config.object_key(key),
            "Range": f"bytes={start}-{end - 1}",
            **self._extra(),
        }
        if pin:
            params["IfMatch"] = pin

        def fetch(client: Any) -> int:
            lean = self._lean
            try:
                if lean is not None:  # a plain range GET without boto3 (s3_lean)
                    return lean.get_into(params["Key"], start, end, sink, pin, key)
                response = client.get_object(**params)
            except ClientError as exc:
                if error_code(exc) == "InvalidRange" or http_status(exc) == 416:
                    return 0
                raise
            body = response["Body"]
            count = int(response.get("ContentLength", 0))
            content_range = response.get("ContentRange")
            if not content_range and start != 0:
                body.close()
                raise StorageError(
                    f"GET {key!r} in {self.root_uri}: the server ignored the Range header",
                    key=key,
                )
            total = parse_total(content_range, count, start)
            try:
                view = sink(Got(count, total, unquote_etag(response.get("ETag"))))
            except BaseException:
                body.close()
                raise
            read_body_into(body, view[:count])
            return count

        return self._request("read", "GET", key, fetch)

    def _read_pool(self) -> PartPool:
        return self._state()[2]

    def _read_plan(self) -> tuple[int, int]:
        return self.config.read_threshold, self.config.read_part_size

    def read_range_if_match(self, key: str, start: int, end: int, etag: str) -> bytes:
        """``read_range`` with every GET conditional on ``etag`` (``If-Match``); raises
        ``PreconditionFailedError`` if the object no longer has it."""
        validate_key(key)
        validate_range(key, start, end)
        pin = unquote_etag(etag) or etag
        data = b"" if start == end else self._read_bytes(key, start, end, pin)
        if not data:  # nothing was fetched, so nothing was checked yet
            current = self.head(key).etag
            if current != pin:
                raise PreconditionFailedError(
                    f"GET {key!r} in {self.root_uri}: the object's etag is {current!r}, "
                    f"not {pin!r}",
                    key=key,
                )
        return data

    def read_tail(self, key: str, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes and the object size, in one suffix-range GET."""
        validate_key(key)
        validate_range(key, 0, length)
        if length == 0:
            return b"", self.head(key).size
        params = {
            "Bucket": self.config.bucket,
            "Key": self.config.object_key(key),
            "Range": f"bytes=-{length}",
            **self._extra(),
        }

        def fetch(client: Any) -> tuple[bytes, int]:
            try:
                response = client.get_object(**params)
            except ClientError as exc:
                if error_code(exc) == "InvalidRange" or http_status(exc) == 416:
                    return b"", -1  # an empty object: no suffix to give
                raise
            count = int(response.get("ContentLength", 0))
            buf = bytearray(count)
            read_body_into(response["Body"], memoryview(buf))
            content_range = response.get("ContentRange")
            if not content_range:  # a 200 with the whole object
                return bytes(buf[-length:]), count
            return bytes(buf), parse_total(content_range, count, 0)

        data, size = self._request("read", "GET", key, fetch)
        if size < 0:
            size = self.head(key).size
            if size:  # not empty after all (replaced meanwhile): read it again
                return self.read_tail(key, length)
        return data, size

    def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        response = self._request("read", "HEAD", key, self._header(key))
        version = response.get("VersionId")
        return ObjectMeta(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=unquote_etag(response.get("ETag")),
            version=None if version in (None, "null") else version,
            last_modified=response.get("LastModified"),
        )

    # -- writes ----------------------------------------------------------------------------

    def _header(self, key: str) -> Callable[[Any], Any]:
        """A ``HeadObject`` of ``key``: without boto3 where the endpoint allows it."""
        s3_key = self.config.object_key(key)

        def head(client: Any) -> Any:
            lean = self._lean
            if lean is not None:
                return lean.head(s3_key)
            return client.head_object(Bucket=self.config.bucket, Key=s3_key, **self._extra())

        return head

    def _put(self, key: str, body: bytes | memoryview) -> None:
        s3_key = self.config.object_key(key)

        def put(client: Any) -> None:
            lean = self._lean
            if lean is not None:
                lean.put(s3_key, body)
                return
            client.put_object(
                Bucket=self.config.bucket, Key=s3_key, Body=body_of(body), **self._extra()
            )

        self._request("write", "PUT", key, put)

    def write(self, key: str, data: WriteData) -> None:
        validate_key(key)
        cfg = self.config
        view = byte_view(data)
        if view is not None:
            if len(view) <= cfg.multipart_threshold:
                self._put(key, data if isinstance(data, bytes) else bytes(view))
                return
            upload_multipart(self, key, slices(view, cfg.part_size))
        else:
            upload_chunks(self, key, data)

    def open_output(self, key: str) -> ObjectWriter:
        """A stream that fills buffers of ``part_size``: one ``PutObject`` if it ends within
        the first, else a multipart upload started when the first is full (``write_concurrency``
        parts in flight), all streams of this backend holding at most ``write_buffer_size`` bytes
        of buffers together (plus one part each)."""
        return S3Stream(self, validate_key(key))

    def put_if_absent(self, key: str, data: bytes) -> None:
        validate_key(key)
        body = bytes(data)
        if len(body) > MAX_SINGLE_PUT:
            raise UnsupportedOperationError(
                f"put_if_absent({key!r}) of {len(body)} bytes: S3 conditional creates are single "
                f"PutObject requests, at most {MAX_SINGLE_PUT} bytes (5 GiB)",
                key=key,
            )
        token = uuid.uuid4().hex
        client, gate, _ = self._state()
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            lean = self._lean
            try:
                if lean is not None:
                    lean.put(
                        self.config.object_key(key),
                        body,
                        if_none_match=True,
                        metadata={TOKEN_META: token},
                    )
                    return
                client.put_object(
                    Bucket=self.config.bucket,
                    Key=self.config.object_key(key),
                    Body=body,
                    IfNoneMatch="*",
                    Metadata={TOKEN_META: token},
                    **self._extra(),
                )
            except ClientError as exc:
                code, status = error_code(exc), http_status(exc)
                if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    if attempts > 1 and self._has_token(key, token):
                        log.info(
                            "put_if_absent %r in %s: an earlier attempt's response was lost; "
                            "the object there is ours",
                            key,
                            self.root_uri,
                        )
                        return
                    raise ObjectExistsError(
                        f"put_if_absent: object {key!r} already exists in {self.root_uri}",
                        key=key,
                    ) from exc
                raise self._error(exc, "PUT (if absent)", key) from exc
            except StorageError:
                raise
            except SDK_ERRORS as exc:
                raise self._error(exc, "PUT (if absent)", key) from exc

        gate.call("write", attempt)

    def _has_token(self, key: str, token: str) -> bool:
        """Whether the object at ``key`` was written by the ``put_if_absent`` holding ``token``.

        Called from inside a ``put_if_absent`` attempt, which already holds a gate slot: the HEAD
        goes straight to the client (a second slot could deadlock at ``max_concurrency=1``); a
        transient error here makes the gate retry the whole attempt.
        """
        client, _, _ = self._state()
        try:
            response = self._header(key)(client)
        except SDK_ERRORS as exc:
            raise self._error(exc, "HEAD", key) from exc
        metadata = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
        return bool(metadata.get(TOKEN_META) == token)

    # -- listing and deletes ---------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        root = f"{self.config.prefix}/" if self.config.prefix else ""
        return self._pages(root, root + prefix, prefix)

    def _pages(self, root: str, full_prefix: str, prefix: str) -> Iterator[ObjectMeta]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "Bucket": self.config.bucket,
                "Prefix": full_prefix,
                **self._extra(),
            }
            if token:
                params["ContinuationToken"] = token
            page = self._request("read", "LIST", prefix or None, self._lister(params))
            for item in page.get("Contents", []):
                yield ObjectMeta(
                    key=item["Key"][len(root) :],
                    size=int(item.get("Size", 0)),
                    etag=unquote_etag(item.get("ETag")),
                    last_modified=item.get("LastModified"),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def _lister(self, params: dict[str, Any]) -> Callable[[Any], Any]:
        """One page of the listing ``params`` describe: without boto3 where the endpoint
        allows it (s3_lean), else through the client."""

        def page(client: Any) -> Any:
            lean = self._lean
            if lean is not None:
                return lean.list_page(params["Prefix"], params.get("ContinuationToken"))
            return client.list_objects_v2(**params)

        return page

    def delete(self, key: str) -> None:
        validate_key(key)
        s3_key = self.config.object_key(key)

        def delete(client: Any) -> None:
            lean = self._lean
            if lean is not None:
                lean.delete(s3_key)
                return
            client.delete_object(Bucket=self.config.bucket, Key=s3_key, **self._extra())

        self._request("write", "DELETE", key, delete)

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` in batches of 1000 (``DeleteObjects``); missing keys are fine.

        Keys the server refused are reported together in one error naming them and their S3
        codes: ``StoragePermissionError`` when every refusal is a permission error, else
        ``StorageError``. Every batch is attempted before that error is raised.
        """
        wanted = [validate_key(k) for k in keys]
        failures: list[tuple[str, str]] = []
        root = len(self.config.object_key(""))
        for batch_start in range(0, len(wanted), DELETE_BATCH):
            batch = wanted[batch_start : batch_start + DELETE_BATCH]
            objects = [{"Key": self.config.object_key(k)} for k in batch]
            response = self._request("write", "DELETE (batch)", batch[0], self._deleter(objects))
            for error in response.get("Errors", []):
                code = str(error.get("Code", ""))
                if code != "NoSuchKey":
                    failures.append((str(error.get("Key", ""))[root:], code))
        if failures:
            classes = {_code_class(code) for _, code in failures}
            cls = StoragePermissionError if classes == {StoragePermissionError} else StorageError
            shown = ", ".join(f"{k!r} ({c})" for k, c in failures[:10])
            more = f" and {len(failures) - 10} more" if len(failures) > 10 else ""
            raise cls(
                f"delete_many in {self.root_uri}: {len(failures)} of {len(wanted)} keys were not "
                f"deleted: {shown}{more}",
                key=failures[0][0],
            )

    def _deleter(self, objects: builtins.list[dict[str, str]]) -> Callable[[Any], Any]:
        return lambda client: client.delete_objects(
            Bucket=self.config.bucket,
            Delete={"Objects": objects, "Quiet": True},
            **self._extra(),
        )


def _code_class(code: str) -> type[StorageError]:
    return classify(ClientError({"Error": {"Code": code}}, "DeleteObjects"))
