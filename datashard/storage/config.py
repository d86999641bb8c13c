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

Any other ``DATASHARD_*`` variable is a ``ConfigError`` naming it (and the known name it
resembles), and so is a variable of another storage type than the chosen one
(``DATASHARD_S3_BUCKET`` without ``DATASHARD_STORAGE_TYPE=s3``). Only ``DATASHARD_TEST_*``,
``DATASHARD_BENCH_*`` and ``DATASHARD_SERVER_*``, which datashard's test and benchmark tools
read, are left alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import types
import typing
import urllib.parse
from collections.abc import Collection, Mapping
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
    "DATASHARD_RETRY_DEADLINE": "retry_deadline",
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
    #: seconds one request may take in all, retries and their sleeps included
    retry_deadline: float = 30.0
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
        return RetryPolicy(
            self.retry_attempts, self.retry_first_delay, self.retry_max_delay, self.retry_deadline
        )

    def request_gate(self) -> RequestGate:
        """A fresh gate carrying this config's retry, concurrency and rate settings."""
        endpoint = getattr(self, "endpoint_url", None) or getattr(self, "endpoint", None)
        where = self.root_uri()
        if isinstance(endpoint, str) and endpoint:
            parts = urllib.parse.urlsplit(endpoint)  # never a user:password or a query
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            where += f" at {parts.scheme + '://' if parts.scheme else ''}{host}{port}{parts.path}"
        return RequestGate(
            self.retry_policy(),
            self.max_concurrency,
            self.read_rate_limit,
            self.write_rate_limit,
            endpoint=where,
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
    def env_variables(cls) -> dict[str, str]:
        """The ``DATASHARD_<ENV_NAME>_*`` variables this config reads, each mapped to its field:
        every field by its upper-case name, and the short aliases."""
        if not cls.env_name:
            return {}
        prefix = f"DATASHARD_{cls.env_name}_"
        names = {prefix + f.name.upper(): f.name for f in dataclasses.fields(cls) if f.init}
        names.update({prefix + alias: target for alias, target in cls.env_aliases.items()})
        return names

    @classmethod
    def from_env(cls: type[C], env: Mapping[str, str] | None = None) -> C:
        """Build from ``DATASHARD_<ENV_NAME>_*`` and the shared ``DATASHARD_*`` settings.

        Raises ``ConfigError`` naming a ``DATASHARD_<ENV_NAME>_*`` variable that is no field
        (with the known name it resembles), and two variables that set the same field.
        """
        env = os.environ if env is None else env
        prefix = f"DATASHARD_{cls.env_name}_"
        known = cls.env_variables()
        values: dict[str, Any] = {}
        source: dict[str, str] = {}
        for name in sorted(env):
            if name in COMMON_ENV:
                target = COMMON_ENV[name]
            elif name in known:
                target = known[name]
            elif cls.env_name and name.startswith(prefix):
                raise ConfigError(unknown_variable_message(name, known))
            else:
                continue
            if target in source:
                raise ConfigError(
                    f"{source[target]} and {name} both set {cls.__name__}.{target}; keep one"
                )
            source[target] = name
            values[target] = env[name]
        if "max_concurrency" not in values:
            # ``env`` is the only source: the field's default would read os.environ instead.
            values["max_concurrency"] = _default_concurrency(env)
        return cls.build(values, source="environment value")


def unknown_variable_message(name: str, known: Collection[str], expected: str = "") -> str:
    """``unknown environment variable NAME (did you mean CLOSE?); expected ...``: ``CLOSE`` is
    the name in ``known`` it resembles, ``expected`` (default: all of ``known``) what is read."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]}?)" if close else ""
    expected = expected or "one of: " + ", ".join(sorted(known))
    return f"unknown environment variable {name}{hint}; expected {expected}"


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


def check_endpoint(
    owner: str, name: str, env_var: str, value: str | None, *, bare_host_ok: bool = False
) -> None:
    """``ConfigError`` unless ``value`` is ``None`` or a URL starting with ``http://`` or
    ``https://`` that names a host (``bare_host_ok``: also a plain ``host:port``). The message
    names the field, its environment variable and the value (without any query string or
    user info, where credentials may hide)."""
    if value is None or (bare_host_ok and "://" not in value):
        return
    try:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname:
            return
    except ValueError:  # an unclosed "[" of an IPv6 address, say
        pass
    shown = value.split("?", 1)[0].split("#", 1)[0]
    if "@" in shown:
        shown = "<hidden>@" + shown.rsplit("@", 1)[1]
    hint = f"; for example 'http://{shown}' or 'https://{shown}'" if "://" not in value else ""
    raise ConfigError(
        f"{owner}.{name} (environment variable {env_var}) must be a URL starting with http:// "
        f"or https:// and naming a host, got {shown!r}{hint}"
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


#: The variable that picks the storage type.
STORAGE_TYPE_ENV = "DATASHARD_STORAGE_TYPE"

#: ``DATASHARD_*`` names that belong to datashard's own test and benchmark tools
#: (``datashard.testing``, ``bench/``): they configure no storage and are not read here.
TOOL_ENV_PREFIXES = ("DATASHARD_TEST_", "DATASHARD_BENCH_", "DATASHARD_SERVER_")

#: DATASHARD_STORAGE_TYPE value -> (module, config class). The config modules import no SDK.
_CONFIG_CLASSES: dict[str, tuple[str, str]] = {
    "local": ("datashard.storage.local", "LocalConfig"),
    "direct": ("datashard.storage.direct", "DirectConfig"),
    "memory": ("datashard.storage.memory", "MemoryConfig"),
    "s3": ("datashard.storage.s3_config", "S3Config"),
    "azure": ("datashard.storage.azure_config", "AzureConfig"),
    "gcs": ("datashard.storage.gcs_config", "GCSConfig"),
}


def _config_class(kind: str) -> type[BackendConfig]:
    module_name, class_name = _CONFIG_CLASSES[kind]
    cls: type[BackendConfig] = getattr(importlib.import_module(module_name), class_name)
    return cls


def storage_type(env: Mapping[str, str] | None = None) -> str:
    """The storage type ``DATASHARD_STORAGE_TYPE`` names (``local`` when unset or empty);
    ``ConfigError`` naming the value and the known types otherwise."""
    env = os.environ if env is None else env
    kind = env.get(STORAGE_TYPE_ENV, "local").strip().lower() or "local"
    if kind not in STORAGE_TYPES:
        raise ConfigError(
            f"{STORAGE_TYPE_ENV}={kind!r} is not a storage type; expected one of: "
            + ", ".join(sorted(STORAGE_TYPES))
        )
    return kind


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """``ConfigError`` unless every ``DATASHARD_*`` variable in ``env`` is one datashard reads
    for the storage type ``DATASHARD_STORAGE_TYPE`` chooses.

    It names each unknown variable (with the known name it resembles) and each variable of
    another storage type (``DATASHARD_S3_BUCKET`` while the type is ``local`` or ``azure``).
    Variables under :data:`TOOL_ENV_PREFIXES` are left to the tools that read them.
    """
    env = os.environ if env is None else env
    kind = storage_type(env)
    owner: dict[str, str] = {}  # variable -> the storage type that reads it
    namespaces: dict[str, dict[str, str]] = {}  # "DATASHARD_S3_" -> its variables
    for other in _CONFIG_CLASSES:
        cls = _config_class(other)
        variables = cls.env_variables()
        namespaces[f"DATASHARD_{cls.env_name}_"] = variables
        owner.update(dict.fromkeys(variables, other))
    known = {STORAGE_TYPE_ENV, *COMMON_ENV, *owner}
    if STORAGE_TYPE_ENV in env:
        chosen = f"{STORAGE_TYPE_ENV}={env[STORAGE_TYPE_ENV]!r}"
    else:
        chosen = f"{STORAGE_TYPE_ENV} is not set, so storage is the local default"
    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith("DATASHARD_") or name.startswith(TOOL_ENV_PREFIXES):
            continue
        if name not in known:
            space = next((v for p, v in namespaces.items() if name.startswith(p)), None)
            if space is not None:  # DATASHARD_S3_FOO: list the DATASHARD_S3_* variables
                problems.append(unknown_variable_message(name, space))
            else:
                expected = (
                    f"{STORAGE_TYPE_ENV}, "
                    + ", ".join(COMMON_ENV)
                    + ", or DATASHARD_<TYPE>_* for the chosen type ("
                    + ", ".join(p[len("DATASHARD_") :] + "*" for p in namespaces)
                    + ")"
                )
                problems.append(unknown_variable_message(name, known, expected))
        elif name in owner and owner[name] != kind:
            problems.append(
                f"{name} configures storage type {owner[name]!r}, but {chosen}; set "
                f"{STORAGE_TYPE_ENV}={owner[name]} or unset {name}"
            )
    if problems:
        raise ConfigError("; ".join(problems))


def config_from_env(env: Mapping[str, str] | None = None) -> BackendConfig:
    """The config ``DATASHARD_STORAGE_TYPE`` and its ``DATASHARD_*`` variables describe.

    Raises ``ConfigError`` (see :func:`check_environment`) for an unknown ``DATASHARD_*``
    variable, one of another storage type, or a value the config refuses.
    """
    env = os.environ if env is None else env
    check_environment(env)
    config: BackendConfig = _config_class(storage_type(env)).from_env(env)
    return config


def backend_from_env(env: Mapping[str, str] | None = None) -> StorageBackend:
    """The backend the environment configures; the local file system when nothing is set.

    Raises ``ConfigError`` as :func:`config_from_env` does, before anything is written.
    """
    env = os.environ if env is None else env
    config = config_from_env(env)
    return backend_class(STORAGE_TYPES[storage_type(env)])(config)
