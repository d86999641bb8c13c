"""Typed, frozen backend configuration, built from a URI plus options or from the environment.

``open_backend("s3://bucket/prefix", endpoint_url=...)`` and ``backend_from_env()`` are the two
ways in. Every backend has one frozen dataclass config (``S3Config``, ``LocalConfig`` ...) whose
fields are the only options it accepts: an unknown option or environment variable raises
:class:`~datashard.errors.ConfigError` naming it, a value of the wrong type names the field and
what was expected. Secrets are fields with ``repr=False``: they never appear in a ``repr``.

Environment (read by ``backend_from_env``):

- ``DATASHARD_STORAGE_TYPE``: ``local`` (the default), ``direct``, ``memory``, ``s3``, ``azure``,
  ``gcs``.
- ``DATASHARD_<TYPE>_<FIELD>``: a field of that backend's config, for example
  ``DATASHARD_S3_BUCKET``; each config lists short aliases (``DATASHARD_S3_ENDPOINT``).
- ``DATASHARD_MAX_CONCURRENCY``, ``DATASHARD_RETRY_ATTEMPTS``, ``DATASHARD_RETRY_FIRST_DELAY``,
  ``DATASHARD_RETRY_MAX_DELAY``, ``DATASHARD_READ_RATE_LIMIT``, ``DATASHARD_WRITE_RATE_LIMIT``:
  the settings every backend shares.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union

from datashard.errors import ConfigError
from datashard.storage.retry import RequestGate, RetryPolicy

if TYPE_CHECKING:
    from datashard.storage.base import StorageBackend

C = TypeVar("C", bound="BackendConfig")

#: The settings every backend shares, by their environment names.
COMMON_ENV = {
    "DATASHARD_MAX_CONCURRENCY": "max_concurrency",
    "DATASHARD_RETRY_ATTEMPTS": "retry_attempts",
    "DATASHARD_RETRY_FIRST_DELAY": "retry_first_delay",
    "DATASHARD_RETRY_MAX_DELAY": "retry_max_delay",
    "DATASHARD_READ_RATE_LIMIT": "read_rate_limit",
    "DATASHARD_WRITE_RATE_LIMIT": "write_rate_limit",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _default_concurrency(env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get("DATASHARD_MAX_CONCURRENCY")
    if raw is None:
        return 32
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"DATASHARD_MAX_CONCURRENCY must be a whole number, got {raw!r}"
        ) from None
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of a config class (resolving them evaluates strings:
    done once per class, not on every config made)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """Settings shared by every backend: retries, requests in flight, rate limits."""

    #: ``DATASHARD_<ENV_NAME>_*`` is this config's environment namespace.
    env_name: ClassVar[str] = ""
    #: Short environment aliases: ``{"ENDPOINT": "endpoint_url"}``.
    env_aliases: ClassVar[Mapping[str, str]] = {}

    retry_attempts: int = 32
    retry_first_delay: float = 1.0
    retry_max_delay: float = 32.0
    max_concurrency: int = field(default_factory=_default_concurrency)
    read_rate_limit: float | None = None
    write_rate_limit: float | None = None

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(type(self).__name__, f.name, value, hints[f.name])
        self.retry_policy()  # validates the retry settings
        if self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    def root_uri(self) -> str:
        """The absolute URI of the backend root, without a trailing ``/``."""
        raise NotImplementedError

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_attempts, self.retry_first_delay, self.retry_max_delay)

    def request_gate(self) -> RequestGate:
        """A fresh gate carrying this config's retry, concurrency and rate settings."""
        return RequestGate(
            self.retry_policy(),
            self.max_concurrency,
            self.read_rate_limit,
            self.write_rate_limit,
        )

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_uri(cls: type[C], uri: str, **options: Any) -> C:
        """Parse ``uri`` into this config, then apply ``options``; unknown options raise."""
        raise NotImplementedError

    @classmethod
    def build(cls: type[C], values: Mapping[str, Any], source: str = "option") -> C:
        """Make a config from field values, coercing strings; names unknown keys in the error."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown {source}{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                f" for {cls.__name__}; expected one of: {', '.join(sorted(known))}"
            )
        hints = _type_hints(cls)
        coerced = {k: _coerce(cls.__name__, k, v, hints[k]) for k, v in values.items()}
        try:
            return cls(**coerced)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def from_env(cls: type[C], env: Mapping[str, str] | None = None) -> C:
        """Build from ``DATASHARD_<ENV_NAME>_*`` and the shared ``DATASHARD_*`` settings."""
        env = os.environ if env is None else env
        prefix = f"DATASHARD_{cls.env_name}_"
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = {}
        for name, value in env.items():
            if name in COMMON_ENV:
                values[COMMON_ENV[name]] = value
            elif cls.env_name and name.startswith(prefix):
                suffix = name[len(prefix) :]
                target = cls.env_aliases.get(suffix, suffix.lower())
                if target not in fields:
                    aliases = sorted(
                        {prefix + a for a in cls.env_aliases} | {prefix + f.upper() for f in fields}
                    )
                    raise ConfigError(
                        f"unknown environment variable {name}; expected one of: "
                        + ", ".join(aliases)
                    )
                values[target] = value
        if "max_concurrency" not in values:
            # ``env`` is the only source: the field's default would read os.environ instead.
            values["max_concurrency"] = _default_concurrency(env)
        return cls.build(values, source="environment value")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(owner: str, name: str, value: Any, tp: Any) -> Any:
    """Turn an environment string into the field's type; leave other values to the type check."""
    inner, optional = _unwrap_optional(tp)
    if not isinstance(value, str) or inner is str:
        return value
    text = value.strip()
    if optional and text == "":
        return None
    try:
        if inner is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if inner is int:
            return int(text)
        if inner is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{owner}.{name} expects {_type_name(tp)}, got {value!r}") from None
    return value


