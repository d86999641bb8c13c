"""Tables by name in a warehouse: ``create_table``, ``load_table``, ``drop_table``,
``table_exists``, ``list_tables``.

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
    ValidationError,
)
from datashard.iceberg.metadata import WRITE_VERSIONS, new_table_metadata
from datashard.iceberg.metadata_codec import metadata_from_json, metadata_to_json
from datashard.iceberg.partitioning import SpecLike, build_spec
from datashard.iceberg.schema import Schema
from datashard.storage.base import StorageBackend
from datashard.storage.config import backend_from_env, open_backend
from datashard.table.properties import FORMAT_VERSION_KEY, check_properties, format_version
from datashard.table.table import Table
from datashard.table.versions import (
    Loaded,
    TablePaths,
    load_newest,
    newest_foreign_metadata,
    sight,
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


def create_table(
    name: str,
    schema: SchemaLike,
    warehouse: str | StorageBackend | None = None,
    properties: Mapping[str, str] | None = None,
    partition_spec: SpecLike = None,
    exist_ok: bool = False,
    **storage_options: Any,
) -> Table:
    """Create an empty table ``name`` in the warehouse and return it.

    With ``exist_ok=True`` a table already there with the same schema (names, types,
    nullability and nesting; field ids aside) is loaded and returned instead; one with another
    schema raises ``SchemaError`` naming both.

    ``partition_spec``: ``[("ts", "day"), ("user_id", "bucket[16]")]``, dicts or a
    ``PartitionSpec`` (see :mod:`datashard.iceberg.partitioning`); ``SchemaError`` for a bad one.

    ``properties``: table properties (strings); ``"format-version"`` is ``"2"`` (the default)
    or ``"3"`` (an Iceberg format version 3 table: row ids, deletion vectors; see
    docs/tables.md), and is not kept as a property.

    Raises ``TableAlreadyExistsError`` (naming the location) when a table is there,
    ``ValidationError`` for a bad name or ``format-version``, ``SchemaError`` for a bad schema.
    """
    validate_table_name(name)
    the_schema = to_schema(schema)
    props = {k: str(v) for k, v in (properties or {}).items()}
    check_properties(props, WRITE_VERSIONS)
    version = format_version(props)
    props.pop(FORMAT_VERSION_KEY, None)  # reserved: the metadata's own field says it
    backend = resolve_warehouse(warehouse, **storage_options)
    paths = TablePaths(name)
    location = backend.uri_for(name)
    if newest_foreign_metadata(backend, paths) is not None:
        if exist_ok:
            return _existing(name, backend, the_schema)
        raise TableAlreadyExistsError(f"a table already exists at {location}")
    md = new_table_metadata(
        the_schema,
        location,
        props,
        partition_spec=build_spec(the_schema, partition_spec),
        format_version=version,
    )
    key = paths.version(1)
    body = metadata_to_json(md)
    before = sight()  # v2 cannot exist before v1 does
    try:
        backend.put_if_absent(key, body)
    except ObjectExistsError:
        if exist_ok:
            return _existing(name, backend, the_schema)
        raise TableAlreadyExistsError(
            f"a table already exists at {location} ({backend.uri_for(key)} is there)"
        ) from None
    write_hint(backend, paths, 1)
    uri = backend.uri_for(key)
    loaded = Loaded(metadata_from_json(body, uri), 1, uri, observed=before)
    return Table(backend, paths, loaded, name=name)


def _existing(name: str, backend: StorageBackend, schema: Schema) -> Table:
    """The table ``name`` already there, if its schema is ``schema``; else ``SchemaError``."""
    table = load_table(name, backend)
    if _shape(table.schema().to_json()) != _shape(schema.to_json()):
        raise SchemaError(
            f"table {name!r} at {table.location} exists with another schema: it has "
            f"{_describe(table.schema())}, create_table(exist_ok=True) was given "
            f"{_describe(schema)}; load it with load_table or evolve it with update_schema"
        )
    return table


_ID_KEYS = {"id", "element-id", "key-id", "value-id", "schema-id", "identifier-field-ids"}


def _shape(value: Any) -> Any:
    """A schema's JSON without its ids: what two schemas must share to be "the same"."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in _ID_KEYS}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


