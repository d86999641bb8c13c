"""A table's layout on its backend: its keys, the URIs of its files, and its newest version.

A table at ``<prefix>`` keeps ``<prefix>/metadata/v<N>.metadata.json`` (N = 1, 2, 3 ...), created
with ``put_if_absent``: the create of ``v<N+1>`` IS the commit. ``version-hint.text`` holds an N
written best-effort after each commit; it is advisory only. To find the newest version a reader
starts from the hint (or from a version it already holds) and probes forward with ``head`` until
a version is missing; with no usable hint it lists ``metadata/``.

Tables written by other Iceberg writers name their metadata ``<NNNNN>-<uuid>.metadata.json``;
:func:`newest_foreign_metadata` finds the highest of those so they can be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datashard.errors import ObjectNotFoundError, StorageError
from datashard.storage.base import StorageBackend

HINT = "version-hint.text"
_VERSION = re.compile(r"^v(\d+)\.metadata\.json$")
_FOREIGN = re.compile(r"^(\d+)-[0-9a-fA-F-]+\.metadata\.json$")
#: The most versions a forward probe walks before it lists instead.
_MAX_PROBE = 64


@dataclass(frozen=True)
class TablePaths:
    """The keys of one table under its backend root."""

    prefix: str

    @property
    def metadata_dir(self) -> str:
        return f"{self.prefix}/metadata"

    @property
    def data_dir(self) -> str:
        return f"{self.prefix}/data"

    @property
    def hint(self) -> str:
        return f"{self.metadata_dir}/{HINT}"

    def version(self, n: int) -> str:
        return f"{self.metadata_dir}/v{n}.metadata.json"


def key_for_uri(backend: StorageBackend, uri: str) -> str:
    """The backend key of an absolute file URI written in metadata.

    Accepts the backend's own URIs, and for ``file://`` backends plain absolute paths and
    ``file:/path`` forms that other writers record. Raises ``InvalidPathError`` for a URI
    outside the backend's root.
    """
    if backend.scheme in ("file", "direct") and "://" not in uri:
        path = uri[len("file:") :] if uri.startswith("file:") else uri
        return backend.key_for(f"{backend.root_uri.split('://', 1)[0]}://{path}")
    return backend.key_for(uri)


def version_of(key: str) -> int | None:
    """N of ``.../v<N>.metadata.json``; ``None`` for any other name."""
    match = _VERSION.match(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def read_hint(backend: StorageBackend, paths: TablePaths) -> int | None:
    """The version the hint names, or ``None`` if it is missing or unreadable (never raises for
    a bad hint: it is advisory)."""
    try:
        text = backend.read(paths.hint).decode("ascii", "replace").strip()
    except ObjectNotFoundError:
        return None
    except StorageError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def write_hint(backend: StorageBackend, paths: TablePaths, version: int) -> bool:
    """Best-effort: record ``version`` in the hint; ``False`` if the write failed."""
    try:
        backend.write(paths.hint, str(version).encode("ascii"))
    except StorageError:
        return False
    return True


def exists(backend: StorageBackend, key: str) -> bool:
    """Whether ``key`` exists (one ``head``); storage errors other than not-found propagate."""
    try:
        backend.head(key)
    except ObjectNotFoundError:
        return False
    return True


#: Versions probed one by one before the hint is consulted.
_HINT_AFTER = 2


def probe_forward(
    backend: StorageBackend, paths: TablePaths, known: int, use_hint: bool = True
) -> int | None:
    """The newest version reachable from ``known`` (which exists) by ``head`` on known+1, ...
    (with ``use_hint``, jumping to the hint's version once two versions were found).

    ``None`` when more than ``_MAX_PROBE`` versions follow (the caller lists instead).
    """
    n = known
    for step in range(1, _MAX_PROBE + 1):
        if not exists(backend, paths.version(n + 1)):
            return n
        n += 1
        if use_hint and step == _HINT_AFTER:
            # Far behind (a writer back from a backoff, a reader loaded long ago): the hint
            # names a version that exists, probably near the newest; jump there rather than
            # ``head`` every version in between. A hint that names a missing version (nothing
            # of ours writes one) makes the caller's read fail, and it lists instead.
            hint = read_hint(backend, paths)
            if hint is not None and hint > n:
                n = hint
    return None


def list_versions(backend: StorageBackend, paths: TablePaths) -> list[int]:
    """Every ``v<N>`` under ``metadata/``, ascending."""
    found = []
    for meta in backend.list(paths.metadata_dir + "/"):
        n = version_of(meta.key)
        if n is not None:
            found.append(n)
    return sorted(found)


def newest_version(
    backend: StorageBackend, paths: TablePaths, known: int | None = None
) -> int | None:
    """The newest committed version as far as ``head`` probes show, or ``None`` if none.

    Starts from ``known`` (a version the caller holds) or else the hint, and probes forward
    (``head`` of the next version until one is missing); lists ``metadata/`` when there is
    nothing to start from. The hint is not checked here: a caller whose read of the returned
    version finds nothing calls :func:`newest_listed_version`.
    """
    start = known if known is not None else read_hint(backend, paths)
    if start is not None:
        newest = probe_forward(backend, paths, start)
        if newest is not None:
            return newest
    return newest_listed_version(backend, paths)


def newest_listed_version(backend: StorageBackend, paths: TablePaths) -> int | None:
    """The newest version by listing ``metadata/`` (then probing past it: a listing may lag)."""
    versions = list_versions(backend, paths)
    if not versions:
        return None
    return probe_forward(backend, paths, versions[-1], use_hint=False) or versions[-1]


def newest_foreign_metadata(backend: StorageBackend, paths: TablePaths) -> str | None:
    """The key of the highest ``<NNNNN>-<uuid>.metadata.json`` (another writer's naming)."""
    best: tuple[int, str] | None = None
    for meta in backend.list(paths.metadata_dir + "/"):
        match = _FOREIGN.match(meta.key.rsplit("/", 1)[-1])
        if match:
            candidate = (int(match.group(1)), meta.key)
            if best is None or candidate > best:
                best = candidate
    return best[1] if best else None


__all__ = [
    "HINT",
    "TablePaths",
    "exists",
    "list_versions",
    "newest_foreign_metadata",
    "newest_listed_version",
    "newest_version",
    "probe_forward",
    "read_hint",
    "version_of",
    "write_hint",
]
