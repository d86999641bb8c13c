"""Reading a snapshot's manifest list and manifests through a backend.

Scans read through the process's manifest cache (:data:`datashard.table.process.MANIFEST_CACHE`):
a manifest list or manifest never changes once written, so what one scan read serves every later
one. Rewrites and maintenance use a :class:`ManifestReader`, which remembers the manifests it
read for the length of one operation.
"""

from __future__ import annotations

from collections.abc import Sequence

from datashard.errors import CorruptMetadataError, StorageError
from datashard.iceberg.expressions import Bound
from datashard.iceberg.lineage import Lineage
from datashard.iceberg.manifest import MANIFEST_DATA, DataFile, ManifestEntry, ManifestFile
from datashard.iceberg.manifest_codec import read_manifest, read_manifest_list
from datashard.iceberg.metadata import Snapshot
from datashard.iceberg.types import NestedField
from datashard.io.deletes import FileDeletes
from datashard.io.parquet import DataFileReader, open_data_file
from datashard.storage.base import StorageBackend
from datashard.table.process import MANIFEST_CACHE
from datashard.table.versions import key_for_uri


def read_table_file(backend: StorageBackend, uri: str, what: str) -> bytes:
    """The bytes of a file the metadata names; ``CorruptMetadataError`` naming it (as
    ``what``) when it is missing, other storage errors as they are."""
    try:
        return backend.read(key_for_uri(backend, uri))
    except StorageError as exc:
        if isinstance(exc, FileNotFoundError):
            raise CorruptMetadataError(
                f"{what} {uri} named by the table metadata is missing"
            ) from exc
        raise


def open_table_data_file(
    backend: StorageBackend,
    data_file: DataFile,
    fields: Sequence[NestedField],
    *,
    filter: Bound | None = None,
    deletes: FileDeletes | None = None,
    sequence_number: int | None = None,
) -> DataFileReader:
    """A reader of a data file the metadata names (see
    :func:`~datashard.io.parquet.open_data_file`): its footer read (or cached), its size and
    row count checked against the manifest. ``CorruptMetadataError`` naming it when it is
    missing, replaced or not Parquet; other storage errors as they are."""
    uri = data_file.file_path
    try:
        return open_data_file(
            backend,
            key_for_uri(backend, uri),
            fields,
            size=int(data_file.file_size_in_bytes),
            record_count=int(data_file.record_count),
            filter=filter,
            deletes=deletes,
            lineage=Lineage(data_file.first_row_id, sequence_number),
        )
    except StorageError as exc:
        if isinstance(exc, FileNotFoundError):
            raise CorruptMetadataError(
                f"data file {uri} named by the table metadata is missing"
            ) from exc
        raise


def read_manifest_files(backend: StorageBackend, snapshot: Snapshot) -> list[ManifestFile]:
    """The manifests a snapshot's manifest list names (the list is read once per process: a
    snapshot's manifest list never changes)."""
    uri = snapshot.manifest_list
    cached = MANIFEST_CACHE.get(("manifest list", uri))
    if cached is not None:
        return list(cached)
    try:
        data = backend.read(key_for_uri(backend, uri))
    except StorageError as exc:
        if isinstance(exc, FileNotFoundError):
            raise CorruptMetadataError(
                f"manifest list {uri} of snapshot {snapshot.snapshot_id} is missing"
            ) from exc
        raise
    manifests = list(read_manifest_list(data, uri))
    MANIFEST_CACHE.put(("manifest list", uri), manifests)
    return list(manifests)


def manifest_entries(backend: StorageBackend, m: ManifestFile) -> list[ManifestEntry]:
    """The entries of manifest ``m`` (as its manifest-list row ``m`` lets them inherit): from
    this process's cache, else read (and kept). The cache key holds what the entries inherit
    from ``m`` as well."""
    key = (
        m.manifest_path,
        m.manifest_length,
        m.added_snapshot_id,
        m.sequence_number,
        m.first_row_id,  # v3: data files inherit their first row ids from it
    )
    cached: list[ManifestEntry] | None = MANIFEST_CACHE.get(key)
    if cached is not None:
        return cached
    data = read_table_file(backend, m.manifest_path, "manifest")
    entries = read_manifest(data, m.manifest_path, m)
    MANIFEST_CACHE.put(key, entries)
    return entries


class ManifestReader:
    """Reads manifest lists and manifests for one operation, remembering manifests by path
    (they never change). Storage errors propagate as they are (a missing file is
    ``ObjectNotFoundError``: the commit loop takes that as a stale base)."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self._entries: dict[str, list[ManifestEntry]] = {}

    def manifests(self, snapshot: Snapshot | None) -> list[ManifestFile]:
        if snapshot is None:
            return []
        data = self.backend.read(key_for_uri(self.backend, snapshot.manifest_list))
        return list(read_manifest_list(data, snapshot.manifest_list))

    def entries(self, m: ManifestFile) -> list[ManifestEntry]:
        cached = self._entries.get(m.manifest_path)
        if cached is None:
            data = self.backend.read(key_for_uri(self.backend, m.manifest_path))
            cached = read_manifest(data, m.manifest_path, m)
            self._entries[m.manifest_path] = cached
        return cached

    def live_files(self, snapshot: Snapshot | None) -> list[tuple[ManifestFile, ManifestEntry]]:
        """(manifest, entry) of every live data file of ``snapshot``."""
        out: list[tuple[ManifestFile, ManifestEntry]] = []
        for m in self.manifests(snapshot):
            if m.content != MANIFEST_DATA:
                continue
            out.extend((m, e) for e in self.entries(m) if e.is_live)
        return out


__all__ = [
    "ManifestReader",
    "manifest_entries",
    "open_table_data_file",
    "read_manifest_files",
    "read_table_file",
]
