"""Multipart uploads for ``S3Backend``: ``write`` of large bytes, and streams (``open_output``,
``write`` of an iterable of chunks), aborted on failure, so that neither a half-written object nor
an orphaned upload is left behind.

- ``write`` of bytes larger than ``multipart_threshold`` sends views of the caller's bytes as
  parts of ``part_size``, ``write_concurrency`` in flight.
- A stream (:class:`S3Stream`, a :class:`~datashard.storage.part_stream.PartStream`) fills part
  buffers of ``part_size`` and starts the multipart upload only when its first part is full and
  more bytes come; a stream that ends within one part is one ``PutObject``. Its buffers count
  against the backend's ``write_buffer_size``, shared by all its streams.

A multipart upload is never used for ``put_if_absent``: Ceph RGW ignores ``If-None-Match`` on
``CompleteMultipartUpload``. Data files are not a commit point, so plain multipart suits them.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from datashard.errors import StorageError, UnsupportedOperationError
from datashard.storage.part_stream import PartStream
from datashard.storage.s3_body import body_of
from datashard.storage.s3_config import MAX_PARTS
from datashard.storage.s3_errors import error_code

if TYPE_CHECKING:
    from datashard.storage.s3 import S3Backend

log = logging.getLogger("datashard.storage.s3")


def upload_multipart(backend: S3Backend, key: str, parts: Iterable[memoryview]) -> None:
    """Write ``parts`` (views of ``part_size`` bytes, the last shorter) to ``key`` as a multipart
    upload, ``write_concurrency`` parts in flight. Raises the first part's error after aborting
    the upload."""
    _Upload(backend, key).run(parts)


def upload_chunks(backend: S3Backend, key: str, chunks: Iterable[Any]) -> None:
    """Write the bytes of ``chunks`` to ``key`` through a stream: one ``PutObject`` if they fit
    in one part, else a multipart upload. If ``chunks`` raises, nothing is published."""
    with S3Stream(backend, key) as out:
        for chunk in chunks:
            if isinstance(chunk, str):
                raise TypeError("write() chunks must be bytes-like, got str; encode it first")
            out.write(chunk)


class S3Stream(PartStream):
    """``S3Backend.open_output``: a stream uploaded as a multipart upload once it outgrows one
    part (see the module docstring)."""

    def __init__(self, backend: S3Backend, key: str) -> None:
        cfg = backend.config
        super().__init__(
            key,
            part_size=cfg.part_size,
            in_flight=cfg.write_concurrency,
            pool=backend._state()[2],
            budget=backend.write_budget,
        )
        self._upload = _Upload(backend, key)
        self._backend = backend

    def _put_whole(self, data: memoryview) -> None:
        self._backend._put(self.key, data)

    def _start(self) -> None:
        self._upload.start()

    def _send(self, number: int, offset: int, data: memoryview, last: bool) -> Any:
        return self._upload.part(number, data)

    def _finish(self, tokens: list[Any]) -> None:
        self._upload.complete(tokens)

    def _cancel(self) -> None:
        self._upload.abort()


class _Upload:
    def __init__(self, backend: S3Backend, key: str) -> None:
        self.backend = backend
        self.key = key
        self.cfg = backend.config
        self.s3_key = self.cfg.object_key(key)
        self.extra = backend._extra()
        self.upload_id = ""

    def start(self) -> None:
        """CreateMultipartUpload."""
        cfg = self.cfg
        response = self.backend._request(
            "write",
            "CreateMultipartUpload",
            self.key,
            lambda c: c.create_multipart_upload(Bucket=cfg.bucket, Key=self.s3_key, **self.extra),
        )
        self.upload_id = response["UploadId"]

    def run(self, blocks: Iterable[memoryview]) -> None:
        """Start, send ``blocks`` (``write_concurrency`` in flight), complete; abort on error."""
        cfg = self.cfg
        self.start()
        pool = self.backend._state()[2]
        in_flight: deque[Future[dict[str, Any]]] = deque()
        done: list[dict[str, Any]] = []
        try:
            for number, block in enumerate(blocks, start=1):
                in_flight.append(pool.submit(functools.partial(self.part, number, block)))
                while len(in_flight) >= cfg.write_concurrency:
                    done.append(in_flight.popleft().result())
            while in_flight:
                done.append(in_flight.popleft().result())
            self.complete(done)
        except BaseException:
            for f in in_flight:
                f.cancel()
            wait(in_flight)
            self.abort()
            raise

    def part(self, number: int, block: memoryview | bytes) -> dict[str, Any]:
        """UploadPart ``number``; its entry of the CompleteMultipartUpload list."""
        if number > MAX_PARTS:
            raise UnsupportedOperationError(
                f"write({self.key!r}): more than {MAX_PARTS} parts of {self.cfg.part_size} "
                "bytes; raise S3Config.part_size for objects this large",
                key=self.key,
            )
        response = self.backend._request(
            "write",
            f"UploadPart {number}",
            self.key,
            lambda c: c.upload_part(
                Bucket=self.cfg.bucket,
                Key=self.s3_key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body_of(block),
                **self.extra,
            ),
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def complete(self, parts: list[dict[str, Any]]) -> None:
        """CompleteMultipartUpload of ``parts``."""
        upload_id = self.upload_id
        attempts = 0
        backend = self.backend

        def complete(client: Any) -> None:
            nonlocal attempts
            attempts += 1
            try:
                client.complete_multipart_upload(
                    Bucket=self.cfg.bucket,
                    Key=self.s3_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **self.extra,
                )
            except ClientError as exc:
                if attempts > 1 and error_code(exc) == "NoSuchUpload":
                    return  # an earlier attempt completed it; its response was lost
                raise

        backend._request("write", "CompleteMultipartUpload", self.key, complete)

    def abort(self) -> None:
        """AbortMultipartUpload: best effort, one attempt (the caller raises the error that made
        us abort)."""
        upload_id = self.upload_id
        try:
            self.backend._state()[0].abort_multipart_upload(
                Bucket=self.cfg.bucket, Key=self.s3_key, UploadId=upload_id, **self.extra
            )
        except (ClientError, StorageError, OSError, Exception) as exc:
            log.warning(
                "could not abort multipart upload of %r in %s (%s); an incomplete upload may "
                "remain until a lifecycle rule removes it",
                self.key,
                self.backend.root_uri,
                error_code(exc) or type(exc).__name__,
            )
