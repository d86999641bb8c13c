"""``AzureConfig``: where the blobs of an ``az://`` / ``abfs[s]://`` backend live and how to reach
them. Secrets (``account_key``, ``sas_token``, ``connection_string``) never appear in a ``repr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datashard.errors import ConfigError
from datashard.storage.base import validate_key
from datashard.storage.config import BackendConfig, check_endpoint, split_scheme

MiB = 1024 * 1024
_CONTAINER_NAME = re.compile(r"^(\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")


@dataclass(frozen=True, kw_only=True)
class AzureConfig(BackendConfig):
    """Where the blobs live and how to reach them.

    Credentials, in order of precedence: ``connection_string``; ``account_key`` (with
    ``account_name``); ``sas_token``; ``anonymous=True`` (public containers); otherwise the default
    Azure credential chain of ``azure-identity`` (environment, managed identity, Azure CLI ...).
    At most one of the first four may be set. ``account_url`` (alias ``endpoint``) overrides the
    default ``https://<account_name>.blob.core.windows.net`` (Azurite:
    ``http://127.0.0.1:10000/devstoreaccount1``).
    """

    env_name: ClassVar[str] = "AZURE"
    env_aliases: ClassVar[dict[str, str]] = {
        "ENDPOINT": "account_url",
        "URL": "account_url",
        "ACCOUNT": "account_name",
        "KEY": "account_key",
        "SAS": "sas_token",
        "BUCKET": "container",
    }

    container: str
    prefix: str = ""
    account_name: str | None = None
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    connection_string: str | None = field(default=None, repr=False)
    account_url: str | None = None
    anonymous: bool = False
    #: How ``root_uri`` spells the root: ``az``, ``abfs`` or ``abfss``.
    uri_scheme: str = "az"
    #: Ranged reads are split into parts of this size, fetched concurrently.
    part_size: int = 16 * MiB
    #: Block size of staged uploads (Azure allows up to 4000 MiB per block, 50,000 blocks).
    block_size: int = 8 * MiB
    #: ``write`` of bytes up to this size is one ``Put Blob``; larger ones stage blocks.
    single_put_size: int = 16 * MiB
    #: The part buffers that all streamed writes (``open_output``) of one backend hold
    #: together; each stream holds at least one part.
    write_buffer_size: int = 48 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _CONTAINER_NAME.match(self.container):
            raise ConfigError(
                f"AzureConfig.container {self.container!r} is not a container name: expected 3-63 "
                "lowercase letters, digits and single hyphens"
            )
        if self.prefix and (self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ConfigError(f"AzureConfig.prefix {self.prefix!r} must not start or end with '/'")
        if self.prefix:
            validate_key(self.prefix)
        # the SDK would take a URL without a scheme as https://, failing at the first request
        # on an http-only server (Azurite)
        check_endpoint("AzureConfig", "account_url", "DATASHARD_AZURE_ENDPOINT", self.account_url)
        if self.uri_scheme not in ("az", "abfs", "abfss"):
            raise ConfigError(
                f"AzureConfig.uri_scheme must be 'az', 'abfs' or 'abfss', got {self.uri_scheme!r}"
            )
        chosen = [
            name
            for name in ("connection_string", "account_key", "sas_token", "anonymous")
            if getattr(self, name)
        ]
        if len(chosen) > 1:
            raise ConfigError(
                f"AzureConfig takes one kind of credential, got {' and '.join(chosen)}; keep one"
            )
        if self.account_key and not self.account_name:
            raise ConfigError("AzureConfig.account_key needs account_name as well")
        if not (self.connection_string or self.account_name or self.account_url):
            raise ConfigError(
                "AzureConfig needs account_name, account_url or connection_string to find the "
                "storage account"
            )
        if self.write_buffer_size < 0:
            raise ConfigError(
                f"AzureConfig.write_buffer_size must be >= 0 bytes, got {self.write_buffer_size}"
            )
        for name in ("part_size", "block_size", "single_put_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AzureConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.block_size > 4000 * MiB:
            raise ConfigError(f"AzureConfig.block_size must be <= 4000 MiB, got {self.block_size}")

    def root_uri(self) -> str:
        where = self.container
        if self.uri_scheme != "az" and self.account_name:
            where = f"{self.container}@{self.account_name}.dfs.core.windows.net"
        return f"{self.uri_scheme}://{where}" + (f"/{self.prefix}" if self.prefix else "")

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> AzureConfig:
        """``az://container/prefix``, ``az://container@account.blob.core.windows.net/prefix`` or
        ``abfs[s]://container@account.dfs.core.windows.net/prefix``, plus options."""
        scheme, rest = split_scheme(uri)
        if scheme not in ("az", "abfs", "abfss"):
            raise ConfigError(f"AzureConfig takes an az://, abfs:// or abfss:// URI, got {uri!r}")
        netloc, _, path = rest.partition("/")
        values: dict[str, Any] = {"uri_scheme": scheme, "prefix": path.strip("/")}
        container, at, host = netloc.partition("@")
        if at:
            values["account_name"] = host.split(".", 1)[0]
        if not container:
            raise ConfigError(f"storage URI {uri!r} names no container; expected az://container/")
        values["container"] = container
        for name, value in values.items():
            if name in options and options[name] != value and name != "uri_scheme":
                raise ConfigError(
                    f"option {name}={options[name]!r} contradicts the URI {uri!r} ({value!r})"
                )
        return cls.build({**values, **options})
