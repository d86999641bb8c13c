"""Storage backends under one contract: local, direct, memory, S3, Azure, GCS."""

from datashard.storage.base import ObjectMeta, ObjectWriter, StorageBackend, validate_key
from datashard.storage.config import (
    BackendConfig,
    backend_from_env,
    config_from_env,
    open_backend,
)

__all__ = [
    "BackendConfig",
    "ObjectMeta",
    "ObjectWriter",
    "StorageBackend",
    "backend_from_env",
    "config_from_env",
    "open_backend",
    "validate_key",
]
