"""The one table that turns Azure SDK errors into datashard's error tree.

Errors are translated by the Azure Storage error code (``x-ms-error-code``) first, then by HTTP
status, then by azure-core exception class (connection failures, timeouts, credential chain
failures); never by message text. The SDK error is kept as ``__cause__`` by the caller
(``raise translate(...) from exc``).

Messages carry the operation, the error code, the HTTP status, the key and the container: never a
header, a URL (a SAS token lives in the query string), a signature or the server's own text.

This module imports only ``azure.core`` (a dependency of ``azure-storage-blob``) and only when
:func:`classify` first runs, so ``import datashard.storage.azure`` works without the SDK.
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
from datashard.storage.error_text import STATUS_TABLE, detail, storage_error

#: Azure Storage error code -> datashard error class.
CODE_TABLE: dict[str, type[StorageError]] = {
    # missing things
    "BlobNotFound": ObjectNotFoundError,
    "ResourceNotFound": ObjectNotFoundError,
    "ContainerNotFound": BucketNotFoundError,
    "ContainerBeingDeleted": BucketNotFoundError,
    # an object that exists where none was expected (put_if_absent handles these itself)
    "BlobAlreadyExists": ObjectExistsError,
    # preconditions
    "ConditionNotMet": PreconditionFailedError,
    "TargetConditionNotMet": PreconditionFailedError,
    # credentials and permissions
    "AuthenticationFailed": StoragePermissionError,
    "AuthorizationFailure": StoragePermissionError,
    "AuthorizationPermissionMismatch": StoragePermissionError,
    "AuthorizationProtocolMismatch": StoragePermissionError,
    "AuthorizationResourceTypeMismatch": StoragePermissionError,
    "AuthorizationServiceMismatch": StoragePermissionError,
    "AuthorizationSourceIPMismatch": StoragePermissionError,
    "InsufficientAccountPermissions": StoragePermissionError,
    "AccountIsDisabled": StoragePermissionError,
    "NoAuthenticationInformation": StoragePermissionError,
    "InvalidAuthenticationInfo": StoragePermissionError,
    "KeyVaultAccessTokenCannotBeAcquired": StoragePermissionError,
    "PublicAccessNotPermitted": StoragePermissionError,
    # throttling and server trouble
    "ServerBusy": TransientStorageError,
    "OperationTimedOut": TransientStorageError,
    "InternalError": TransientStorageError,
    "AccountBeingCreated": TransientStorageError,
}


def error_code(exc: BaseException) -> str:
    """The Azure Storage error code of an SDK error (``"BlobNotFound"`` ...), else ``""``."""
    code = getattr(exc, "error_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            code = headers.get("x-ms-error-code")
    if code is None:
        return ""
    return str(getattr(code, "value", code))


def http_status(exc: BaseException) -> int:
    """The HTTP status of an SDK ``HttpResponseError``, else 0."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return int(status) if isinstance(status, int) else 0


def classify(exc: BaseException) -> type[StorageError]:
    """The datashard error class for ``exc``: by code, then status, then exception class."""
    code = error_code(exc)
    if code in CODE_TABLE:
        return CODE_TABLE[code]
    status = http_status(exc)
    if status in STATUS_TABLE:
        return STATUS_TABLE[status]
    if status >= 500:
        return TransientStorageError
    from azure.core.exceptions import (
        ClientAuthenticationError,
        IncompleteReadError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ClientAuthenticationError):  # the credential chain found nothing usable
        return StoragePermissionError
    transient = (
        ServiceRequestError,
        ServiceResponseError,
        IncompleteReadError,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(exc, transient):
        return TransientStorageError
    return StorageError


def translate(
    exc: BaseException, *, operation: str, container: str, key: str | None, where: str
) -> StorageError:
    """A datashard error for ``exc`` raised by ``operation`` on ``key`` in ``container``.

    ``where`` is the backend root URI, named in the message. The caller raises the result
    ``from exc``. The message never includes the server's text (see the module docstring).
    """
    return storage_error(
        classify(exc),
        operation=operation,
        key=key,
        where=where,
        detail=detail("Azure", error_code(exc), http_status(exc), exc),
        container_kind="container",
        container=container,
        credentials="the account key, SAS token or credential",
    )
