"""Tables by name in a warehouse: ``create_table``, ``load_table``, ``drop_table``.

The warehouse is a storage root. It comes from, in order:

1. an explicit URI: ``create_table("events", schema, warehouse="s3://bucket/prefix")``;
2. else the environment: ``DATASHARD_STORAGE_TYPE`` and its ``DATASHARD_*`` variables
   (:func:`datashard.storage.config.backend_from_env`);
3. else a local directory (``./datashard-warehouse``, or ``DATASHARD_LOCAL_PATH``).

A table named ``events`` lives at ``<warehouse>/events/``. A name is one path segment of
letters, digits, ``_``, ``-`` and ``.`` (not starting with ``.``), at most 200 characters.

``load_table`` also takes the URI of a metadata file (``.../metadata/00000-<uuid>.metadata.json``
as other Iceberg writers name them) and opens that table read-only; see
:meth:`datashard.table.Table.from_metadata`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import pyarrow as pa

from datashard.errors import (
    ObjectExistsError,
    SchemaError,
    TableAlreadyExistsError,
    TableNotFoundError,
    UnsupportedFeatureError,
    ValidationError,
)
from datashard.iceberg.metadata import FORMAT_VERSION, new_table_metadata
from datashard.iceberg.metadata_codec import metadata_from_json, metadata_to_json
from datashard.iceberg.partitioning import SpecLike, build_spec
from datashard.iceberg.schema import Schema
from datashard.storage.base import StorageBackend
from datashard.storage.config import backend_from_env, open_backend
from datashard.table.commit import CommitSettings
from datashard.table.producer import parquet_options
from datashard.table.row_delta import delete_mode
from datashard.table.table import Table
from datashard.table.versions import (
    Loaded,
    TablePaths,
    load_newest,
    newest_foreign_metadata,
    write_hint,
)

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}$")

SchemaLike: TypeAlias = Schema | pa.Schema | Sequence[Mapping[str, Any]]


def validate_table_name(name: object) -> str:
    """``name`` if it is a valid table name, else ``ValidationError`` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValidationError(
            f"invalid table name {name!r}: use 1-200 letters, digits, '_', '-' or '.', "
            "not starting with '.' and without '/' (for example 'user-events')"
        )
    return name


def resolve_warehouse(warehouse: str | StorageBackend | None, **options: Any) -> StorageBackend:
    """The backend of the warehouse: an explicit URI or backend, else the environment's."""
    if isinstance(warehouse, StorageBackend):
        if options:
            raise ValidationError("storage options go with a warehouse URI, not a backend object")
        return warehouse
    if warehouse is not None:
        return open_backend(warehouse, **options)
    if options:
        raise ValidationError(
            "storage options need an explicit warehouse URI; with none the environment "
            "(DATASHARD_STORAGE_TYPE, DATASHARD_*) configures storage"
        )
    return backend_from_env()


def to_schema(schema: SchemaLike) -> Schema:
    """A :class:`Schema` from a Schema, a pyarrow schema or a list of field dicts."""
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, pa.Schema):
        return Schema.from_arrow(schema)
    if isinstance(schema, Sequence) and not isinstance(schema, (str, bytes)):
        return Schema(0, list(schema))
    raise SchemaError(
        f"schema must be a Schema, a pyarrow.Schema or a list of field dicts, "
        f"got {type(schema).__name__}"
    )


def check_properties(properties: Mapping[str, str]) -> None:
    """``ConfigError`` naming the first table property datashard reads whose value it cannot
    use (commit retries and retention, ``write.parquet.row-group-limit``,
    ``write.parquet.row-group-size-bytes``, ``write.target-file-size-bytes``,
    ``write.delete.mode``), and ``UnsupportedFeatureError`` for a ``format-version`` other
    than 2; before anything is written."""
    version = properties.get("format-version", str(FORMAT_VERSION))
    if version != str(FORMAT_VERSION):
        raise UnsupportedFeatureError(
            f"format-version {version!r}: datashard creates Iceberg format version "
            f"{FORMAT_VERSION} tables only (v3 row lineage and deletion vectors are not "
            "written yet)"
        )
    CommitSettings.from_properties(properties)
    parquet_options(properties)  # the row-group limits and the target file size
    delete_mode(properties)


