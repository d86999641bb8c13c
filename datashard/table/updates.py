"""Every change to table metadata as data, checked by requirements, applied by one pure function.

A commit is a list of :data:`Update` values and a list of :data:`Requirement` values.
Requirements are checked with ``validate(base)`` against the metadata a commit builds on, on
every attempt; a failed one raises :class:`CommitConflictError` (retrying cannot help).
:func:`apply` turns a base metadata and updates into the new metadata, purely: no I/O, the base
untouched. It also bounds what every commit rewrites: the metadata log keeps
``write.metadata.previous-versions-max`` entries and the snapshot list keeps
``history.expire.max-snapshots`` snapshots (dropping snapshot entries only; files are never
deleted here).

Updates refuse what cannot apply with ``CommitConflictError`` (the base moved under them: a
snapshot already there, a ref to a snapshot that is gone) or ``ValidationError`` (the caller
asked for something the table does not have). A base of a format version datashard does not
write refuses every update (:func:`check_writable`). On a format version 3 base, a snapshot
must take the table's ``next-row-id`` as its ``first-row-id``, and the table's ``next-row-id``
advances by the snapshot's ``added-rows`` (the spec's row lineage).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from datashard.errors import (
    CommitConflictError,
    ConfigError,
    CorruptMetadataError,
    SchemaError,
    UnsupportedFeatureError,
    ValidationError,
)
from datashard.iceberg.metadata import (
    LINEAGE_VERSION,
    MAIN_BRANCH,
    WRITE_VERSIONS,
    MetadataLogEntry,
    PartitionSpec,
    Snapshot,
    SnapshotLogEntry,
    SnapshotRef,
    TableMetadata,
)
from datashard.iceberg.schema import Schema
from datashard.iceberg.types import unwritten_types_in, v3_types_in

#: The snapshot summary key (or, for a commit without a snapshot, the table property) carrying
#: the unique id of the commit that made it.
COMMIT_ID = "datashard.commit-id"
MAIN = MAIN_BRANCH

# --------------------------------------------------------------------------------------------
# requirements


class Requirement(Protocol):
    def validate(self, base: TableMetadata) -> None:
        """Raise ``CommitConflictError`` if ``base`` breaks this requirement."""


#: The snapshot summary key carrying an append's idempotency key (see :class:`AssertNewKey`).
IDEMPOTENCY_KEY = "datashard.idempotency-key"
#: The longest idempotency key accepted, in characters (it is stored in every metadata version
#: while its snapshot is retained).
MAX_IDEMPOTENCY_KEY = 512


def check_idempotency_key(key: object) -> str:
    """``key`` if it is a usable idempotency key, else ``ValidationError`` saying why."""
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            f"idempotency_key must be a non-blank str of at most {MAX_IDEMPOTENCY_KEY} "
            f"characters (e.g. 'run-17/task-42'), got {key!r:.80}"
        )
    return key


#: The snapshot summary key carrying the idempotency keys of the appends a snapshot folded in
#: with group commit (a JSON list of strings; see :mod:`datashard.table.group`).
FOLDED_KEYS = "datashard.folded-idempotency-keys"


def idempotency_keys(snapshot: Snapshot) -> list[str]:
    """The idempotency keys ``snapshot`` carries: its own append's, and those of the appends
    it folded in. A malformed list of folded keys is ``CorruptMetadataError``: reading it as
    empty could land a keyed append twice."""
    out = []
    own = snapshot.summary.get(IDEMPOTENCY_KEY)
    if own is not None:
        out.append(own)
    folded = snapshot.summary.get(FOLDED_KEYS)
    if folded is not None:
        try:
            keys = json.loads(folded)
        except ValueError:
            keys = None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CorruptMetadataError(
                f"snapshot {snapshot.snapshot_id}: summary {FOLDED_KEYS} is {folded!r:.120}, "
                "expected a JSON list of strings"
            )
        out.extend(keys)
    return out


def snapshot_with_key(md: TableMetadata, key: str) -> Snapshot | None:
    """The retained snapshot of ``md`` that carries the idempotency ``key`` (its own append's,
    or one it folded in)."""
    return next((s for s in md.snapshots if key in idempotency_keys(s)), None)


class AlreadyCommittedError(CommitConflictError):
    """An append with this idempotency key already landed: :attr:`snapshot` is the one it made
    (raised by :class:`AssertNewKey`; the append returns that snapshot instead)."""

    def __init__(self, key: str, snapshot: Snapshot) -> None:
        super().__init__(
            f"an append with idempotency key {key!r} already landed as snapshot "
            f"{snapshot.snapshot_id}"
        )
        self.key = key
        self.snapshot = snapshot


@dataclass(frozen=True)
class AssertNewKey:
    """No retained snapshot carries the idempotency ``key`` yet (checked on every base an
    append builds on, so of two writers racing with one key only one lands a snapshot)."""

    key: str

    def validate(self, base: TableMetadata) -> None:
        found = snapshot_with_key(base, self.key)
        if found is not None:
            raise AlreadyCommittedError(self.key, found)


@dataclass(frozen=True)
class AssertTableUUID:
    """The table is still the one this commit read (not dropped and re-created)."""

    uuid: str

    def validate(self, base: TableMetadata) -> None:
        if str(base.table_uuid) != str(self.uuid):
            raise CommitConflictError(
                f"table {base.location} was replaced: uuid {base.table_uuid}, expected {self.uuid}"
            )


@dataclass(frozen=True)
class AssertRefSnapshotId:
    """The branch still points where it did when this commit read it."""

    ref: str
    snapshot_id: int | None

    def validate(self, base: TableMetadata) -> None:
        ref = base.refs.get(self.ref)
        current = ref.snapshot_id if ref is not None else None
        if current != self.snapshot_id:
            raise CommitConflictError(
                f"branch {self.ref!r} of {base.location} moved to snapshot {current} since this "
                f"commit read snapshot {self.snapshot_id}"
            )


@dataclass(frozen=True)
class AssertCurrentSchemaId:
    """The current schema is the one this commit's data was validated against."""

    schema_id: int

    def validate(self, base: TableMetadata) -> None:
        if base.current_schema_id != self.schema_id:
            raise CommitConflictError(
                f"the schema of {base.location} changed to {base.current_schema_id} since this "
                f"commit validated its data against schema {self.schema_id}"
            )


