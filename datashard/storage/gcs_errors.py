"""The one table that turns Google Cloud Storage errors into datashard's error tree.

GCS answers with an HTTP status and a JSON error whose ``errors[0].reason`` says more
(``rateLimitExceeded``, ``conditionNotMet`` ...). Errors are translated by reason first, then by
status, then by exception class (connection failures, timeouts, credential refresh failures);
never by message text. The original error is kept as ``__cause__`` by the caller
(``raise translate(...) from exc``).

Messages carry the operation, the reason, the HTTP status, the key and the bucket: never a header,
a token, a URL or the server's own text.

The Google libraries are imported only inside :func:`classify`, so this module (and
``datashard.storage.gcs``) imports without them.
"""

from __future__ import annotations

from typing import Any

from datashard.errors import (
    BucketNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from datashard.storage.error_text import STATUS_TABLE, detail, storage_error

#: GCS error reason -> datashard error class.
REASON_TABLE: dict[str, type[StorageError]] = {
    "notFound": ObjectNotFoundError,
    "conditionNotMet": PreconditionFailedError,
    "forbidden": StoragePermissionError,
    "insufficientPermissions": StoragePermissionError,
    "authError": StoragePermissionError,
    "required": StoragePermissionError,
    "accountDisabled": StoragePermissionError,
    "userProjectMissing": StoragePermissionError,
    "rateLimitExceeded": TransientStorageError,
    "userRateLimitExceeded": TransientStorageError,
    "backendError": TransientStorageError,
    "internalError": TransientStorageError,
}


class GCSResponseError(Exception):
    """A JSON-API response with an error status, from datashard's own requests."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"HTTP {status}" + (f" {reason}" if reason else ""))
        self.code = status
        self.reason = reason

    @classmethod
    def from_response(cls, response: Any) -> GCSResponseError:
        """The error of a ``requests`` response (its JSON body read for the reason)."""
        reason = ""
        try:
            body = response.json()
            errors = body.get("error", {}).get("errors") or []
            if errors:
                reason = str(errors[0].get("reason", ""))
        except Exception:  # noqa: BLE001 - an empty or non-JSON body has no reason
            reason = ""
        return cls(int(response.status_code), reason)


def http_status(exc: BaseException) -> int:
    """The HTTP status carried by ``exc`` (api_core errors, requests errors, ours), else 0."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else 0


def error_reason(exc: BaseException) -> str:
    """The GCS error reason (``"notFound"`` ...) carried by ``exc``, else ``""``."""
    if isinstance(exc, GCSResponseError):
        return exc.reason
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("reason", ""))
    return ""


def classify(exc: BaseException) -> type[StorageError]:
    """The datashard error class for ``exc``: by reason, then status, then exception class."""
    reason = error_reason(exc)
    if reason in REASON_TABLE:
        return REASON_TABLE[reason]
    status = http_status(exc)
    if status in STATUS_TABLE:
        return STATUS_TABLE[status]
    if status >= 500:
        return TransientStorageError
    import requests
    from google.auth import exceptions as auth_errors

    if isinstance(exc, (auth_errors.RefreshError, auth_errors.DefaultCredentialsError)):
        return StoragePermissionError
    transient = (
        auth_errors.TransportError,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(exc, transient):
        return TransientStorageError
    try:
        from urllib3.exceptions import HTTPError as Urllib3HTTPError
    except ImportError:  # pragma: no cover - urllib3 comes with requests
        return StorageError
    if isinstance(exc, Urllib3HTTPError):
        return TransientStorageError
    return StorageError


def translate(
    exc: BaseException, *, operation: str, bucket: str, key: str | None, where: str
) -> StorageError:
    """A datashard error for ``exc`` raised by ``operation`` on ``key`` in ``bucket``.

    ``where`` is the backend root URI, named in the message. The caller raises the result
    ``from exc``. A 404 is an ``ObjectNotFoundError`` here; the backend decides whether the
    bucket is what is missing.
    """
    return storage_error(
        classify(exc),
        operation=operation,
        key=key,
        where=where,
        detail=detail("GCS", error_reason(exc), http_status(exc), exc),
        container_kind="bucket",
        container=bucket,
        credentials="the service account, token or default credentials",
    )


def bucket_missing(operation: str, bucket: str, key: str | None, where: str) -> StorageError:
    """The error for a request whose bucket does not exist."""
    what = f"{key!r} in {where}" if key is not None else where
    return BucketNotFoundError(
        f"{operation} {what}: bucket {bucket!r} does not exist; create it or fix the bucket in "
        f"the storage URI",
        bucket=bucket,
        key=key,
    )
