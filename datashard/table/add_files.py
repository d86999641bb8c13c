"""Committing Parquet data files written elsewhere: by workers, or by another tool.

Two halves:

- :class:`DataFileWriter`, the worker side: a small picklable description of where and how a
  table's data files are written (backend, the table's ``data/`` prefix, schema, partition spec,
  write properties). ``writer.write(data)`` encodes Arrow data as Parquet data files with field
  ids, statistics and partition values exactly as an append does, and returns one
  :class:`WrittenFile` per file (a :class:`~datashard.iceberg.manifest.DataFile` plus the
  schema, spec and table it was written for; a few hundred bytes pickled). Nothing is committed.
- :func:`check_files` and :class:`AddFilesCommit`, the driver side: the files are checked
  against the table (inside its location, not in the table yet, readable by field id, one
  partition value each) and committed as ONE append snapshot through the normal commit loop.

Who owns cleanup: the commit deletes only the manifest it staged. Files passed to ``add_files``
are never deleted by it, whatever happens; the distributed write helpers
(``datashard.dask.write_table``, ``datashard.ray.write_table``) delete the files their workers
wrote when the commit provably did not land (:mod:`datashard.table.remote`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pyarrow as pa

from datashard.errors import (
    CommitConflictError,
    CorruptFileError,
    CorruptMetadataError,
    InvalidPathError,
    ObjectNotFoundError,
    SchemaError,
    ValidationError,
)
from datashard.iceberg.datafile import (
    parquet_stats,
)
from datashard.iceberg.defaults import fill_write_defaults_arrow
from datashard.iceberg.manifest import DataFile
from datashard.iceberg.metadata import PartitionSpec, TableMetadata
from datashard.iceberg.partitioning import split_by_partition
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import NestedField, field_id_of, to_arrow_field
from datashard.io.footer import FOOTERS
from datashard.io.parquet import open_data_file
from datashard.storage.base import StorageBackend
from datashard.table.append import AppendCommit, Progress
from datashard.table.commit import delete_quietly
from datashard.table.manifests import ManifestReader
from datashard.table.producer import parquet_options, stream_data_files, target_size
from datashard.table.versions import TablePaths, key_for_uri

#: What :meth:`DataFileWriter.write` takes.
WriteInput: TypeAlias = Any


@dataclass(frozen=True)
class WrittenFile:
    """A data file a :class:`DataFileWriter` wrote, not committed yet: what ``add_files``
    needs to commit it without opening it again."""

    data_file: DataFile
    #: the schema and partition spec it was written with
    schema_id: int
    spec_id: int
    #: the uuid of the table it was written for
    table_uuid: str

    @property
    def path(self) -> str:
        return self.data_file.file_path

    def __repr__(self) -> str:
        df = self.data_file
        return f"WrittenFile({df.file_path!r}, rows={df.record_count})"


@dataclass(frozen=True)
class DataFileWriter:
    """Writes data files for one table, anywhere (pickle it to a worker); commits nothing.

    Get one from :meth:`datashard.Table.data_file_writer`. Its ``repr`` (and a task graph's)
    never shows a credential: the backend's config hides its secrets.
    """

    backend: StorageBackend
    #: the key prefix new files go under (the table's ``data`` directory)
    data_dir: str
    table_uuid: str
    schema: Schema
    spec: PartitionSpec
    properties: Mapping[str, str] = field(default_factory=dict)
    #: file names start with this (lets a helper find every file one operation wrote)
    name_prefix: str = ""

    @classmethod
    def for_table(
        cls, backend: StorageBackend, paths: TablePaths, md: TableMetadata, name_prefix: str = ""
    ) -> DataFileWriter:
        return cls(
            backend,
            paths.data_dir,
            md.table_uuid,
            md.current_schema(),
            md.spec(),
            dict(md.properties),
            name_prefix,
        )

    def with_prefix(self, name_prefix: str) -> DataFileWriter:
        """The same writer naming its files ``<name_prefix><uuid>.parquet``."""
        return DataFileWriter(
            self.backend,
            self.data_dir,
            self.table_uuid,
            self.schema,
            self.spec,
            self.properties,
            name_prefix,
        )

    def write(self, data: WriteInput) -> list[WrittenFile]:
        """Write ``data`` (a pyarrow Table or RecordBatch, a pandas DataFrame, or an iterable
        of tables/batches) as new data files: one or more per partition value, each closed at
        about ``write.target-file-size-bytes``. Returns them in row order (none for no rows).

        Raises ``ValidationError`` naming the field for data that does not fit the schema,
        before anything is written. On any failure the files this call wrote are deleted.
        """
        table = fill_write_defaults_arrow(_to_arrow(data), self.schema)
        table = self.schema.coerce_arrow(table)
        options = parquet_options(self.properties)
        target = target_size(self.properties)
        opened: list[str] = []
        out: list[WrittenFile] = []
        try:
            for partition, part in split_by_partition(table, self.spec, self.schema):
                files = stream_data_files(
                    self.backend,
                    lambda: f"{self.data_dir}/{self.name_prefix}{uuid.uuid4()}.parquet",
                    part,
                    partition,
                    self.schema,
                    options,
                    target,
                    opened,
                )
                out.extend(
                    WrittenFile(df, self.schema.schema_id, self.spec.spec_id, self.table_uuid)
                    for df in files
                )
        except BaseException:
            delete_quietly(self.backend, opened)
            raise
        return out


def _to_arrow(data: WriteInput) -> pa.Table:
    """``data`` as one Arrow table: what an append takes, or an iterable of those."""
    import pandas as pd

    from datashard.table.table import _to_arrow as one  # table.py imports this module

    if isinstance(data, (pa.Table, pa.RecordBatch, pd.DataFrame)):
        return one(data)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        parts = [_to_arrow(d) for d in data]
        if not parts:
            raise ValidationError("write() got an empty iterable: pass at least one table")
        try:
            return pa.concat_tables(parts, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValidationError(f"the tables given do not share one schema: {exc}") from exc
    raise ValidationError(
        "write() takes a pyarrow.Table or RecordBatch, a pandas.DataFrame, or an iterable of "
        f"tables/batches, got {type(data).__name__}"
    )


# --------------------------------------------------------------------------------------------
# checking files against the table


#: What ``add_files`` takes: files a :class:`DataFileWriter` wrote, or Parquet file URIs (or
#: paths relative to the table location).
FileLike = WrittenFile | str


@dataclass(frozen=True)
class CheckedFile:
    """A file ready to commit: its manifest description and the fields it holds."""

    data_file: DataFile
    #: the fields the file holds, with the types it holds them as
    fields: tuple[NestedField, ...]


def check_files(
    backend: StorageBackend, md: TableMetadata, files: Sequence[FileLike]
) -> list[CheckedFile]:
    """``files`` checked against the current schema and spec of ``md``, in order.

    Raises ``ValidationError`` naming the file for a file outside the table location, one that
    is missing or not Parquet, one listed twice or already in the current snapshot, one without
    Parquet field ids, one whose rows span several partition values, a :class:`WrittenFile` of
    another table or partition spec; ``SchemaError`` naming the column for a column whose field
    id the schema lacks or whose type it cannot read as, a required column missing or holding
    nulls. Nothing is written.
    """
    if isinstance(files, (str, WrittenFile)) or not isinstance(files, Sequence):
        raise ValidationError(
            "add_files takes a list of files (WrittenFile from write_data_files, or Parquet "
            f"file URIs), got {type(files).__name__}"
        )
    if not files:
        raise ValidationError("add_files got no files: pass at least one")
    location = md.location.rstrip("/")
    schema = md.current_schema()
    spec = md.spec()
    out: list[CheckedFile] = []
    seen: dict[str, str] = {}
    for item in files:
        if isinstance(item, WrittenFile):
            checked = _check_written(md, item)
            uri = item.path
        elif isinstance(item, str) and item:
            uri = _absolute(item, location)
            checked = None
        else:
            raise ValidationError(
                f"add_files: {item!r:.80} is neither a WrittenFile nor a Parquet file URI (str)"
            )
        if not uri.startswith(location + "/"):
            raise ValidationError(
                f"file {uri} is outside the table location {location}: add_files commits files "
                f"under it only (copy the file under {location}/data/ first)"
            )
        try:
            key = key_for_uri(backend, uri)
        except InvalidPathError as exc:
            raise ValidationError(
                f"file {uri} is not a path of the table's storage: {exc}"
            ) from exc
        if key in seen:
            raise ValidationError(f"file {uri} is listed twice in add_files")
        seen[key] = uri
        out.append(checked or _check_plain(backend, schema, spec, uri, key))
    present = _files_in_table(backend, md)
    for key, uri in seen.items():
        if key in present:
            raise ValidationError(
                f"file {uri} is already in table {location} (current snapshot); adding it again "
                "would duplicate its rows"
            )
    return out


def _absolute(ref: str, location: str) -> str:
    """The URI of ``ref``: a URI as is, a local absolute path as a ``file://`` URI when the
    table is local, anything else relative to the table location."""
    if "://" in ref:
        return ref
    if ref.startswith("/"):
        scheme = location.split("://", 1)[0] if "://" in location else ""
        return f"{scheme}://{ref}" if scheme in ("file", "direct") else ref
    return f"{location}/{ref}"


def _files_in_table(backend: StorageBackend, md: TableMetadata) -> set[str]:
    """The keys of the live data files of the current snapshot (reads its manifests)."""
    reader = ManifestReader(backend)
    keys = set()
    for _, entry in reader.live_files(md.current_snapshot()):
        try:
            keys.add(key_for_uri(backend, entry.data_file.file_path))
        except InvalidPathError:
            continue  # a file outside this backend cannot be one of ours
    return keys


def _check_written(md: TableMetadata, item: WrittenFile) -> CheckedFile:
    if item.table_uuid != md.table_uuid:
        raise ValidationError(
            f"file {item.path} was written for table {item.table_uuid}, not this table "
            f"({md.table_uuid} at {md.location})"
        )
    if item.spec_id != md.default_spec_id:
        raise ValidationError(
            f"file {item.path} was written with partition spec {item.spec_id}, but the table's "
            f"spec is now {md.default_spec_id}: write it again"
        )
    written = next((s for s in md.schemas if s.schema_id == item.schema_id), None)
    if written is None:
        raise ValidationError(
            f"file {item.path} was written with schema {item.schema_id}, which table "
            f"{md.location} does not have"
        )
    fields = tuple(written.fields)
    schema_fits(md.current_schema(), fields, item.path, SchemaError)
    return CheckedFile(item.data_file, fields)


def _check_plain(
    backend: StorageBackend, schema: Schema, spec: PartitionSpec, uri: str, key: str
) -> CheckedFile:
    try:
        footer = FOOTERS.get(backend, key)
    except ObjectNotFoundError:
        raise ValidationError(
            f"file {uri} was not found: add_files needs an existing Parquet file"
        ) from None
    except CorruptFileError as exc:
        raise ValidationError(f"file {uri} is not readable Parquet: {exc}") from exc
    meta = footer.metadata
    try:
        arrow_schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError) as exc:
        raise ValidationError(
            f"file {uri}: its Parquet schema does not map to Arrow: {exc}"
        ) from exc
    by_id = {f.field_id: f for f in schema.fields}
    fields: list[NestedField] = []
    for af in arrow_schema:
        fid = field_id_of(af)
        if fid is None:
            raise ValidationError(
                f"file {uri}: column {af.name!r} has no Parquet field id. datashard reads data "
                "files by field id; write the file with table.write_data_files(...) (or any "
                "Iceberg writer), or with pyarrow giving each field the metadata "
                "{'PARQUET:field_id': '<id>'} of the table's column"
            )
        tf = by_id.get(fid)
        if tf is None:
            raise SchemaError(
                f"file {uri}: column {af.name!r} has field id {fid}, which the table's schema "
                f"{schema.schema_id} does not have (its columns: "
                + ", ".join(f"{f.name}={f.field_id}" for f in schema.fields)
                + ")"
            )
        want = to_arrow_field(tf).type
        if not _reads_as(af.type, want):
            raise SchemaError(
                f"file {uri}: column {af.name!r} (field id {fid}, the table's {tf.name!r}) is "
                f"{af.type}, which does not read as the table's {tf.field_type} ({want})"
            )
        fields.append(tf)
    schema_fits(schema, [], uri, SchemaError, present={f.field_id for f in fields})
    if meta.num_rows == 0:
        raise ValidationError(f"file {uri} holds no rows: nothing to add")
    file_schema = Schema(schema.schema_id, fields)
    try:
        stats = parquet_stats(meta, file_schema, nans={})
    except Exception as exc:  # a nested column shaped unlike the table's
        raise SchemaError(f"file {uri}: its columns do not match the table's: {exc}") from exc
    for f in fields:
        if f.required and stats.null_value_counts.get(f.field_id, 0):
            raise SchemaError(
                f"file {uri}: column {f.name!r} is required in the table but holds "
                f"{stats.null_value_counts[f.field_id]} nulls"
            )
    partition = _partition_of(backend, schema, spec, uri, key, footer.size, fields)
    return CheckedFile(stats.to_data_file(uri, footer.size, partition), tuple(fields))


def _partition_of(
    backend: StorageBackend,
    schema: Schema,
    spec: PartitionSpec,
    uri: str,
    key: str,
    size: int,
    fields: Sequence[NestedField],
) -> dict[str, Any]:
    """The one partition value of the file's rows (reads the partition source columns)."""
    if not spec.fields:
        return {}
    sources = []
    for pf in spec.fields:
        src = schema.find_field(pf.source_id)
        if src not in sources:
            sources.append(src)
    try:
        rows = open_data_file(backend, key, sources, size=size).read()
    except CorruptMetadataError as exc:
        raise ValidationError(f"file {uri} could not be read: {exc}") from exc
    groups = split_by_partition(rows, spec, schema)
    if len(groups) != 1:
        shown = "; ".join(str(dict(v)) for v, _ in groups[:2])
        raise ValidationError(
            f"file {uri} holds rows of {len(groups)} partitions of the table's spec (such as "
            f"{shown}); add_files takes files of one partition each"
        )
    return dict(groups[0][0])


def _reads_as(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a Parquet column of Arrow type ``have`` reads as the table's ``want``."""
    if bool(have.equals(want)):
        return True
    widen = {
        (pa.int8(), pa.int32()),
        (pa.int16(), pa.int32()),
        (pa.int8(), pa.int64()),
        (pa.int16(), pa.int64()),
        (pa.int32(), pa.int64()),
        (pa.float32(), pa.float64()),
        (pa.large_string(), pa.string()),
        (pa.large_binary(), pa.binary()),
    }
    if (have, want) in widen:
        return True
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        return (have.tz is None) == (want.tz is None) and have.unit in ("us", want.unit)
    if pa.types.is_decimal(have) and pa.types.is_decimal(want):
        return bool(have.scale == want.scale and have.precision <= want.precision)
    if pa.types.is_nested(have) and pa.types.is_nested(want):
        return bool(_strip(have).equals(_strip(want)))
    return False


def _strip(t: pa.DataType) -> pa.DataType:
    """``t`` without field metadata (field ids), for comparing nested types."""
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _strip(f.type), f.nullable) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_strip(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(_strip(t.key_type), _strip(t.item_type))
    return t


def schema_fits(
    current: Schema,
    fields: Sequence[NestedField],
    uri: str,
    error: type[Exception],
    present: set[int] | None = None,
) -> None:
    """``error`` naming the column unless a file holding ``fields`` (or the field ids
    ``present``) reads correctly with ``current``: each of its fields the schema still has is
    of the same type, and every required field of the schema without a default is there."""
    have = {f.field_id for f in fields} if present is None else present
    by_id = {f.field_id: f for f in current.fields}
    for f in fields:
        now = by_id.get(f.field_id)
        if now is not None and now.field_type != f.field_type:
            raise error(
                f"file {uri}: column {now.name!r} (field id {f.field_id}) is {now.field_type} in "
                f"the table now, but the file holds it as {f.field_type}"
            )
    for f in current.fields:
        if f.required and f.initial_default is None and f.field_id not in have:
            raise error(
                f"file {uri} lacks the table's required column {f.name!r} (field id "
                f"{f.field_id}), which has no initial default"
            )


@dataclass(frozen=True)
class FilesFitSchema:
    """Requirement: the files still read correctly with the base's current schema (a schema
    change that raced with the commit may not make them unreadable), and the spec is the one
    they were checked against."""

    files: tuple[CheckedFile, ...]
    spec_id: int

    def validate(self, base: TableMetadata) -> None:
        if base.default_spec_id != self.spec_id:
            raise CommitConflictError(
                f"the table's partition spec changed to {base.default_spec_id} while files were "
                f"being added for spec {self.spec_id}: add them again"
            )
        current = base.current_schema()
        done: set[tuple[int, ...]] = set()
        for f in self.files:
            ids = tuple(x.field_id for x in f.fields)
            if ids in done:
                continue
            done.add(ids)
            schema_fits(current, f.fields, f.data_file.file_path, CommitConflictError)


# --------------------------------------------------------------------------------------------
# the commit


class AddFilesCommit(AppendCommit):
    """An append whose data files were written already (plus any tables a transaction
    stages). The files are never deleted by this commit: only its manifest is staged."""

    def __init__(
        self,
        *args: Any,
        files: Sequence[CheckedFile] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._files = tuple(files)

    def stage_append(self, tables: Sequence[pa.Table], progress: Progress | None = None) -> None:
        self.added.extend(f.data_file for f in self._files)
        super().stage_append(tables, progress)

    def requirements(self) -> list[Any]:
        return [*super().requirements(), FilesFitSchema(self._files, self.spec.spec_id)]


__all__ = [
    "AddFilesCommit",
    "CheckedFile",
    "DataFileWriter",
    "FileLike",
    "FilesFitSchema",
    "WrittenFile",
    "check_files",
    "schema_fits",
]
