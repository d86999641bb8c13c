"""A PyIceberg catalog over a datashard warehouse: PyIceberg commits through datashard's protocol.

``load_catalog("ds", **{"py-catalog-impl": "datashard.pyiceberg_catalog.DatashardCatalog",
"warehouse": "s3://bucket/prefix", ...})`` gives a PyIceberg catalog whose tables are datashard
tables: ``<warehouse>/<name>/metadata/v<N>.metadata.json``. A PyIceberg commit creates
``v<N+1>`` with ``put_if_absent``, exactly as a datashard writer does, so PyIceberg writers and
datashard writers append to one table side by side with no lock service.

Namespaces: a datashard warehouse holds one flat set of table names, so the catalog has one
namespace, ``default`` (the warehouse root). ``"events"``, ``"default.events"`` and
``("default", "events")`` name the table ``events``; a name with a dot needs the tuple form.
Any other namespace raises ``NoSuchNamespaceError``; creating or dropping namespaces, renaming
and registering tables, and views are refused with
:class:`~datashard.errors.UnsupportedFeatureError`.

Properties: ``warehouse`` (required; ``file://``, ``s3://``, ``az://``, ``gs://``), PyIceberg's
own storage properties (``s3.endpoint``, ``s3.access-key-id`` ... see :data:`PYICEBERG_OPTIONS`),
which configure both PyIceberg's file IO (data files, manifests) and datashard's backend
(metadata), and ``datashard.<option>`` for any other option of datashard's backend config
(``datashard.max_concurrency=8``). An unknown ``datashard.*`` option or a bad value raises
:class:`~datashard.errors.ConfigError` naming it. Credentials appear in no message or ``repr``.

A commit (:meth:`DatashardCatalog.commit_table`) validates PyIceberg's requirements on the
newest version, applies the updates with PyIceberg's ``update_table_metadata``, checks that
datashard reads the result, and creates the next version. Losing the race, it re-validates on
the newer version and tries again while the requirements hold (an append's requirement on the
branch head fails after another append: ``CommitFailedException``, which PyIceberg's
transaction retries by rebuilding its snapshot). An unknown outcome (a storage error after the
request was sent) is resolved by reading the version back and comparing it byte for byte with
what was sent; ``CommitStateUnknownException`` when that cannot be told.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import MetastoreCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    NoSuchViewError,
)
from pyiceberg.exceptions import TableAlreadyExistsError as PyIcebergTableExists
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.table import CommitTableResponse, CreateTableTransaction, Table
from pyiceberg.table.metadata import TableMetadata, TableMetadataUtil, new_table_metadata
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortOrder
from pyiceberg.table.update import AssertCreate, update_table_metadata
from pyiceberg.typedef import EMPTY_DICT, Identifier, Properties

from datashard.errors import (
    ConfigError,
    CorruptMetadataError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    UnsupportedFeatureError,
    ValidationError,
)
from datashard.iceberg.metadata import TableMetadata as DatashardMetadata
from datashard.iceberg.metadata_codec import metadata_from_json
from datashard.storage.base import StorageBackend
from datashard.storage.config import open_backend, split_scheme
from datashard.storage.retry import retry_budget
from datashard.table.catalog import drop_table, validate_table_name
from datashard.table.commit import INLINE_STUBS, retire_keep, retire_quietly
from datashard.table.properties import check_properties
from datashard.table.versions import (
    STALE_BASE_S,
    Sight,
    TablePaths,
    fresh_for,
    is_stub,
    needs_look,
    newest_listed_version,
    newest_version,
    probe_forward,
    sight,
    write_hint,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.table.update import TableRequirement, TableUpdate
    from pyiceberg.view import View

logger = logging.getLogger(__name__)

#: The one namespace: the warehouse root.
NAMESPACE: Identifier = ("default",)

#: PyIceberg storage properties that also configure datashard's backend, per URI scheme:
#: property -> datashard config field. ``s3.force-virtual-addressing`` maps to ``path_style``
#: (inverted).
PYICEBERG_OPTIONS: dict[str, dict[str, str]] = {
    "s3": {
        "s3.endpoint": "endpoint_url",
        "s3.access-key-id": "access_key_id",
        "s3.secret-access-key": "secret_access_key",
        "s3.session-token": "session_token",
        "s3.region": "region",
        "s3.anonymous": "anonymous",
        "s3.connect-timeout": "connect_timeout",
    },
    "az": {
        "adls.account-name": "account_name",
        "adls.account-key": "account_key",
        "adls.sas-token": "sas_token",
        "adls.connection-string": "connection_string",
    },
    "gs": {
        "gcs.project-id": "project",
        "gcs.oauth2.token": "token",
        "gcs.service.host": "endpoint",
    },
}
_PREFIX = "datashard."
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

#: Races a commit loses (with its requirements still holding) before CommitFailedException.
MAX_LOST_RACES = 20
#: Sends of the same bytes to the same key while their outcome stays unknown.
MAX_UNKNOWN_SENDS = 4
#: Times a read moves on past a version retired under it.
_RETIRED_RETRIES = 8


def backend_options(warehouse: str, properties: Mapping[str, str]) -> dict[str, Any]:
    """datashard backend options from catalog properties (see the module docstring);
    ``ConfigError`` naming a bad ``s3.force-virtual-addressing`` value. Unknown ``datashard.*``
    options are named by :func:`~datashard.storage.config.open_backend`."""
    scheme, _ = split_scheme(warehouse)
    options: dict[str, Any] = {}
    for prop, field in PYICEBERG_OPTIONS.get(scheme, {}).items():
        if properties.get(prop) is not None:
            options[field] = properties[prop]
    virtual = properties.get("s3.force-virtual-addressing") if scheme == "s3" else None
    if virtual is not None:
        value = str(virtual).strip().lower()
        if value not in _TRUE | _FALSE:
            raise ConfigError(
                f"catalog property s3.force-virtual-addressing={virtual!r}: expected 'true' "
                "or 'false'"
            )
        options["path_style"] = value in _FALSE
    for key, value in properties.items():
        if key.startswith(_PREFIX):
            options[key[len(_PREFIX) :]] = value
    return options


def _response(metadata: TableMetadata, location: str) -> CommitTableResponse:
    return CommitTableResponse(metadata=metadata, metadata_location=location)  # type: ignore[call-arg]


class DatashardCatalog(MetastoreCatalog):
    """A PyIceberg catalog whose tables are the tables of one datashard warehouse.

    Raises ``ConfigError`` for a missing ``warehouse``, an unknown ``datashard.*`` option or a
    bad value (naming the property, never a credential's value).
    """

    def __init__(self, name: str, **properties: str) -> None:
        super().__init__(name, **properties)
        warehouse = properties.get("warehouse")
        if not warehouse or not isinstance(warehouse, str):
            raise ConfigError(
                f"catalog {name!r}: the property 'warehouse' is required: a datashard "
                "warehouse URI such as 'file:///data/wh', 's3://bucket/prefix', "
                "'az://container/prefix' or 'gs://bucket/prefix'"
            )
        self._backend: StorageBackend = open_backend(
            warehouse, **backend_options(warehouse, properties)
        )

    # ----------------------------------------------------------------------------------------
    # names

    def _table_name(self, identifier: str | Identifier) -> str:
        """The datashard table name of ``identifier``: ``NoSuchNamespaceError`` for another
        namespace than ``default``, ``ValidationError`` for a name datashard cannot hold."""
        parts = self.identifier_to_tuple(identifier)
        if len(parts) == 2 and parts[0] == self.name and parts[1] != NAMESPACE[0]:
            parts = parts[1:]  # "<catalog>.<table>"
        if len(parts) == 3 and parts[0] == self.name:
            parts = parts[1:]  # "<catalog>.default.<table>"
        if len(parts) == 1:
            return validate_table_name(parts[0])
        if len(parts) == 2 and parts[0] == NAMESPACE[0]:
            return validate_table_name(parts[1])
        raise NoSuchNamespaceError(
            f"no namespace {'.'.join(parts[:-1])!r} in {self._backend.root_uri}: a datashard "
            f"warehouse has one namespace, 'default' (table names like 'default.events', or "
            f"('default', 'user.events') for a name with a dot)"
        )

    def _check_namespace(self, namespace: str | Identifier) -> None:
        ns = self.identifier_to_tuple(namespace)
        if ns != NAMESPACE:
            raise NoSuchNamespaceError(
                f"no namespace {'.'.join(ns)!r}: a datashard warehouse has one namespace, "
                f"'default' ({self._backend.root_uri})"
            )

    def _location(self, name: str) -> str:
        return self._backend.uri_for(name)

    # ----------------------------------------------------------------------------------------
    # reading versions

    def _read_newest(self, paths: TablePaths) -> tuple[int, bytes] | None:
        """The newest ``v<N>`` and its bytes, or ``None`` when the table has no version."""
        known: int | None = None
        for _ in range(_RETIRED_RETRIES):
            n = newest_version(self._backend, paths, known)
            if n is None:
                return None
            try:
                data = self._backend.read(paths.version(n))
            except ObjectNotFoundError:  # a hint ahead of the versions: list
                listed = newest_listed_version(self._backend, paths)
                if listed is None:
                    return None
                known = listed
                continue
            if not is_stub(data):
                return n, data
            if known == n:  # a stub with nothing after it (written again late): list
                listed = newest_listed_version(self._backend, paths)
                if listed is None or listed == n:
                    break
                n = listed
            known = n  # retired since it was found: newer versions exist
        raise CommitStateUnknownException(
            f"could not read the newest version of {self._location(paths.prefix)}: versions "
            "kept being retired under the read; try again"
        )

    def _parse(self, data: bytes, location: str) -> TableMetadata:
        try:
            return TableMetadataUtil.parse_raw(data.decode("utf-8"))
        except ValueError as exc:
            raise CorruptMetadataError(f"PyIceberg cannot read {location}: {exc}") from exc

    def _table(self, name: str, version: int, metadata: TableMetadata) -> Table:
        key = TablePaths(name).version(version)
        location = self._backend.uri_for(key)
        return Table(
            identifier=(*NAMESPACE, name),
            metadata=metadata,
            metadata_location=location,
            io=self._load_file_io(metadata.properties, location),
            catalog=self,
        )

    # ----------------------------------------------------------------------------------------
    # tables

    def load_table(self, identifier: str | Identifier) -> Table:
        """The newest version of the table; ``NoSuchTableError`` naming the location tried."""
        try:
            name = self._table_name(identifier)
        except NoSuchNamespaceError as exc:
            raise NoSuchTableError(str(exc)) from None
        paths = TablePaths(name)
        found = self._read_newest(paths)
        if found is None:
            raise NoSuchTableError(
                f"no table {name!r} at {self._location(name)} (no "
                f"{paths.metadata_dir}/v<N>.metadata.json there)"
            )
        version, data = found
        return self._table(name, version, self._parse(data, self._location(paths.version(version))))

    def create_table(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        location: str | None = None,
        partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
        sort_order: SortOrder = UNSORTED_SORT_ORDER,
        properties: Properties = EMPTY_DICT,
    ) -> Table:
        """Create the table's ``v1`` with ``put_if_absent``; PyIceberg's
        ``TableAlreadyExistsError`` when it exists, ``ValidationError`` for a ``location``
        other than ``<warehouse>/<name>``, ``ConfigError`` for a table property datashard
        cannot use."""
        name = self._table_name(identifier)
        table_location = self._resolve_location(name, location)
        props = {str(k): str(v) for k, v in properties.items()}
        check_properties(props)
        iceberg_schema = self._convert_schema_if_needed(schema, 2)  # check_properties: v2 only
        metadata = new_table_metadata(
            location=table_location,
            schema=iceberg_schema,
            partition_spec=partition_spec,
            sort_order=sort_order,
            properties=props,
        )
        paths = TablePaths(name)
        body, _ = self._checked_body(metadata, self._location(paths.version(1)))
        # an unknown outcome is read back, as for commits (v1 is never deleted)
        if not self._send(paths, 1, body, sight()):
            raise PyIcebergTableExists(f"table {name!r} already exists at {table_location}")
        write_hint(self._backend, paths, 1)
        return self._table(name, 1, metadata)

    def create_table_transaction(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        location: str | None = None,
        partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
        sort_order: SortOrder = UNSORTED_SORT_ORDER,
        properties: Properties = EMPTY_DICT,
    ) -> CreateTableTransaction:
        """A transaction that creates the table (``v1``) when it commits, with what was staged
        in it; the errors of :meth:`create_table`, raised before anything is written."""
        name = self._table_name(identifier)
        props = {str(k): str(v) for k, v in properties.items()}
        check_properties(props)
        return super().create_table_transaction(
            (*NAMESPACE, name),
            schema,
            self._resolve_location(name, location),
            partition_spec,
            sort_order,
            props,
        )

    def _resolve_location(self, name: str, location: str | None) -> str:
        expected = self._location(name)
        if location and location.rstrip("/") != expected:
            raise ValidationError(
                f"location {location!r} for table {name!r}: a datashard table lives at "
                f"<warehouse>/<name>, here {expected!r}; leave location unset"
            )
        return expected

    def table_exists(self, identifier: str | Identifier) -> bool:
        try:
            self.load_table(identifier)
        except NoSuchTableError:
            return False
        return True

    def drop_table(self, identifier: str | Identifier) -> None:
        """Delete the table's objects (metadata first), like datashard's ``drop_table``; not
        safe beside writers of that table. ``NoSuchTableError`` when there is none."""
        try:
            name = self._table_name(identifier)
        except NoSuchNamespaceError as exc:
            raise NoSuchTableError(str(exc)) from None
        from datashard.errors import TableNotFoundError

        try:
            drop_table(name, self._backend)
        except TableNotFoundError as exc:
            raise NoSuchTableError(str(exc)) from None

    def purge_table(self, identifier: str | Identifier) -> None:
        """The same as :meth:`drop_table`: dropping deletes the table's files."""
        self.drop_table(identifier)

    def list_tables(self, namespace: str | Identifier) -> list[Identifier]:
        """Every table of the warehouse (a directory with a ``metadata/v<N>.metadata.json``),
        sorted. Lists the whole warehouse (every object under it): costs one LIST request per
        1,000 objects."""
        self._check_namespace(namespace)
        names: set[str] = set()
        pattern = re.compile(r"^([^/]+)/metadata/v\d+\.metadata\.json$")
        for meta in self._backend.list(""):
            match = pattern.match(meta.key)
            if match:
                names.add(match.group(1))
        return [(*NAMESPACE, n) for n in sorted(names)]

    def rename_table(
        self, from_identifier: str | Identifier, to_identifier: str | Identifier
    ) -> Table:
        raise UnsupportedFeatureError(
            "rename_table: a datashard table's files live under <warehouse>/<name> and are "
            "named by absolute URIs in its metadata; renaming is not supported (copy the rows "
            "into a new table instead)"
        )

    def register_table(
        self, identifier: str | Identifier, metadata_location: str, overwrite: bool = False
    ) -> Table:
        raise UnsupportedFeatureError(
            "register_table: a datashard table is its directory <warehouse>/<name>; open a "
            "metadata file read-only with datashard.load_table('<uri>.metadata.json') instead"
        )

    # ----------------------------------------------------------------------------------------
    # commits

    def _checked_body(
        self, metadata: TableMetadata, location: str
    ) -> tuple[bytes, DatashardMetadata]:
        """``metadata`` as JSON and as datashard reads it (a version datashard's reader cannot
        read would stop every datashard writer of the table, so that is checked first)."""
        body = metadata.model_dump_json().encode("utf-8")
        try:
            ours = metadata_from_json(body, location)
        except (CorruptMetadataError, UnsupportedFeatureError) as exc:
            raise UnsupportedFeatureError(
                f"not committed: datashard cannot read the metadata PyIceberg built for "
                f"{location}: {exc}"
            ) from exc
        return body, ours

    def commit_table(
        self,
        table: Table,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> CommitTableResponse:
        """Commit ``updates`` to the newest version if ``requirements`` hold on it.

        Raises ``CommitFailedException`` when a requirement fails on the newest version (the
        table is unchanged; PyIceberg's transaction may rebuild and retry), or after
        :data:`MAX_LOST_RACES` lost races; ``CommitStateUnknownException`` when a storage error
        hid whether the new version landed and reading it back could not tell.
        """
        name = self._table_name(table.name())
        paths = TablePaths(name)
        seen = sight()  # v<version+1> was missing then (datashard.table.versions.STALE_BASE_S)
        found = self._read_newest(paths)
        base: TableMetadata | None = None
        version = 0
        if found is not None:
            version = found[0]
            base = self._parse(found[1], self._location(paths.version(version)))
        creating = any(isinstance(r, AssertCreate) for r in requirements)
        for race in range(MAX_LOST_RACES + 1):
            if creating and base is not None:
                raise PyIcebergTableExists(
                    f"table {name!r} already exists at {self._location(name)}"
                )
            base_location = None if base is None else self._location(paths.version(version))
            for requirement in requirements:
                requirement.validate(base)  # raises CommitFailedException
            try:
                new_md = update_table_metadata(
                    base_metadata=base if base is not None else self._empty_table_metadata(),
                    updates=updates,
                    enforce_validation=base is None,
                    metadata_location=base_location,
                )
            except ValueError as exc:
                raise CommitFailedException(
                    f"the updates do not apply to {base_location or 'a new table'}: {exc}"
                ) from exc
            if base is not None and new_md == base:
                return _response(base, str(base_location))
            if base is None:
                self._resolve_location(name, new_md.location)
            target = version + 1
            key = paths.version(target)
            body, ours = self._checked_body(new_md, self._backend.uri_for(key))
            if needs_look(seen):  # old stubs are deleted: the base must have been seen lately
                seen = sight()
                found = self._read_newest(paths)
                if found is None:
                    raise NoSuchTableError(f"table {name!r} has no metadata any more")
                version = found[0]
                base = self._parse(found[1], self._location(paths.version(version)))
                continue
            sent = self._send(paths, target, body, seen)
            if sent:
                self._after_win(paths, target, ours)
                return _response(new_md, self._backend.uri_for(key))
            if race < MAX_LOST_RACES:
                time.sleep(random.uniform(0.005, min(0.5, 0.01 * 2 ** min(race, 6))))
            seen = sight()
            version, data = self._newest_after_loss(paths, target)
            base = self._parse(data, self._location(paths.version(version)))
        raise CommitFailedException(
            f"commit to {self._location(name)} lost the race for a new version "
            f"{MAX_LOST_RACES + 1} times; the table is unchanged by this commit"
        )

    def _send(self, paths: TablePaths, target: int, body: bytes, seen: Sight) -> bool:
        """Create ``v<target>`` with ``body``: ``True`` if this commit is there, ``False`` if
        another holds the key. An unknown outcome is resolved by reading it back (the same
        bytes are re-sent while it is absent); ``CommitStateUnknownException`` if it cannot be
        told."""
        key = paths.version(target)
        uncertain: StorageError | None = None
        for _ in range(MAX_UNKNOWN_SENDS):
            left = fresh_for(seen)  # v<target> was seen missing at ``seen``
            if left <= 0:
                raise CommitStateUnknownException(
                    f"the outcome of the commit creating {self._backend.uri_for(key)} is "
                    f"unknown ({uncertain}), and its base was seen to be the newest version "
                    f"more than {STALE_BASE_S:.0f} s ago, so it is not sent again; reload the "
                    "table to see"
                )
            try:
                with retry_budget(left):
                    self._backend.put_if_absent(key, body)
                return True
            except ObjectExistsError:
                if uncertain is None:
                    return False  # every send answered: another commit holds the key
            except StorageError as exc:
                uncertain = exc
            try:
                landed = self._backend.read(key)
            except ObjectNotFoundError:
                time.sleep(random.uniform(0.02, 0.2))
                continue  # absent: re-send the same bytes (at most one create succeeds)
            except StorageError as exc:
                raise CommitStateUnknownException(
                    f"the outcome of the commit creating {self._backend.uri_for(key)} is "
                    f"unknown: it could not be read back ({exc}); reload the table to see"
                ) from exc
            if landed == body:
                return True
            if is_stub(landed):
                raise CommitStateUnknownException(
                    f"the outcome of the commit creating {self._backend.uri_for(key)} is "
                    "unknown: it was retired before it could be read back; reload the table"
                )
            return False
        raise CommitStateUnknownException(
            f"could not create {self._backend.uri_for(key)} after {MAX_UNKNOWN_SENDS} sends "
            f"(last error: {uncertain}); the commit may still land: reload the table to see"
        ) from uncertain

    def _newest_after_loss(self, paths: TablePaths, taken: int) -> tuple[int, bytes]:
        probed = probe_forward(self._backend, paths, taken, bodies=True)
        if probed is not None and probed[1] is not None and not is_stub(probed[1]):
            return probed[0], probed[1]
        found = self._read_newest(paths)
        if found is None:
            raise CommitStateUnknownException(
                f"{self._location(paths.prefix)} has no readable version after a lost race"
            )
        return found

    def _after_win(self, paths: TablePaths, version: int, md: DatashardMetadata) -> None:
        """Best-effort, as after a datashard commit: the hint, then retire what the new
        version superseded (every version its metadata log names stays whole)."""
        write_hint(self._backend, paths, version)
        retire_quietly(self._backend, paths, version, retire_keep(md), INLINE_STUBS)

    # ----------------------------------------------------------------------------------------
    # namespaces

    def create_namespace(
        self, namespace: str | Identifier, properties: Properties = EMPTY_DICT
    ) -> None:
        if self.identifier_to_tuple(namespace) == NAMESPACE:
            raise NamespaceAlreadyExistsError(
                f"namespace 'default' always exists: it is the warehouse {self._backend.root_uri}"
            )
        raise UnsupportedFeatureError(
            f"create_namespace({namespace!r}): a datashard warehouse has one namespace, "
            "'default'; use another warehouse URI for another set of tables"
        )

    def drop_namespace(self, namespace: str | Identifier) -> None:
        self._check_namespace(namespace)
        raise UnsupportedFeatureError(
            "drop_namespace('default'): it is the warehouse itself and cannot be dropped; "
            "drop its tables one by one"
        )

    def list_namespaces(self, namespace: str | Identifier = ()) -> list[Identifier]:
        if not self.identifier_to_tuple(namespace):
            return [NAMESPACE]
        self._check_namespace(namespace)
        return []

    def load_namespace_properties(self, namespace: str | Identifier) -> Properties:
        self._check_namespace(namespace)
        return {"location": self._backend.root_uri}

    def update_namespace_properties(
        self,
        namespace: str | Identifier,
        removals: set[str] | None = None,
        updates: Properties = EMPTY_DICT,
    ) -> Any:
        self._check_namespace(namespace)
        raise UnsupportedFeatureError(
            "update_namespace_properties: the 'default' namespace has no properties to set"
        )

    # ----------------------------------------------------------------------------------------
    # views: none

    def list_views(self, namespace: str | Identifier) -> list[Identifier]:
        self._check_namespace(namespace)
        return []

    def view_exists(self, identifier: str | Identifier) -> bool:
        return False

    def load_view(self, identifier: str | Identifier) -> View:
        raise NoSuchViewError(f"no view {identifier!r}: a datashard warehouse holds no views")

    def drop_view(self, identifier: str | Identifier) -> None:
        raise NoSuchViewError(f"no view {identifier!r}: a datashard warehouse holds no views")

    def register_view(self, identifier: str | Identifier, metadata_location: str) -> View:
        raise UnsupportedFeatureError("views are not supported by a datashard warehouse")

    def create_view(self, *args: Any, **kwargs: Any) -> View:
        raise UnsupportedFeatureError("views are not supported by a datashard warehouse")

    def __repr__(self) -> str:
        return f"DatashardCatalog({self.name!r}, warehouse={self._backend.root_uri!r})"


__all__ = ["NAMESPACE", "PYICEBERG_OPTIONS", "DatashardCatalog", "backend_options"]
