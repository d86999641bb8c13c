"""The one error tree of datashard.

Every error the library raises on purpose is a :class:`DataShardError`. Storage errors also
subclass the matching built-in (``FileNotFoundError``, ``FileExistsError``, ``PermissionError``,
``ValueError``) so plain Python code that catches those still works. Errors translated from an SDK
keep the SDK error as ``__cause__``. No message ever contains a credential.
"""

from __future__ import annotations

from typing import Any


class DataShardError(Exception):
    """Root of every error datashard raises on purpose."""


class ConfigError(DataShardError, ValueError):
    """A configuration key or value is unknown, missing or of the wrong type."""


# --------------------------------------------------------------------------------------------
# storage


class StorageError(DataShardError):
    """A storage operation failed. ``key`` names the object (relative to the backend root)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object does not exist."""


class BucketNotFoundError(ObjectNotFoundError):
    """The bucket or container named in the configuration does not exist."""

    def __init__(self, message: str, bucket: str, key: str | None = None) -> None:
        super().__init__(message, key)
        self.bucket = bucket


class ObjectExistsError(StorageError, FileExistsError):
    """``put_if_absent`` lost: the object already exists."""


class StoragePermissionError(StorageError, PermissionError):
    """The credentials are wrong or lack the permission for this operation."""


class InvalidPathError(StorageError, ValueError):
    """A key is malformed: ``..``, a leading ``/``, an empty segment or a NUL byte."""


class PreconditionFailedError(StorageError):
    """The object changed under a reader pinned to its etag or version."""


class UnsupportedOperationError(StorageError, OSError):
    """The backend or file system cannot do what was asked (for example O_DIRECT on tmpfs)."""


class TransientStorageError(StorageError):
    """Throttling, a 5xx, a timeout or a reset: the only storage error that is retried."""


class CorruptFileError(StorageError):
    """An object exists but its bytes are not what its format requires (truncated, bad magic)."""


class UnsupportedFormatVersionError(CorruptFileError):
    """An object was written in a newer format version than this library reads."""

    def __init__(self, message: str, key: str | None, found: int, supported: int) -> None:
        super().__init__(message, key)
        self.found = found
        self.supported = supported

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.key, self.found, self.supported))


# --------------------------------------------------------------------------------------------
# containers (datashard.io.container)


class ContainerError(DataShardError, ValueError):
    """A lazy container was used wrongly (for example a value msgpack cannot encode)."""


class EntryNotFoundError(DataShardError, KeyError, IndexError):
    """A container has no entry at ``key`` (a map key or a list index); ``uri`` names the object."""

    def __init__(self, message: str, key: object, uri: str) -> None:
        super().__init__(message)
        self.key = key
        self.uri = uri

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.key, self.uri))


# --------------------------------------------------------------------------------------------
# tables


class TableError(DataShardError):
    """A table-level operation failed."""


class TableNotFoundError(TableError, LookupError):
    """No table at the location tried; the message names the location."""


class TableAlreadyExistsError(TableError):
    """``create_table`` found a table already at the location."""


class ValidationError(TableError, ValueError):
    """Data or a schema does not fit: names the row, the field, the expected and actual type."""


class SchemaError(TableError, ValueError):
    """A schema is malformed, or a schema change is incompatible."""


class CorruptMetadataError(TableError):
    """A metadata file, manifest list or manifest cannot be read; names the file."""


class UnsupportedFeatureError(TableError):
    """The table uses a part of the Iceberg format datashard does not handle yet; names it.
    Nothing is read or written wrongly instead."""


class SupersededVersionError(TableError):
    """A metadata version was retired (overwritten by a small "superseded" stub) because newer
    versions replaced it; load the table by name for its newest version."""


class SnapshotExpiredError(TableError, LookupError):
    """A read of a snapshot the table no longer keeps found its manifest list or a manifest
    removed: the snapshot left the kept history (``history.expire.max-snapshots``) after this
    metadata was loaded, and the upkeep or ``expire_snapshots`` removed its files.
    ``refresh()`` the table and read again."""


class CommitError(TableError):
    """A commit did not land."""


class CommitConflictError(CommitError):
    """A concurrent commit changed what this commit read; retrying would not help."""


class CommitRetriesExhaustedError(CommitError):
    """Every attempt lost the race to another writer; the table is unchanged by this commit."""


class CommitTimeoutError(CommitError):
    """The commit ran past ``commit.max-duration-ms`` before it could land; nothing was
    committed and its staged files were deleted, so the table is unchanged."""


class CommitStateUnknownError(CommitError):
    """The commit request was sent but its outcome could not be learned.

    The commit may or may not have landed; its staged files are kept. Reload the table to see.
    """


__all__ = [
    "BucketNotFoundError",
    "CommitConflictError",
    "CommitError",
    "CommitRetriesExhaustedError",
    "CommitStateUnknownError",
    "CommitTimeoutError",
    "ConfigError",
    "ContainerError",
    "CorruptFileError",
    "CorruptMetadataError",
    "DataShardError",
    "EntryNotFoundError",
    "InvalidPathError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "SchemaError",
    "SnapshotExpiredError",
    "StorageError",
    "StoragePermissionError",
    "SupersededVersionError",
    "TableAlreadyExistsError",
    "TableError",
    "TableNotFoundError",
    "TransientStorageError",
    "UnsupportedFeatureError",
    "UnsupportedFormatVersionError",
    "UnsupportedOperationError",
    "ValidationError",
]