def create_table(
    name: str,
    schema: SchemaLike,
    warehouse: str | StorageBackend | None = None,
    properties: Mapping[str, str] | None = None,
    partition_spec: SpecLike = None,
    **storage_options: Any,
) -> Table:
    """Create an empty table ``name`` in the warehouse and return it.

    ``partition_spec``: ``[("ts", "day"), ("user_id", "bucket[16]")]``, dicts or a
    ``PartitionSpec`` (see :mod:`datashard.iceberg.partitioning`); ``SchemaError`` for a bad one.

    Raises ``TableAlreadyExistsError`` (naming the location) when a table is there,
    ``ValidationError`` for a bad name, ``SchemaError`` for a bad schema.
    """
    validate_table_name(name)
    the_schema = to_schema(schema)
    props = {k: str(v) for k, v in (properties or {}).items()}
    check_properties(props)
    props.pop("format-version", None)  # reserved: the metadata's own field says it
    backend = resolve_warehouse(warehouse, **storage_options)
    paths = TablePaths(name)
    location = backend.uri_for(name)
    if newest_foreign_metadata(backend, paths) is not None:
        raise TableAlreadyExistsError(f"a table already exists at {location}")
    md = new_table_metadata(
        the_schema,
        location,
        props,
        partition_spec=build_spec(the_schema, partition_spec),
    )
    key = paths.version(1)
    body = metadata_to_json(md)
    try:
        backend.put_if_absent(key, body)
    except ObjectExistsError:
        raise TableAlreadyExistsError(
            f"a table already exists at {location} ({backend.uri_for(key)} is there)"
        ) from None
    write_hint(backend, paths, 1)
    uri = backend.uri_for(key)
    return Table(backend, paths, Loaded(metadata_from_json(body, uri), 1, uri), name=name)


def load_table(
    name: str, warehouse: str | StorageBackend | None = None, **storage_options: Any
) -> Table:
    """The newest version of table ``name`` in the warehouse.

    ``name`` may also be the URI of a metadata file (ending ``.metadata.json``): that table is
    opened read-only. Raises ``TableNotFoundError`` naming the location tried, and
    ``CorruptMetadataError`` naming a metadata file that does not parse.
    """
    if isinstance(name, str) and name.endswith(".metadata.json"):
        return Table.from_metadata(name, **storage_options)
    validate_table_name(name)
    backend = resolve_warehouse(warehouse, **storage_options)
    paths = TablePaths(name)
    loaded = load_newest(backend, paths)
    if loaded is None:
        foreign = newest_foreign_metadata(backend, paths)
        if foreign is not None:
            return Table.from_backend_key(backend, foreign, name=name)
        raise TableNotFoundError(
            f"no table {name!r} at {backend.uri_for(name)} (no "
            f"{paths.metadata_dir}/v<N>.metadata.json there); create it with create_table "
            "or check the warehouse / DATASHARD_* settings"
        )
    return Table(backend, paths, loaded, name=name)


def table_exists(
    name: str, warehouse: str | StorageBackend | None = None, **storage_options: Any
) -> bool:
    """Whether a table ``name`` exists in the warehouse."""
    try:
        load_table(name, warehouse, **storage_options)
    except TableNotFoundError:
        return False
    return True


def drop_table(
    name: str, warehouse: str | StorageBackend | None = None, **storage_options: Any
) -> None:
    """Delete table ``name``: every object under its location (data and metadata).

    Raises ``TableNotFoundError`` when there is none. Not safe against concurrent writers.
    """
    validate_table_name(name)
    backend = resolve_warehouse(warehouse, **storage_options)
    paths = TablePaths(name)
    keys = [m.key for m in backend.list(paths.prefix + "/")]
    if not any(k.startswith(paths.metadata_dir + "/") for k in keys):
        raise TableNotFoundError(f"no table {name!r} at {backend.uri_for(name)}")
    # metadata first, so a half-dropped table is not mistaken for a live one
    keys.sort(key=lambda k: (not k.startswith(paths.metadata_dir + "/"), k))
    backend.delete_many(keys)


__all__ = [
    "create_table",
    "drop_table",
    "load_table",
    "resolve_warehouse",
    "table_exists",
    "to_schema",
    "validate_table_name",
]