def _check_type(owner: str, name: str, value: Any, tp: Any) -> None:
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return
        raise ConfigError(f"{owner}.{name} is required (expected {_type_name(tp)}), got None")
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if inner is int and isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} expects int, got bool {value!r}")
    origin = typing.get_origin(inner) or inner
    if isinstance(origin, type) and not isinstance(value, origin):
        raise ConfigError(
            f"{owner}.{name} expects {_type_name(tp)}, got {type(value).__name__} "
            + ("(value hidden)" if not _field_is_public(owner, name) else f"{value!r}")
        )


_SECRET_WORDS = ("secret", "key", "token", "password", "credential", "connection_string", "sas")


def _field_is_public(owner: str, name: str) -> bool:
    return not any(word in name for word in _SECRET_WORDS)


# --------------------------------------------------------------------------------------------
# the registry of schemes

#: scheme -> (module, backend class). Imported lazily so optional SDKs load only when used.
_SCHEMES: dict[str, tuple[str, str]] = {
    "file": ("datashard.storage.local", "LocalBackend"),
    "direct": ("datashard.storage.direct", "DirectBackend"),
    "memory": ("datashard.storage.memory", "MemoryBackend"),
    "s3": ("datashard.storage.s3", "S3Backend"),
    "az": ("datashard.storage.azure", "AzureBackend"),
    "abfs": ("datashard.storage.azure", "AzureBackend"),
    "abfss": ("datashard.storage.azure", "AzureBackend"),
    "gs": ("datashard.storage.gcs", "GCSBackend"),
}

#: DATASHARD_STORAGE_TYPE value -> scheme.
STORAGE_TYPES: dict[str, str] = {
    "local": "file",
    "direct": "direct",
    "memory": "memory",
    "s3": "s3",
    "azure": "az",
    "gcs": "gs",
}


def backend_class(scheme: str) -> type[StorageBackend]:
    """The backend class serving ``scheme``; ``ConfigError`` for an unknown scheme."""
    try:
        module_name, class_name = _SCHEMES[scheme]
    except KeyError:
        raise ConfigError(
            f"unknown storage scheme {scheme!r}; expected one of: {', '.join(sorted(_SCHEMES))}"
        ) from None
    module = importlib.import_module(module_name)
    cls: type[StorageBackend] = getattr(module, class_name)
    return cls


def split_scheme(uri: str) -> tuple[str, str]:
    """``("s3", "bucket/prefix")`` from ``"s3://bucket/prefix"``; a bare path is ``file``."""
    if not isinstance(uri, str) or not uri:
        raise ConfigError(f"storage URI must be a non-empty str, got {uri!r}")
    if "://" not in uri:
        return "file", uri
    scheme, rest = uri.split("://", 1)
    return scheme.lower(), rest


def open_backend(uri: str, **options: Any) -> StorageBackend:
    """The backend for ``uri`` (``s3://bucket/prefix``, ``file:///path``, a plain path ...).

    ``options`` are fields of that backend's config; an unknown one raises ``ConfigError``.
    """
    scheme, _ = split_scheme(uri)
    cls = backend_class(scheme)
    config = cls.config_class.from_uri(uri, **options)  # type: ignore[attr-defined]
    return cls(config)


def config_from_env(env: Mapping[str, str] | None = None) -> BackendConfig:
    """The config ``DATASHARD_STORAGE_TYPE`` and its ``DATASHARD_*`` variables describe."""
    env = os.environ if env is None else env
    kind = env.get("DATASHARD_STORAGE_TYPE", "local").strip().lower() or "local"
    if kind not in STORAGE_TYPES:
        raise ConfigError(
            f"DATASHARD_STORAGE_TYPE={kind!r} is not a storage type; expected one of: "
            + ", ".join(sorted(STORAGE_TYPES))
        )
    cls = backend_class(STORAGE_TYPES[kind])
    config: BackendConfig = cls.config_class.from_env(env)  # type: ignore[attr-defined]
    return config


def backend_from_env(env: Mapping[str, str] | None = None) -> StorageBackend:
    """The backend the environment configures; the local file system when nothing is set."""
    config = config_from_env(env)
    scheme = STORAGE_TYPES[
        (os.environ if env is None else env).get("DATASHARD_STORAGE_TYPE", "local").strip().lower()
        or "local"
    ]
    return backend_class(scheme)(config)
