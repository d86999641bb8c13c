"""Row-level deletes as commits: delete files (and optionally new data files) in one snapshot.

A :class:`RowDelta` stages position delete files (Parquet with ``file_path`` and ``pos``, the
reserved field ids, sorted by path then position, one file per partition) and equality delete
files (Parquet with the table's field ids and ``equality_ids``), writes them into delete
manifests (content 1), and commits one snapshot that keeps every manifest of its parent.

Conflicts are checked on every base: each data file a position delete names must still be live
(a concurrent compaction or overwrite that removed it would drop the delete with it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from datashard.errors import CommitConflictError, ValidationError
from datashard.iceberg.datafile import ParquetOptions, write_parquet
from datashard.iceberg.deletes import partition_key
from datashard.iceberg.manifest import (
    ADDED,
    DELETE_FILE_PATH_ID,
    DELETE_POS_ID,
    EQUALITY_DELETES,
    MANIFEST_DATA,
    MANIFEST_DELETES,
    POSITION_DELETES,
    DataFile,
    ManifestEntry,
    ManifestFile,
)
from datashard.iceberg.manifest_codec import build_manifest_file, write_manifest
from datashard.iceberg.metadata import Snapshot, TableMetadata
from datashard.iceberg.schema import Schema
from datashard.storage.base import StorageBackend
from datashard.table.manifests import ManifestReader
from datashard.table.producer import SnapshotProducer, Writes, snapshot_summary
from datashard.table.versions import Loaded, TablePaths

#: The schema of a position delete file (without deleted row values).
POSITION_DELETE_SCHEMA = Schema(
    0,
    [
        {"id": DELETE_FILE_PATH_ID, "name": "file_path", "type": "string", "required": True},
        {"id": DELETE_POS_ID, "name": "pos", "type": "long", "required": True},
    ],
)
#: Paths are kept whole in the bounds of a position delete file, so readers can tell which data
#: files it may name.
_PATH_BOUNDS = ParquetOptions(truncate_length=1 << 16)


class RowDelta(SnapshotProducer):
    """One commit of delete files, and new data files if any (``overwrite`` then)."""

    def __init__(self, backend: StorageBackend, paths: TablePaths, base: Loaded) -> None:
        super().__init__(backend, paths, base)
        #: delete files this commit adds, with the spec each was written for
        self.delete_files: list[tuple[DataFile, int]] = []
        #: data files position deletes name, with their partition key
        self._targets: dict[str, tuple[Any, ...]] = {}
        self.reader = ManifestReader(backend)

    @property
    def operation(self) -> str:  # type: ignore[override]
        return "overwrite" if self.added else "delete"

    # -- staging -----------------------------------------------------------------------------

    def stage_position_deletes(
        self,
        positions: Mapping[str, Sequence[int] | np.ndarray],
        partitions: Mapping[str, tuple[int, Mapping[str, Any]]],
    ) -> None:
        """Stage position deletes: ``positions`` by data file path; ``partitions`` gives each
        data file's (spec id, partition values). One delete file per partition."""
        groups: dict[tuple[Any, ...], list[str]] = {}
        for path in positions:
            if path not in partitions:
                raise ValidationError(f"no partition given for data file {path}")
            spec_id, values = partitions[path]
            groups.setdefault(partition_key(spec_id, values), []).append(path)
            self._targets[path] = partition_key(spec_id, values)
        for paths in groups.values():
            spec_id, values = partitions[paths[0]]
            files, pos = [], []
            for path in sorted(paths):
                p = np.unique(np.asarray(positions[path], dtype=np.int64))
                if len(p) == 0:
                    continue
                files.append(np.full(len(p), path, dtype=object))
                pos.append(p)
            if not pos:
                continue
            table = pa.table(
                {
                    "file_path": pa.array(np.concatenate(files), pa.string()),
                    "pos": pa.array(np.concatenate(pos), pa.int64()),
                }
            )
            data, stats = write_parquet(table, POSITION_DELETE_SCHEMA, _PATH_BOUNDS)
            key = f"{self.paths.data_dir}/{uuid.uuid4()}-deletes.parquet"
            self.stage(key, data)
            df = replace(
                stats.to_data_file(self.backend.uri_for(key), len(data), values),
                content=POSITION_DELETES,
                referenced_data_file=paths[0] if len(paths) == 1 else None,
            )
            self.delete_files.append((df, spec_id))

    def stage_equality_deletes(
        self,
        rows: pa.Table,
        equality_ids: Sequence[int],
        spec_id: int | None = None,
        partition: Mapping[str, Any] | None = None,
    ) -> None:
        """Stage an equality delete file: ``rows`` holds the delete columns (named as the
        table's columns); ``equality_ids`` are their field ids. With ``spec_id`` and
        ``partition`` it applies to that partition only; without, it is written with an
        unpartitioned spec of the table and applies to every partition (a global delete)."""
        md = self.base.metadata
        schema = md.current_schema()
        fields = [schema.find_field(i) for i in equality_ids]
        if spec_id is None:
            spec_id = next((s.spec_id for s in md.partition_specs if not s.fields), None)
            if spec_id is None:
                raise ValidationError(
                    f"table {md.location} has no unpartitioned spec for a global equality "
                    "delete; pass spec_id and partition"
                )
            partition = {}
        elif md.spec(spec_id).fields and partition is None:
            raise ValidationError(f"spec {spec_id} is partitioned: pass the partition values")
        delete_schema = Schema(schema.schema_id, fields)
        table = delete_schema.coerce_arrow(rows.select([f.name for f in fields]))
        data, stats = write_parquet(table, delete_schema)
        key = f"{self.paths.data_dir}/{uuid.uuid4()}-eq-deletes.parquet"
        self.stage(key, data)
        df = replace(
            stats.to_data_file(self.backend.uri_for(key), len(data), partition or {}),
            content=EQUALITY_DELETES,
            equality_ids=tuple(equality_ids),
        )
        self.delete_files.append((df, spec_id))

    # -- per attempt ---------------------------------------------------------------------------

    def manifests(
        self, md: TableMetadata, parent: Snapshot | None, seq: int
    ) -> tuple[list[ManifestFile], Writes]:
        parents = self.reader.manifests(parent)
        self._check_targets(parents)
        writes: Writes = []
        out: list[ManifestFile] = []
        if self.added:
            entries = [ManifestEntry(ADDED, None, None, None, df) for df in self.added]
            row, key, body = self.encode_manifest(entries, self.spec, seq, "m0")
            writes.append((key, body))
            out.append(row)
        by_spec: dict[int, list[ManifestEntry]] = {}
        for df, spec_id in self.delete_files:
            by_spec.setdefault(spec_id, []).append(ManifestEntry(ADDED, None, None, None, df))
        for spec_id, entries in sorted(by_spec.items()):
            spec = md.spec(spec_id)
            body = write_manifest(entries, self.schema, spec, None, MANIFEST_DELETES)
            key = self.manifest_key("d0")
            writes.append((key, body))
            out.append(
                build_manifest_file(
                    entries,
                    manifest_path=self.backend.uri_for(key),
                    manifest_length=len(body),
                    spec=spec,
                    schema=self.schema,
                    added_snapshot_id=self.snapshot_id,
                    sequence_number=seq,
                    content=MANIFEST_DELETES,
                )
            )
        return [*out, *parents], writes

    def _check_targets(self, parents: Sequence[ManifestFile]) -> None:
        """``CommitConflictError`` unless every data file a position delete names is live."""
        if not self._targets:
            return
        live: set[str] = set()
        for m in parents:
            if m.content == MANIFEST_DATA:
                live.update(e.data_file.file_path for e in self.reader.entries(m) if e.is_live)
        gone = sorted(set(self._targets) - live)
        if gone:
            raise CommitConflictError(
                f"{self.operation}: {len(gone)} data file(s) it deletes rows of are no longer "
                f"in the table, e.g. {gone[0]}; reload and retry"
            )

    def summary(self, parent: Snapshot | None) -> dict[str, str]:
        return snapshot_summary(
            self.operation,
            self.added,
            (),
            0,
            parent,
            self.commit_id,
            added_deletes=[df for df, _ in self.delete_files],
        )


__all__ = ["POSITION_DELETE_SCHEMA", "RowDelta"]