@dataclass(frozen=True)
class AssertLastAssignedFieldId:
    """No column was added by someone else since the change was built (ids would clash)."""

    last_column_id: int

    def validate(self, base: TableMetadata) -> None:
        if base.last_column_id != self.last_column_id:
            raise CommitConflictError(
                f"columns were added to {base.location} (last column id {base.last_column_id}, "
                f"this change was built on {self.last_column_id})"
            )


@dataclass(frozen=True)
class AssertFormatVersion:
    """The table's format version is still the one this commit wrote its files for (an upgrade
    in between would leave version 2 files in a version 3 snapshot)."""

    format_version: int

    def validate(self, base: TableMetadata) -> None:
        if base.format_version != self.format_version:
            raise CommitConflictError(
                f"table {base.location} was upgraded to format version {base.format_version} "
                f"since this commit wrote its files for version {self.format_version}; retry"
            )


@dataclass(frozen=True)
class AssertDefaultSpecId:
    """The default partition spec is still the one the change was built against."""

    spec_id: int

    def validate(self, base: TableMetadata) -> None:
        if base.default_spec_id != self.spec_id:
            raise CommitConflictError(
                f"the partition spec of {base.location} changed to {base.default_spec_id} since "
                f"this commit read spec {self.spec_id}"
            )


# --------------------------------------------------------------------------------------------
# updates


@dataclass(frozen=True)
class AddSnapshot:
    """Add a snapshot (its id must be new); the table's last sequence number follows it."""

    snapshot: Snapshot


