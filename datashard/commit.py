"""A commit is data, applied by a pure function; one loop owns retries.

- Requirements (:class:`AssertTableUUID`, :class:`AssertRefSnapshotId`,
  :class:`AssertCurrentSchemaId`) are checked with ``validate(base)`` against the metadata a
  commit builds on; a failed one raises :class:`CommitConflictError` (retrying cannot help).
- Updates (:class:`AddSnapshot`, :class:`SetSnapshotRef`, :class:`SetProperties`) are data;
  :func:`apply` turns a base metadata and updates into the new metadata, purely. It also bounds
  what every commit rewrites: the metadata log keeps ``write.metadata.previous-versions-max``
  entries and the snapshot list keeps ``history.expire.max-snapshots`` snapshots (dropping
  snapshot entries only; files are never deleted here).
- :func:`commit` is the one retry loop. The conditional create of ``v<N+1>.metadata.json`` is
  the commit point. A lost race reloads the newest metadata, re-validates and rebuilds (the
  caller's ``build`` reuses data files and manifests and writes only a new manifest list). An
  unknown outcome is resolved by reading ``v<N+1>`` and looking for this commit's id.

Why retrying is safe when the outcome is unknown: an attempt targets exactly one key,
``v<N+1>``, with ``put_if_absent``, which can succeed at most once. If ``v<N+1>`` holds another
commit, this attempt can never land later (the key is taken), so moving on is safe. If it holds
this commit's id, the commit landed. If it is absent, the request may still be in flight, so the
loop re-sends the SAME bytes to the SAME key: whichever copy lands first wins and the other
fails, and the next read tells which. Only when ``v<N+1>`` cannot be read at all does the loop
give up with :class:`CommitStateUnknownError`, keeping every staged file.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from datashard._threads import submit
from datashard.errors import (
    CommitConflictError,
    CommitRetriesExhaustedError,
    CommitStateUnknownError,
    ConfigError,
    CorruptMetadataError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
)
from datashard.layout import (
    _MAX_PROBE,
    TablePaths,
    newest_listed_version,
    newest_version,
    read_hint,
    write_hint,
)
from datashard.metadata import (
    MetadataLogEntry,
    Snapshot,
    SnapshotLogEntry,
    SnapshotRef,
    TableMetadata,
)
from datashard.metadata_codec import metadata_from_json, metadata_to_json
from datashard.storage.base import StorageBackend

#: The snapshot summary key carrying the unique id of the commit that made it.
COMMIT_ID = "datashard.commit-id"
MAIN = "main"


# --------------------------------------------------------------------------------------------
# settings (table properties)


@dataclass(frozen=True)
class CommitSettings:
    """Retry and retention settings, read from table properties.

    ============================================  ========  ======================================
    property                                      default   meaning
    ============================================  ========  ======================================
    ``commit.retry.num-retries``                  20        retries after a lost race
    ``commit.retry.min-wait-ms``                  20        shortest backoff
    ``commit.retry.max-wait-ms``                  500       backoff cap
    ``commit.manifest.min-count-to-merge``        50        merge small manifests beyond this
    ``commit.manifest-merge.enabled``             true      merge at all
    ``commit.manifest.target-size-bytes``         8 MiB     a manifest this big is not merged
    ``write.metadata.previous-versions-max``      100       metadata-log entries kept
    ``history.expire.max-snapshots``              100       snapshots kept in metadata
    ============================================  ========  ======================================
    """

    num_retries: int = 20
    min_wait_ms: int = 20
    max_wait_ms: int = 500
    min_count_to_merge: int = 50
    merge_enabled: bool = True
    target_manifest_bytes: int = 8 << 20
    previous_versions_max: int = 100
    max_snapshots: int = 100

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> CommitSettings:
        """Settings from table properties; ``ConfigError`` names a malformed value."""

        def num(key: str, default: int, minimum: int) -> int:
            raw = props.get(key)
            if raw is None:
                return default
            try:
                value = int(raw)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"table property {key} must be a whole number, got {raw!r}"
                ) from None
            if value < minimum:
                raise ConfigError(f"table property {key} must be >= {minimum}, got {value}")
            return value

        merge = str(props.get("commit.manifest-merge.enabled", "true")).strip().lower()
        return cls(
            num_retries=num("commit.retry.num-retries", cls.num_retries, 0),
            min_wait_ms=num("commit.retry.min-wait-ms", cls.min_wait_ms, 0),
            max_wait_ms=num("commit.retry.max-wait-ms", cls.max_wait_ms, 0),
            min_count_to_merge=num("commit.manifest.min-count-to-merge", cls.min_count_to_merge, 2),
            merge_enabled=merge not in ("false", "0", "no", "off"),
            target_manifest_bytes=num(
                "commit.manifest.target-size-bytes", cls.target_manifest_bytes, 1
            ),
            previous_versions_max=num(
                "write.metadata.previous-versions-max", cls.previous_versions_max, 1
            ),
            max_snapshots=num("history.expire.max-snapshots", cls.max_snapshots, 1),
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (0-based): uniform in
        ``[min-wait, min(max-wait, min-wait * 2**attempt)]``."""
        cap = min(self.max_wait_ms, self.min_wait_ms * (2 ** min(attempt, 30)))
        return random.uniform(self.min_wait_ms, max(self.min_wait_ms, cap)) / 1000.0


