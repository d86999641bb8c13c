"""Multipart uploads for ``S3Backend.write``: parts of ``part_size``, a few in flight, aborted on
failure, so that neither a half-written object nor an orphaned upload is left behind.

Data that turns out to be no larger than ``multipart_threshold`` (an iterable that ends early)
is sent as one ``PutObject`` instead. A multipart upload is never used for ``put_if_absent``: Ceph
RGW ignores ``If-None-Match`` on ``CompleteMultipartUpload``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, wait
from itertools import chain
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from datashard.errors import StorageError, UnsupportedOperationError
from datashard.storage.base import rechunk
from datashard.storage.s3_config import MAX_PARTS
from datashard.storage.s3_errors import error_code

if TYPE_CHECKING:
    from datashard.storage.s3 import S3Backend

log = logging.getLogger("datashard.storage.s3")


def upload_multipart(backend: S3Backend, key: str, chunks: Iterable[Any]) -> None:
    """Write ``chunks`` to ``key``: one PutObject if they total at most the threshold, else a
    multipart upload. Raises the first part's error after aborting the upload."""
    cfg = backend.config
    parts = rechunk(chunks, cfg.part_size)
    head: list[bytes] = []
    size = 0
    for block in parts:
        head.append(block)
        size += len(block)
        if size > cfg.multipart_threshold:
            break
    else:
        backend._put(key, b"".join(head))
        return
    _Upload(backend, key).run(chain(head, parts))


class _Upload:
    def __init__(self, backend: S3Backend, key: str) -> None:
        self.backend = backend
        self.key = key
        self.cfg = backend.config
        self.s3_key = self.cfg.object_key(key)
        self.extra = backend._extra()

    def run(self, blocks: Iterable[bytes]) -> None:
        backend, cfg = self.backend, self.cfg
        response = backend._request(
            "write",
            "CreateMultipartUpload",
            self.key,
            lambda c: c.create_multipart_upload(Bucket=cfg.bucket, Key=self.s3_key, **self.extra),
        )
        upload_id: str = response["UploadId"]
        pool = backend._state()[2]
        in_flight: deque[Future[dict[str, Any]]] = deque()
        done: list[dict[str, Any]] = []
        try:
            for number, block in enumerate(blocks, start=1):
                if number > MAX_PARTS:
                    raise UnsupportedOperationError(
                        f"write({self.key!r}): more than {MAX_PARTS} parts of {cfg.part_size} "
                        "bytes; raise S3Config.part_size for objects this large",
                        key=self.key,
                    )
                in_flight.append(pool.submit(self._part_task(upload_id, number, block)))
                while len(in_flight) >= cfg.write_concurrency:
                    done.append(in_flight.popleft().result())
            while in_flight:
                done.append(in_flight.popleft().result())
            self._complete(upload_id, done)
        except BaseException:
            for f in in_flight:
                f.cancel()
            wait(in_flight)
            self._abort(upload_id)
            raise

    def _part_task(self, upload_id: str, number: int, block: bytes) -> Any:
        def task() -> dict[str, Any]:
            response = self.backend._request(
                "write",
                f"UploadPart {number}",
                self.key,
                lambda c: c.upload_part(
                    Bucket=self.cfg.bucket,
                    Key=self.s3_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=block,
                    **self.extra,
                ),
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        return task

    def _complete(self, upload_id: str, parts: list[dict[str, Any]]) -> None:
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

    def _abort(self, upload_id: str) -> None:
        """Best effort, one attempt: the caller raises the error that made us abort."""
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
