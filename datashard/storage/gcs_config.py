"""``GCSConfig``: where the objects of a ``gs://`` backend live and how to reach them. Secrets
(``credentials_json``, ``token``) never appear in a ``repr``; ``service_account_file`` is a path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datashard.errors import ConfigError
from datashard.storage.base import validate_key
from datashard.storage.config import BackendConfig, check_endpoint, split_scheme

MiB = 1024 * 1024
#: Resumable upload chunks must be multiples of this (the last chunk excepted).
CHUNK_QUANTUM = 256 * 1024


@dataclass(frozen=True, kw_only=True)
class GCSConfig(BackendConfig):
    """Where the objects live and how to reach them.

    Credentials, in order of precedence: ``anonymous=True``; ``service_account_file`` (a path to
    a service-account JSON key file); ``credentials_json`` (the contents of such a file);
    ``token`` (an OAuth2 access token); otherwise Google's default chain
    (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the metadata server), or anonymous access when
    only ``STORAGE_EMULATOR_HOST`` is set. At most one may be set.
    """

    env_name: ClassVar[str] = "GCS"
    env_aliases: ClassVar[dict[str, str]] = {
        "CREDENTIALS_FILE": "service_account_file",
        "KEY_FILE": "service_account_file",
        "CREDENTIALS": "credentials_json",
    }

    bucket: str
    prefix: str = ""
    project: str | None = None
    #: API endpoint, e.g. ``http://127.0.0.1:9023`` for an emulator; default
    #: ``STORAGE_EMULATOR_HOST`` if set, else https://storage.googleapis.com.
    endpoint: str | None = None
    service_account_file: str | None = None
    credentials_json: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    anonymous: bool = False
    #: Ranged reads are split into parts of this size, fetched concurrently.
    part_size: int = 16 * MiB
    #: Resumable upload chunk size: a multiple of 256 KiB.
    chunk_size: int = 8 * MiB
    #: ``write`` of bytes up to this size is one upload request; larger ones are resumable.
    single_put_size: int = 16 * MiB
    #: The part buffers that all streamed writes (``open_output``) of one backend hold
    #: together; each stream holds at least one part.
    write_buffer_size: int = 48 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bucket or "/" in self.bucket:
            raise ConfigError(f"GCSConfig.bucket {self.bucket!r} is not a bucket name")
        if self.prefix and (self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ConfigError(f"GCSConfig.prefix {self.prefix!r} must not start or end with '/'")
        if self.prefix:
            validate_key(self.prefix)
        # a bare host:port is taken as http://host:port (as STORAGE_EMULATOR_HOST is)
        check_endpoint(
            "GCSConfig", "endpoint", "DATASHARD_GCS_ENDPOINT", self.endpoint, bare_host_ok=True
        )
        chosen = [
            name
            for name in ("anonymous", "service_account_file", "credentials_json", "token")
            if getattr(self, name)
        ]
        if len(chosen) > 1:
            raise ConfigError(
                f"GCSConfig takes one kind of credential, got {' and '.join(chosen)}; keep one"
            )
        if self.write_buffer_size < 0:
            raise ConfigError(
                f"GCSConfig.write_buffer_size must be >= 0 bytes, got {self.write_buffer_size}"
            )
        for name in ("part_size", "chunk_size", "single_put_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GCSConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.chunk_size % CHUNK_QUANTUM:
            raise ConfigError(
                f"GCSConfig.chunk_size must be a multiple of 256 KiB, got {self.chunk_size}"
            )

    def root_uri(self) -> str:
        return f"gs://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> GCSConfig:
        """``gs://bucket/prefix`` plus options."""
        scheme, rest = split_scheme(uri)
        if scheme != "gs":
            raise ConfigError(f"GCSConfig takes a gs:// URI, got {uri!r}")
        bucket, _, path = rest.partition("/")
        if not bucket:
            raise ConfigError(f"storage URI {uri!r} names no bucket; expected gs://bucket/")
        values = {"bucket": bucket, "prefix": path.strip("/")}
        for name, value in values.items():
            if name in options and options[name] != value:
                raise ConfigError(
                    f"option {name}={options[name]!r} contradicts the URI {uri!r} ({value!r})"
                )
        return cls.build({**values, **options})