# --------------------------------------------------------------------------------------------
# requirements


class Requirement(Protocol):
    def validate(self, base: TableMetadata) -> None:
        """Raise ``CommitConflictError`` if ``base`` breaks this requirement."""


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
    """The branch still points where it did when this commit read it (overwrite, delete)."""

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


# --------------------------------------------------------------------------------------------
# updates


@dataclass(frozen=True)
class AddSnapshot:
    snapshot: Snapshot


@dataclass(frozen=True)
class SetSnapshotRef:
    name: str
    snapshot_id: int
    type: Literal["branch", "tag"] = "branch"


@dataclass(frozen=True)
class SetProperties:
    updates: Mapping[str, str] = field(default_factory=dict)


Update = AddSnapshot | SetSnapshotRef | SetProperties


def apply(
    base: TableMetadata,
    updates: Sequence[Update],
    *,
    base_location: str | None,
    now_ms: int,
) -> TableMetadata:
    """The metadata ``updates`` make of ``base`` (pure: no I/O, ``base`` untouched).

    ``base_location`` (the file ``base`` was read from) joins the metadata log. Retention from
    ``base``'s properties bounds the metadata log and the snapshot list.
    """
    md = base
    last_updated = max(now_ms, base.last_updated_ms)
    for update in updates:
        if isinstance(update, AddSnapshot):
            snap = update.snapshot
            if md.snapshot_by_id(snap.snapshot_id) is not None:
                raise CommitConflictError(f"snapshot {snap.snapshot_id} is already in the table")
            md = replace(
                md,
                snapshots=(*md.snapshots, snap),
                last_sequence_number=max(md.last_sequence_number, snap.sequence_number),
            )
        elif isinstance(update, SetSnapshotRef):
            target = md.snapshot_by_id(update.snapshot_id)
            if target is None:
                raise CommitConflictError(f"ref {update.name!r}: no snapshot {update.snapshot_id}")
            refs = dict(md.refs)
            refs[update.name] = SnapshotRef(snapshot_id=update.snapshot_id, type=update.type)
            md = replace(md, refs=refs)
            if update.name == MAIN:
                md = replace(
                    md,
                    current_snapshot_id=update.snapshot_id,
                    snapshot_log=(
                        *md.snapshot_log,
                        SnapshotLogEntry(
                            snapshot_id=target.snapshot_id, timestamp_ms=target.timestamp_ms
                        ),
                    ),
                )
        elif isinstance(update, SetProperties):
            md = replace(md, properties={**md.properties, **update.updates})
        else:  # pragma: no cover - the Update union is closed
            raise TypeError(f"unknown update {update!r}")
    settings = CommitSettings.from_properties(md.properties)
    log = list(md.metadata_log)
    if base_location is not None:
        log.append(MetadataLogEntry(metadata_file=base_location, timestamp_ms=base.last_updated_ms))
    md = replace(
        md,
        metadata_log=tuple(log[-settings.previous_versions_max :]),
        last_updated_ms=last_updated,
    )
    return expire_snapshots(md, settings.max_snapshots)