def _describe(schema: Schema) -> str:
    return "(" + ", ".join(f"{f.name}: {f.field_type}" for f in schema) + ")"


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
    """Whether a table ``name`` exists in the warehouse: one listing of its metadata
    directory, no metadata read. ``ValidationError`` for a bad name."""
    validate_table_name(name)
    backend = resolve_warehouse(warehouse, **storage_options)
    paths = TablePaths(name)
    return any(_is_metadata(m.key) for m in backend.list(paths.metadata_dir + "/"))


def list_tables(
    warehouse: str | StorageBackend | None = None,
    prefix: str | None = None,
    **storage_options: Any,
) -> list[str]:
    """The names of the tables in the warehouse, sorted; only those starting with ``prefix``
    when given.

    A table is a directory holding ``metadata/v<N>.metadata.json`` (datashard's naming) or
    ``metadata/<NNNNN>-<uuid>.metadata.json`` (other Iceberg writers'). Costs one listing of
    the warehouse (or of the keys under ``prefix``); no object is read.
    """
    backend = resolve_warehouse(warehouse, **storage_options)
    names: set[str] = set()
    for meta in backend.list(prefix or ""):
        parts = meta.key.split("/")
        if len(parts) == 3 and parts[1] == "metadata" and _is_metadata(meta.key):
            names.add(parts[0])
    return sorted(names)


def _is_metadata(key: str) -> bool:
    base = key.rsplit("/", 1)[-1]
    return bool(_VERSION_FILE.match(base) or _FOREIGN_FILE.match(base))


_VERSION_FILE = re.compile(r"^v\d+\.metadata\.json$")
_FOREIGN_FILE = re.compile(r"^\d+-[0-9a-fA-F-]+\.metadata\.json$")


def drop_table(
    name: str,
    warehouse: str | StorageBackend | None = None,
    purge: bool = False,
    **storage_options: Any,
) -> None:
    """Delete table ``name``: every object under its location, data and metadata (what a
    file-system or Hadoop Iceberg catalog does). ``purge=True`` also deletes the files its
    snapshots reference outside its location (files another engine added by absolute path)
    when they are in the same warehouse; files elsewhere are left alone.

    The table disappears at one step: every metadata version but the newest is deleted first
    (it still loads as it was), then the newest (from then on it is gone), then the rest. A
    crash after that leaves objects under the location and no table; calling ``drop_table``
    again deletes them. Raises ``TableNotFoundError`` when there is nothing under the
    location. Not safe against a writer committing to the table meanwhile.
    """
    validate_table_name(name)
    backend = resolve_warehouse(warehouse, **storage_options)
    paths = TablePaths(name)
    keys = [m.key for m in backend.list(paths.prefix + "/")]
    versions = sorted(
        (k for k in keys if k.startswith(paths.metadata_dir + "/") and _is_metadata(k)),
        key=_version_order,
    )
    if not keys:
        raise TableNotFoundError(f"no table {name!r} at {backend.uri_for(name)}")
    outside: list[str] = []
    if purge and versions:
        outside = _referenced_outside(backend, name, paths)
    if versions:
        backend.delete_many(versions[:-1])
        backend.delete(versions[-1])
    gone = set(versions)
    rest = [k for k in keys if k not in gone]
    backend.delete_many(rest + outside)


def _version_order(key: str) -> tuple[int, str]:
    base = key.rsplit("/", 1)[-1]
    digits = base[1:] if base.startswith("v") else base
    number = re.match(r"\d+", digits)
    return (int(number.group(0)) if number else -1, key)


def _referenced_outside(backend: StorageBackend, name: str, paths: TablePaths) -> list[str]:
    """Keys in ``backend`` outside the table's location that its snapshots reference."""
    from datashard.errors import StorageError
    from datashard.table.expire import referenced_files
    from datashard.table.manifests import ManifestReader
    from datashard.table.versions import key_for_uri

    table = load_table(name, backend)
    lists, manifests, data = referenced_files(ManifestReader(backend), table.snapshots())
    out = []
    for uri in sorted(lists | manifests | data):
        try:
            key = key_for_uri(backend, uri)
        except StorageError:
            continue  # another bucket or file system: not this warehouse's to delete
        if not key.startswith(paths.prefix + "/"):
            out.append(key)
    return out


__all__ = [
    "create_table",
    "drop_table",
    "list_tables",
    "load_table",
    "resolve_warehouse",
    "table_exists",
    "to_schema",
    "validate_table_name",
]
