"""The one table that turns botocore errors into datashard's error tree.

Errors are translated by S3 error code first, then by HTTP status, then by botocore exception
class (connection failures, timeouts, resets); never by message text. The botocore error is kept
as ``__cause__`` by the caller (``raise translate(...) from exc``).

Messages carry the operation, the S3 error code, the HTTP status, the key and the bucket: never a
header, a signature, a request id or anything that could hold a credential. The server's own
message text is left out on purpose: some servers echo the access key id or the string to sign.
"""

from __future__ import annotations

import http.client
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from datashard.errors import (
    BucketNotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from datashard.storage.error_text import STATUS_TABLE, detail, storage_error

#: S3 error code -> datashard error class.
CODE_TABLE: dict[str, type[StorageError]] = {
    # missing things
    "NoSuchKey": ObjectNotFoundError,
    "NotFound": ObjectNotFoundError,
    "NoSuchVersion": ObjectNotFoundError,
    "NoSuchUpload": ObjectNotFoundError,
    "NoSuchBucket": BucketNotFoundError,
    # credentials and permissions
    "AccessDenied": StoragePermissionError,
    "AllAccessDisabled": StoragePermissionError,
    "InvalidAccessKeyId": StoragePermissionError,
    "SignatureDoesNotMatch": StoragePermissionError,
    "InvalidToken": StoragePermissionError,
    "ExpiredToken": StoragePermissionError,
    "TokenRefreshRequired": StoragePermissionError,
    "AccountProblem": StoragePermissionError,
    "RequestTimeTooSkewed": StoragePermissionError,
    # preconditions
    "PreconditionFailed": PreconditionFailedError,
    "ConditionalRequestConflict": ObjectExistsError,
    # throttling and server trouble: retried
    "SlowDown": TransientStorageError,
    "Throttling": TransientStorageError,
    "ThrottlingException": TransientStorageError,
    "RequestLimitExceeded": TransientStorageError,
    "TooManyRequests": TransientStorageError,
    "ServiceUnavailable": TransientStorageError,
    "InternalError": TransientStorageError,
    "RequestTimeout": TransientStorageError,
    "RequestTimeoutException": TransientStorageError,
    "OperationAborted": TransientStorageError,
}

#: Exceptions raised without any HTTP response: the connection failed, timed out or was reset.
TRANSIENT_CLASSES: tuple[type[BaseException], ...] = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
    HTTPClientError,
    Urllib3HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)

#: Credentials that could not be found at all.
CREDENTIAL_CLASSES: tuple[type[BaseException], ...] = (NoCredentialsError, PartialCredentialsError)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ``ClientError`` (``"NoSuchKey"``, ``"404"`` ...), else ``""``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or "")
    return ""


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ``ClientError``, else 0."""
    if isinstance(exc, ClientError):
        meta: dict[str, Any] = exc.response.get("ResponseMetadata", {}) or {}
        try:
            return int(meta.get("HTTPStatusCode", 0) or 0)
        except (TypeError, ValueError):
            return 0
    return 0


def classify(exc: BaseException) -> type[StorageError]:
    """The datashard error class for ``exc``: by code, then status, then exception class."""
    code = error_code(exc)
    if code in CODE_TABLE:
        return CODE_TABLE[code]
    status = http_status(exc)
    if code.isdigit() and status == 0:
        status = int(code)
    if status in STATUS_TABLE:
        return STATUS_TABLE[status]
    if isinstance(exc, ClientError) and status >= 500:
        return TransientStorageError
    if isinstance(exc, CREDENTIAL_CLASSES):
        return StoragePermissionError
    if isinstance(exc, TRANSIENT_CLASSES):
        return TransientStorageError
    return StorageError


def translate(
    exc: BaseException, *, operation: str, bucket: str, key: str | None, where: str
) -> StorageError:
    """A datashard error for ``exc`` raised by ``operation`` on ``key`` in ``bucket``.

    ``where`` is the backend root URI, named in the message. The caller raises the result
    ``from exc``. The message never includes the server's text (see the module docstring).
    """
    return storage_error(
        classify(exc),
        operation=operation,
        key=key,
        where=where,
        detail=detail("S3", error_code(exc), http_status(exc), exc),
        container_kind="bucket",
        container=bucket,
        credentials="the credentials",
    )