def expire_snapshots(md: TableMetadata, keep: int) -> TableMetadata:
    """``md`` with only the newest ``keep`` snapshots (and every snapshot a ref names).

    Drops snapshot entries and their snapshot-log entries only; no file is touched.
    """
    if len(md.snapshots) <= keep:
        return md
    pinned = {ref.snapshot_id for ref in md.refs.values()}
    ordered = sorted(md.snapshots, key=lambda s: (s.sequence_number, s.timestamp_ms))
    newest = {s.snapshot_id for s in ordered[-keep:]}
    kept = tuple(s for s in md.snapshots if s.snapshot_id in newest or s.snapshot_id in pinned)
    kept_ids = {s.snapshot_id for s in kept}
    return replace(
        md,
        snapshots=kept,
        snapshot_log=tuple(e for e in md.snapshot_log if e.snapshot_id in kept_ids),
    )


# --------------------------------------------------------------------------------------------
# the one retry loop


@dataclass(frozen=True)
class Loaded:
    """A metadata version as read: the metadata, its version N and its location."""

    metadata: TableMetadata
    version: int
    location: str


def new_commit_id() -> str:
    return uuid.uuid4().hex


def carries_commit(md: TableMetadata, commit_id: str) -> bool:
    """Whether some snapshot of ``md`` was made by the commit ``commit_id`` (or, for a commit
    without a snapshot, see :mod:`datashard.table_updates`, whether its properties name it)."""
    if md.properties.get(COMMIT_ID) == commit_id:
        return True
    return any(s.summary.get(COMMIT_ID) == commit_id for s in md.snapshots)


def load_version(backend: StorageBackend, paths: TablePaths, version: int) -> Loaded:
    """Read and parse ``v<version>``; ``ObjectNotFoundError`` if missing,
    ``CorruptMetadataError`` naming the file if it does not parse."""
    key = paths.version(version)
    data = backend.read(key)
    location = backend.uri_for(key)
    return Loaded(metadata_from_json(data, location), version, location)


def load_newest(
    backend: StorageBackend, paths: TablePaths, known: Loaded | None = None
) -> Loaded | None:
    """The newest version (from ``known`` or the hint, probing forward), or ``None`` if the
    table has no version. A hint naming a missing version falls back to a listing.

    From the hint, the version it names is read while the next one is probed: a hint that is
    current (the usual case) costs two round trips, not three.
    """
    early: Future[Loaded] | None = None
    start = known.version if known is not None else read_hint(backend, paths)
    if known is None and start is not None:
        early = submit(load_version, backend, paths, start)
    n = newest_version(backend, paths, start) if start is not None else None
    if n is None:
        n = newest_listed_version(backend, paths)
    if n is None:
        return None
    if known is not None and n == known.version:
        return known
    try:
        if early is not None and n == start:
            return early.result()
        return load_version(backend, paths, n)
    except ObjectNotFoundError:
        listed = newest_listed_version(backend, paths)
        if listed is None:
            return None
        return load_version(backend, paths, listed)


#: Builds the metadata of one attempt on a base: returns it and the keys the attempt wrote
#: (deleted if the attempt provably did not land).
Build = Callable[[Loaded, int], tuple[TableMetadata, list[str]]]


@dataclass
class CommitResult:
    loaded: Loaded
    attempts: int
    #: the best-effort version-hint write: done (``True``/``False``) or still running
    hint: bool | Future[bool]