@dataclass(frozen=True)
class SetSnapshotRef:
    """Point ref ``name`` at a snapshot the table keeps. For ``main`` the snapshot becomes
    current and joins the snapshot log. An existing ref keeps its retention settings."""

    name: str
    snapshot_id: int
    type: Literal["branch", "tag"] = "branch"


@dataclass(frozen=True)
class RemoveSnapshotRef:
    """Remove ref ``name`` (not ``main``)."""

    name: str


@dataclass(frozen=True)
class RemoveSnapshots:
    """Drop snapshots (and their snapshot-log entries) from the metadata; no file is touched.
    Ids the table no longer keeps are ignored (another commit dropped them)."""

    snapshot_ids: frozenset[int]


@dataclass(frozen=True)
class SetProperties:
    updates: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoveProperties:
    """Remove table properties (absent keys are ignored)."""

    removals: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddSchema:
    """Add a schema (its id must be new) and raise the last column id to ``last_column_id``."""

    schema: Schema
    last_column_id: int


@dataclass(frozen=True)
class SetCurrentSchema:
    schema_id: int


@dataclass(frozen=True)
class AddPartitionSpec:
    """Add a partition spec (kept once: an equal spec id is not added twice) and raise the last
    partition field id to ``last_partition_id``."""

    spec: PartitionSpec
    last_partition_id: int


@dataclass(frozen=True)
class SetDefaultSpec:
    spec_id: int


@dataclass(frozen=True)
class UpgradeFormatVersion:
    """Raise the table's format version (2 to 3: ``next-row-id`` starts at 0, existing
    snapshots keep no row ids); a lower version is a ``ValidationError``, the same one a no-op."""

    format_version: int


Update = (
    AddSnapshot
    | SetSnapshotRef
    | RemoveSnapshotRef
    | RemoveSnapshots
    | SetProperties
    | RemoveProperties
    | AddSchema
    | SetCurrentSchema
    | AddPartitionSpec
    | SetDefaultSpec
    | UpgradeFormatVersion
)


# --------------------------------------------------------------------------------------------
# retention every commit applies


