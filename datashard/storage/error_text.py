"""The wording of storage errors, shared by the SDK error tables (S3, Azure, GCS).

Each SDK module decides WHICH error an SDK exception is (by error code or status, in its own
table); this module only says it, the same way everywhere. Messages name the operation, the key
and the backend root, the service's error code and HTTP status, and what to check; they never
include the server's own text, which can echo request details.
"""

from __future__ import annotations

from datashard.errors import (
    BucketNotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)

#: HTTP status -> datashard error class, the same for every service (each SDK module looks its
#: own error codes up first; a HEAD response has no body, so only its status tells).
STATUS_TABLE: dict[int, type[StorageError]] = {
    401: StoragePermissionError,
    403: StoragePermissionError,
    404: ObjectNotFoundError,
    408: TransientStorageError,
    412: PreconditionFailedError,
    429: TransientStorageError,
    500: TransientStorageError,
    502: TransientStorageError,
    503: TransientStorageError,
    504: TransientStorageError,
}


def detail(service: str, code: str | None, status: int | None, exc: BaseException) -> str:
    """``"S3 NoSuchKey, HTTP 404"``; the exception's class name when there is neither."""
    if not code and not status:
        return type(exc).__name__
    return f"{service} {code or 'error'}" + (f", HTTP {status}" if status else "")


def storage_error(
    cls: type[StorageError],
    *,
    operation: str,
    key: str | None,
    where: str,
    detail: str,
    container_kind: str,
    container: str,
    credentials: str,
) -> StorageError:
    """An instance of ``cls`` for ``operation`` on ``key`` under ``where``.

    ``container_kind`` is ``"bucket"`` or ``"container"``; ``credentials`` names what to check
    on a refusal (``"the credentials"``, ``"the account key, SAS token or credential"``).
    """
    what = f"{key!r} in {where}" if key is not None else where
    if cls is BucketNotFoundError:
        return BucketNotFoundError(
            f"{operation} {what}: {container_kind} {container!r} does not exist ({detail}); "
            f"create it or fix the {container_kind} in the storage URI",
            bucket=container,
            key=key,
        )
    if cls is ObjectNotFoundError:
        message = f"{operation}: no object {what} ({detail})"
    elif cls is StoragePermissionError:
        message = (
            f"{operation} {what} was refused ({detail}): check {credentials} and that it may "
            f"access {container_kind} {container!r}"
        )
    elif cls is TransientStorageError:
        message = f"{operation} {what} failed with a transient error ({detail}); it may be retried"
    elif cls is PreconditionFailedError:
        message = f"{operation} {what}: the object changed while it was read ({detail})"
    elif cls is ObjectExistsError:
        message = f"{operation} {what}: the object already exists ({detail})"
    else:
        message = f"{operation} {what} failed ({detail})"
    return cls(message, key=key)