def commit(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    build: Build,
    requirements: Sequence[Requirement],
    commit_id: str,
    settings: CommitSettings,
    staged_keys: Sequence[str] = (),
    sleep: Callable[[float], None] = time.sleep,
    background: Executor | None = None,
    after: Future[bool] | None = None,
) -> CommitResult:
    """Commit what ``build`` makes on ``base``, retrying lost races; the new version on success.

    ``staged_keys`` (data files, manifests) are deleted only if the commit provably did not
    land. Raises ``CommitConflictError`` (a requirement failed), ``CommitRetriesExhaustedError``
    (every attempt lost a race) or ``CommitStateUnknownError`` (the outcome could not be
    learned; nothing is deleted). With ``background``, the version-hint write after the win and
    the removal of lost attempts' manifest lists run there; :attr:`CommitResult.hint` is the
    future of that work. It starts writing once ``after`` (the same work of the writer's
    previous commit, if still running) is done, so one writer's hints land in order.
    """
    attempt = 0
    dead_keys: list[str] = []  # written by attempts that provably did not land

    def give_up(exc: Exception) -> Exception:
        _delete_quietly(backend, [*dead_keys, *staged_keys])
        return exc

    # Outside _create_version every earlier attempt is provably dead (its v<N+1> holds another
    # commit), so a failure here may delete what was staged.
    while True:
        try:
            for requirement in requirements:
                requirement.validate(base.metadata)
            new_md, attempt_keys = build(base, attempt)
        except ObjectNotFoundError as exc:
            # A file the base names is gone: maintenance (expire_snapshots) deletes files only
            # after committing a newer version, so this base is stale: build on the newest.
            try:
                newer = _refresh_from(backend, paths, base)
            except StorageError as exc2:
                raise give_up(exc2) from exc2.__cause__
            if newer.version == base.version or attempt >= settings.num_retries:
                raise give_up(exc) from exc.__cause__
            base = newer
            attempt += 1
            continue
        except (CommitConflictError, StorageError) as exc:
            raise give_up(exc) from exc.__cause__
        body = metadata_to_json(new_md)
        target = base.version + 1
        landed, found = _create_version(backend, paths, target, body, new_md, commit_id, settings)
        if landed:
            assert found is not None  # a win always returns the version it made
            hint: bool | Future[bool]
            hint = False
            if background is not None:
                try:
                    hint = background.submit(
                        _after_win, backend, paths, target, list(dead_keys), after
                    )
                except RuntimeError:  # the pool is shut down (interpreter exit): do it here
                    background = None
            if background is None:
                hint = write_hint(backend, paths, target)
            return CommitResult(found, attempt + 1, hint)
        dead_keys.extend(attempt_keys)
        if background is None:
            _delete_quietly(backend, attempt_keys)  # else after the win, in the background
        if attempt >= settings.num_retries:
            raise give_up(
                CommitRetriesExhaustedError(
                    f"commit to {paths.prefix} lost the race for a new version {attempt + 1} "
                    f"times (commit.retry.num-retries={settings.num_retries}); the table is "
                    "unchanged by this commit"
                )
            )
        sleep(settings.backoff(attempt))
        attempt += 1
        try:
            base = _newest_after_loss(backend, paths, target, found)
        except StorageError as exc:
            raise give_up(exc) from exc.__cause__


