"""``S3Config``: the frozen settings of ``s3://bucket/prefix``, and the boto3 client they make.

Credentials come from exactly one place: explicit keys, a named profile, ``anonymous=True``
(unsigned requests) or, when none is given, boto3's default chain (environment, shared files,
instance metadata). Secret fields have ``repr=False``: no ``repr`` or ``str`` shows them.

botocore's own retries are switched off (``total_max_attempts=1``): every request goes through
the backend's :class:`~datashard.storage.retry.RequestGate`, which retries transient errors only.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from datashard.errors import ConfigError
from datashard.storage.base import validate_key
from datashard.storage.config import BackendConfig, check_endpoint, split_scheme

log = logging.getLogger("datashard.storage.s3")

MiB = 1024 * 1024
#: S3's limits on multipart uploads.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
#: The largest object a single PutObject (and so ``put_if_absent``) may carry.
MAX_SINGLE_PUT = 5 * 1024 * MiB


_LOADER: Any = None
_LOADER_LOCK = threading.Lock()


def _botocore_session() -> Any:
    """A new botocore session (credentials and profile resolved for it alone, as before) that
    shares one data loader per process: loading and parsing the S3 service model is most of
    the 60 ms a new client costs; with the loader shared, a client costs about 9 ms."""
    import botocore.session

    global _LOADER
    session = botocore.session.get_session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
        loader = _LOADER
    session.register_component("data_loader", loader)
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=response_time
    )
    return session


def response_time(value: Any) -> datetime:
    """A timestamp of a response: S3's ISO 8601 form (``LastModified`` of a listing) with
    ``datetime.fromisoformat``, anything else with botocore's own parser. botocore parses each
    with dateutil, about 0.13 ms apiece: 130 ms of CPU for one page of a listing."""
    if isinstance(value, str) and value.endswith("Z"):
        try:
            return datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    parsed: datetime = parse_timestamp(value)
    return parsed


def _dedupe_search_paths() -> None:
    """Each boto3 session adds its data directory to its loader's search paths: on the shared
    loader that would grow by one entry per client made. Keep each path once, in order."""
    with _LOADER_LOCK:
        if _LOADER is not None:
            paths = _LOADER.search_paths
            paths[:] = list(dict.fromkeys(paths))


def _new_lock_after_fork() -> None:
    global _LOADER_LOCK
    _LOADER_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


@dataclass(frozen=True, kw_only=True)
class S3Config(BackendConfig):
    """``s3://bucket/prefix`` and how to reach it.

    Data path: ``read_into``, ``read``, ``read_range`` and ``read_ranges`` fetch spans larger than
    ``read_threshold`` as concurrent range GETs of ``read_part_size`` bytes (at most
    ``max_concurrency`` in flight). ``write`` uploads data larger than ``multipart_threshold`` as
    a multipart upload of ``part_size`` parts, ``write_concurrency`` parts in flight; streams
    (``open_output``) hold at most ``write_buffer_size`` bytes of part buffers together.
    """

    env_name = "S3"
    env_aliases = {
        "ENDPOINT": "endpoint_url",
        "ACCESS_KEY": "access_key_id",
        "SECRET_KEY": "secret_access_key",
        "TOKEN": "session_token",
    }

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    anonymous: bool = False
    #: ``True``: path-style URLs (``endpoint/bucket/key``); ``False``: virtual-hosted; ``None``:
    #: botocore decides.
    path_style: bool | None = None
    requester_pays: bool = False
    multipart_threshold: int = 32 * MiB
    part_size: int = 16 * MiB
    write_concurrency: int = 4
    #: The part buffers that all streamed writes (``open_output``, ``write`` of an iterable) of
    #: one backend hold together; each stream holds at least one part.
    write_buffer_size: int = 48 * MiB
    read_threshold: int = 8 * MiB
    read_part_size: int = 8 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bucket or "/" in self.bucket:
            raise ConfigError(
                f"S3Config.bucket must be a bucket name without '/', got {self.bucket!r}"
            )
        prefix = self.prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except ValueError:
                raise ConfigError(
                    f"S3Config.prefix {self.prefix!r} is not a valid key prefix "
                    "(no '..', '.', empty segments or NUL)"
                ) from None
        object.__setattr__(self, "prefix", prefix)
        # botocore would refuse it only at the first request, as "ValueError: Invalid endpoint"
        check_endpoint("S3Config", "endpoint_url", "DATASHARD_S3_ENDPOINT", self.endpoint_url)
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ConfigError("S3Config needs both access_key_id and secret_access_key, or neither")
        if self.anonymous and (self.access_key_id is not None or self.profile is not None):
            raise ConfigError("S3Config.anonymous=True cannot be combined with keys or a profile")
        if self.access_key_id is not None and self.profile is not None:
            raise ConfigError("S3Config takes explicit keys or a profile, not both")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ConfigError(
                f"S3Config.part_size must be between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} "
                f"(5 GiB), got {self.part_size}"
            )
        if not 0 <= self.multipart_threshold <= MAX_SINGLE_PUT:
            raise ConfigError(
                f"S3Config.multipart_threshold must be between 0 and {MAX_SINGLE_PUT} (5 GiB), "
                f"got {self.multipart_threshold}"
            )
        for name in ("write_concurrency", "read_part_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"S3Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.write_buffer_size < 0:
            raise ConfigError(
                f"S3Config.write_buffer_size must be >= 0 bytes, got {self.write_buffer_size}"
            )
        if self.read_threshold < 0:
            raise ConfigError(f"S3Config.read_threshold must be >= 0, got {self.read_threshold}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError(
                f"S3Config timeouts must be > 0, got connect_timeout={self.connect_timeout}, "
                f"read_timeout={self.read_timeout}"
            )

    def __str__(self) -> str:
        return repr(self)

    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_key(self, key: str) -> str:
        """The S3 key of a backend key (the prefix joined in front)."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def credential_source(self) -> str:
        """Where the credentials come from, for log lines: never the credentials themselves."""
        if self.anonymous:
            return "anonymous"
        if self.access_key_id is not None:
            return "explicit keys"
        if self.profile is not None:
            return f"profile {self.profile!r}"
        return "default chain"

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> S3Config:
        """``s3://bucket/prefix`` plus options (fields of this class)."""
        scheme, rest = split_scheme(uri)
        if scheme != "s3":
            raise ConfigError(f"S3Config takes an s3:// URI, got {uri!r}")
        bucket, _, prefix = rest.partition("/")
        for name, value in (("bucket", bucket), ("prefix", prefix.strip("/"))):
            if name in options and options[name] != value:
                raise ConfigError(f"option {name}={options[name]!r} contradicts the URI {uri!r}")
        return cls.build({**options, "bucket": bucket, "prefix": prefix})

    def make_client(self) -> Any:
        """A new boto3 S3 client for these settings (one per process; clients are thread-safe)."""
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config as BotoConfig

        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            profile_name=self.profile,
            botocore_session=_botocore_session(),
        )
        _dedupe_search_paths()
        region = self.region or session.region_name or "us-east-1"
        s3_options: dict[str, Any] = {}
        if self.path_style is not None:
            s3_options["addressing_style"] = "path" if self.path_style else "virtual"
        boto_config = BotoConfig(
            region_name=region,
            signature_version=UNSIGNED if self.anonymous else None,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self.max_concurrency + self.write_concurrency,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            s3=s3_options or None,
            # Checksums only where S3 requires them: many S3-compatible servers reject the
            # trailing-checksum uploads newer botocore sends by default, and ranged GETs carry
            # no whole-object checksum to validate.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        log.debug(
            "creating S3 client for %s (endpoint %s, region %s, credentials: %s)",
            self.root_uri(),
            self.endpoint_url or "AWS",
            region,
            self.credential_source(),
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=boto_config)