def whole_number(props: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    """Table property ``key`` as an int >= ``minimum`` (``default`` when absent);
    ``ConfigError`` naming the property and the value otherwise."""
    raw = props.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"table property {key} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"table property {key} must be >= {minimum}, got {value}")
    return value


#: (property, default) of the metadata log entries and the snapshots every commit keeps.
#: Iceberg's default log is 100 versions; datashard's is 10, since versions out of the log are
#: retired to stubs (:func:`datashard.table.versions.retire_superseded`) and each whole one
#: costs tens of KB.
PREVIOUS_VERSIONS_MAX = ("write.metadata.previous-versions-max", 10)
MAX_SNAPSHOTS = ("history.expire.max-snapshots", 100)


def expire_snapshots(md: TableMetadata, keep: int) -> TableMetadata:
    """``md`` with only the newest ``keep`` snapshots (and every snapshot a ref names).

    Drops snapshot entries and their snapshot-log entries only; no file is touched.
    """
    if len(md.snapshots) <= keep:
        return md
    pinned = {ref.snapshot_id for ref in md.refs.values()}
    ordered = sorted(md.snapshots, key=lambda s: (s.sequence_number, s.timestamp_ms))
    newest = {s.snapshot_id for s in ordered[-keep:]}
    return _without_snapshots(md, {s.snapshot_id for s in md.snapshots} - newest - pinned)


def _without_snapshots(md: TableMetadata, ids: set[int] | frozenset[int]) -> TableMetadata:
    if not ids:
        return md
    return replace(
        md,
        snapshots=tuple(s for s in md.snapshots if s.snapshot_id not in ids),
        snapshot_log=tuple(e for e in md.snapshot_log if e.snapshot_id not in ids),
    )


# --------------------------------------------------------------------------------------------
# apply


def check_writable(md: TableMetadata) -> None:
    """``UnsupportedFeatureError`` unless datashard may commit to ``md`` (format version 2
    or 3)."""
    if md.format_version not in WRITE_VERSIONS:
        raise UnsupportedFeatureError(
            f"table {md.location} has format version {md.format_version}: writing format "
            f"version {md.format_version} is not supported; the table can be read (datashard "
            f"writes format versions {' and '.join(map(str, WRITE_VERSIONS))})"
        )


def apply(
    base: TableMetadata,
    updates: Sequence[Update],
    *,
    base_location: str | None,
    now_ms: int,
) -> TableMetadata:
    """The metadata ``updates`` make of ``base`` (pure: no I/O, ``base`` untouched).

    ``base_location`` (the file ``base`` was read from) joins the metadata log; ``now_ms`` is
    the commit time (``last-updated-ms`` and the snapshot-log time of a ref move never go
    backwards). Retention from the resulting properties bounds the metadata log and the
    snapshot list. Raises ``UnsupportedFeatureError`` for a base datashard does not write
    (:func:`check_writable`).
    """
    check_writable(base)
    md = base
    last_updated = max(now_ms, base.last_updated_ms)
    for update in updates:
        md = _apply_one(md, update, last_updated)
    log = list(md.metadata_log)
    if base_location is not None:
        log.append(MetadataLogEntry(metadata_file=base_location, timestamp_ms=base.last_updated_ms))
    md = replace(
        md,
        metadata_log=tuple(log[-whole_number(md.properties, *PREVIOUS_VERSIONS_MAX, 1) :]),
        last_updated_ms=last_updated,
    )
    return expire_snapshots(md, whole_number(md.properties, *MAX_SNAPSHOTS, 1))


def _apply_one(md: TableMetadata, update: Update, now: int) -> TableMetadata:
    if isinstance(update, AddSnapshot):
        snap = update.snapshot
        if md.snapshot_by_id(snap.snapshot_id) is not None:
            raise CommitConflictError(f"snapshot {snap.snapshot_id} is already in the table")
        next_row_id = md.next_row_id
        if md.format_version >= LINEAGE_VERSION:
            if (
                snap.first_row_id is None
                or snap.first_row_id != md.next_row_id
                or snap.added_rows is None
            ):
                raise CommitConflictError(
                    f"snapshot {snap.snapshot_id} has first-row-id {snap.first_row_id} and "
                    f"added-rows {snap.added_rows}; table {md.location} assigns row ids from "
                    f"next-row-id {md.next_row_id}"
                )
            next_row_id = snap.first_row_id + snap.added_rows
        return replace(
            md,
            snapshots=(*md.snapshots, snap),
            last_sequence_number=max(md.last_sequence_number, snap.sequence_number),
            next_row_id=next_row_id,
        )
    if isinstance(update, SetSnapshotRef):
        target = md.snapshot_by_id(update.snapshot_id)
        if target is None:
            raise CommitConflictError(f"ref {update.name!r}: no snapshot {update.snapshot_id}")
        old = md.refs.get(update.name)
        ref = (
            replace(old, snapshot_id=update.snapshot_id, type=update.type)
            if old is not None
            else SnapshotRef(snapshot_id=update.snapshot_id, type=update.type)
        )
        md = replace(md, refs={**md.refs, update.name: ref})
        if update.name != MAIN:
            return md
        return replace(
            md,
            current_snapshot_id=update.snapshot_id,
            snapshot_log=(*md.snapshot_log, SnapshotLogEntry(now, update.snapshot_id)),
        )
    if isinstance(update, RemoveSnapshotRef):
        if update.name == MAIN:
            raise ValidationError(f"the main branch of {md.location} cannot be removed")
        if update.name not in md.refs:
            raise ValidationError(f"table {md.location} has no ref {update.name!r}")
        return replace(md, refs={k: v for k, v in md.refs.items() if k != update.name})
    if isinstance(update, RemoveSnapshots):
        pinned = {ref.snapshot_id for ref in md.refs.values()} & update.snapshot_ids
        if pinned:
            raise CommitConflictError(
                f"snapshot(s) {sorted(pinned)} of {md.location} are named by a ref and cannot "
                "be removed"
            )
        return _without_snapshots(md, update.snapshot_ids)
    if isinstance(update, SetProperties):
        return replace(md, properties={**md.properties, **update.updates})
    if isinstance(update, RemoveProperties):
        gone = set(update.removals)
        return replace(md, properties={k: v for k, v in md.properties.items() if k not in gone})
    if isinstance(update, AddSchema):
        old_ids = frozenset(md.current_schema().field_ids)
        unwritten = unwritten_types_in(update.schema.as_struct(), old_ids)
        if unwritten and md.format_version >= LINEAGE_VERSION:
            raise UnsupportedFeatureError(
                f"column(s) {', '.join(unwritten)}: datashard writes the format version 3 "
                "types timestamp_ns and timestamptz_ns, not these"
            )
        newer = v3_types_in(update.schema.as_struct())
        if newer and md.format_version < LINEAGE_VERSION:
            raise SchemaError(
                f"column(s) {', '.join(newer)} have types of Iceberg format version 3, which a "
                f"format version {md.format_version} table {md.location} cannot hold"
            )
        if any(s.schema_id == update.schema.schema_id for s in md.schemas):
            raise CommitConflictError(
                f"schema {update.schema.schema_id} is already in the table {md.location}"
            )
        return replace(
            md,
            schemas=(*md.schemas, update.schema),
            last_column_id=max(md.last_column_id, update.last_column_id),
        )
    if isinstance(update, SetCurrentSchema):
        md.schema_by_id(update.schema_id)  # SchemaError for an unknown id
        return replace(md, current_schema_id=update.schema_id)
    if isinstance(update, AddPartitionSpec):
        specs = md.partition_specs
        if all(s.spec_id != update.spec.spec_id for s in specs):
            specs = (*specs, update.spec)
        return replace(
            md,
            partition_specs=specs,
            last_partition_id=max(md.last_partition_id, update.last_partition_id),
        )
    if isinstance(update, SetDefaultSpec):
        md.spec(update.spec_id)  # SchemaError for an unknown id
        return replace(md, default_spec_id=update.spec_id)
    if isinstance(update, UpgradeFormatVersion):
        return upgrade_format_version(md, update.format_version)
    raise TypeError(f"unknown update {update!r}")  # pragma: no cover - the union is closed


def upgrade_format_version(md: TableMetadata, version: int) -> TableMetadata:
    """``md`` at format ``version``: the same for its own version, version 3 (with
    ``next-row-id`` 0) for a version 2 table; ``ValidationError`` naming ``format-version``
    for a lower version (Iceberg has no downgrade) or one datashard does not write."""
    if version == md.format_version:
        return md
    if version < md.format_version:
        raise ValidationError(
            f"table property 'format-version': table {md.location} has format version "
            f"{md.format_version}, which cannot be lowered to {version} (Iceberg tables are "
            "upgraded, never downgraded)"
        )
    if version not in WRITE_VERSIONS:
        raise ValidationError(
            f"table property 'format-version' must be one of "
            f"{', '.join(map(str, WRITE_VERSIONS))}, got {version}"
        )
    return replace(md, format_version=version, next_row_id=0)


__all__ = [
    "COMMIT_ID",
    "MAIN",
    "AddPartitionSpec",
    "AddSchema",
    "AddSnapshot",
    "AssertCurrentSchemaId",
    "AssertDefaultSpecId",
    "AssertFormatVersion",
    "AssertLastAssignedFieldId",
    "AssertRefSnapshotId",
    "AssertTableUUID",
    "RemoveSnapshotRef",
    "RemoveSnapshots",
    "Requirement",
    "RemoveProperties",
    "SetCurrentSchema",
    "SetDefaultSpec",
    "SetProperties",
    "SetSnapshotRef",
    "Update",
    "UpgradeFormatVersion",
    "apply",
    "check_writable",
    "expire_snapshots",
    "upgrade_format_version",
    "whole_number",
]