def _create_version(
    backend: StorageBackend,
    paths: TablePaths,
    target: int,
    body: bytes,
    new_md: TableMetadata,
    commit_id: str,
    settings: CommitSettings,
) -> tuple[bool, Loaded | None]:
    """Try to create ``v<target>``: ``(True, it)`` if this commit landed there, else
    ``(False, it)`` with the version another writer made, read back when a send's outcome was
    unknown, or ``(False, None)`` after a clean loss (the key was taken: not by us, nothing to
    read here; the caller reads the newest version next).

    Raises ``CommitStateUnknownError`` when a send's outcome is unknown and ``v<target>``
    cannot be read.
    """
    key = paths.version(target)
    sends = 0
    uncertain: StorageError | None = None  # set once any send's outcome was unknown
    while True:
        sends += 1
        try:
            backend.put_if_absent(key, body)
            return True, Loaded(new_md, target, backend.uri_for(key))
        except ObjectExistsError:
            if uncertain is None:
                return False, None  # every send was answered: someone else holds the key
            # else maybe an earlier send of ours landed: read it
        except StorageError as exc:  # the request may or may not have landed
            uncertain = exc
        try:
            found = load_version(backend, paths, target)
        except ObjectNotFoundError:
            # not there (yet): an earlier send may still be in flight, so re-send the SAME
            # bytes to the SAME key (at most one of them can ever create it)
            if sends > max(3, settings.num_retries):
                raise CommitStateUnknownError(
                    f"could not create {backend.uri_for(key)} after {sends} sends "
                    f"(last error: {uncertain}); commit {commit_id} may still land; its files "
                    "are kept: reload the table to see"
                ) from uncertain
            time.sleep(settings.backoff(sends - 1))
            continue
        except (StorageError, CorruptMetadataError) as exc:
            raise CommitStateUnknownError(
                f"the outcome of commit {commit_id} is unknown: {backend.uri_for(key)} could not "
                f"be read back ({exc}); its files are kept: reload the table to see"
            ) from uncertain
        return carries_commit(found.metadata, commit_id), found


def _newest_after_loss(
    backend: StorageBackend, paths: TablePaths, taken: int, found: Loaded | None
) -> Loaded:
    """The newest version after losing the race for ``v<taken>`` (``found``: it, if read).

    Reads ``v<taken+1>``, ``v<taken+2>`` ... until one is missing: a hit costs one GET that
    brings the body along, where a ``head`` probe needs a GET after it; only the last body is
    parsed. After two hits the hint is consulted and, if it is ahead, probing jumps there (a
    hint naming a missing version is ignored). A run longer than that is left to
    :func:`load_newest`, which lists.
    """
    have, data = taken, b""  # the newest version read and its bytes (none read yet)
    probe, jumped = taken + 1, False
    for step in range(1, _MAX_PROBE + 1):
        try:
            body = backend.read(paths.version(probe))
        except ObjectNotFoundError:
            if not jumped or probe == have + 1:
                break
            probe = have + 1  # the hint named a missing version: go on one by one
            continue
        have, data, probe = probe, body, probe + 1
        if step == 2 and not jumped:
            hint = read_hint(backend, paths)
            if hint is not None and hint > probe:
                probe, jumped = hint, True
    else:
        return load_newest(backend, paths, found) or load_version(backend, paths, taken)
    if have == taken:
        return found if found is not None else load_version(backend, paths, taken)
    location = backend.uri_for(paths.version(have))
    return Loaded(metadata_from_json(data, location), have, location)


def _refresh_from(backend: StorageBackend, paths: TablePaths, known: Loaded) -> Loaded:
    """The newest version at or after ``known``."""
    return load_newest(backend, paths, known) or known


def _after_win(
    backend: StorageBackend,
    paths: TablePaths,
    version: int,
    dead: list[str],
    after: Future[bool] | None = None,
) -> bool:
    """Background work after a win: the hint (once ``after`` is done), then the files of
    attempts that lost."""
    if after is not None:
        after.exception()  # submitted earlier to the same FIFO pool: running or done
    written = write_hint(backend, paths, version)
    _delete_quietly(backend, dead)
    return written


def _delete_quietly(backend: StorageBackend, keys: Sequence[str]) -> None:
    if not keys:
        return
    try:
        backend.delete_many(list(keys))
    except StorageError:
        pass  # orphans are harmless; maintenance (issue 7) removes them


__all__ = [
    "COMMIT_ID",
    "AddSnapshot",
    "AssertCurrentSchemaId",
    "AssertRefSnapshotId",
    "AssertTableUUID",
    "CommitResult",
    "CommitSettings",
    "Loaded",
    "Requirement",
    "SetProperties",
    "SetSnapshotRef",
    "Update",
    "apply",
    "carries_commit",
    "commit",
    "expire_snapshots",
    "load_newest",
    "load_version",
    "new_commit_id",
]
