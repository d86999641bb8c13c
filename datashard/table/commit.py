"""The one retry loop of every commit; the conditional create of ``v<N+1>`` is the commit point.

:func:`commit` validates the requirements (:mod:`datashard.table.updates`) on a base, asks the
caller's ``build`` for the new metadata (a snapshot producer reuses its data files and
manifests and writes only a new manifest list), and creates ``v<N+1>.metadata.json``. A lost
race reloads the newest metadata, re-validates and rebuilds; an unknown outcome is resolved by
reading ``v<N+1>`` and looking for this commit's id. Nothing else in the package retries a
commit or sleeps for one. :func:`commit_updates` runs the loop for a commit without a snapshot
(schema, partition spec, refs, snapshot expiry).

Why retrying is safe when the outcome is unknown: an attempt targets exactly one key,
``v<N+1>``, with ``put_if_absent``, which can succeed at most once. If ``v<N+1>`` holds another
commit, this attempt can never land later (the key is taken), so moving on is safe. If it holds
this commit's id, the commit landed. If it is absent, the request may still be in flight, so the
loop re-sends the SAME bytes to the SAME key: whichever copy lands first wins and the other
fails, and the next read tells which. Only when ``v<N+1>`` cannot be read at all, or is still
absent after the re-sends, does the loop give up with :class:`CommitStateUnknownError`, keeping
every staged file.
"""

from __future__ import annotations

import contextvars
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from enum import Enum

from datashard.errors import (
    CommitConflictError,
    CommitRetriesExhaustedError,
    CommitStateUnknownError,
    CommitTimeoutError,
    ConfigError,
    CorruptMetadataError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    SupersededVersionError,
    TableNotFoundError,
)
from datashard.iceberg.metadata import Snapshot, TableMetadata, now_ms
from datashard.iceberg.metadata_codec import metadata_to_json
from datashard.storage.base import StorageBackend
from datashard.storage.retry import retry_budget
from datashard.table.group import Group, State
from datashard.table.process import exiting
from datashard.table.updates import (
    COMMIT_ID,
    MAX_SNAPSHOTS,
    PREVIOUS_VERSIONS_MAX,
    AlreadyCommittedError,
    AssertTableUUID,
    Requirement,
    SetProperties,
    Update,
    apply,
    whole_number,
)
from datashard.table.versions import (
    STALE_BASE_S,
    STUBS_PER_SWEEP,
    SWEEP_EVERY,
    Loaded,
    TablePaths,
    delete_old_stubs,
    fresh_for,
    load_newest,
    load_version,
    needs_look,
    newest_after_loss,
    retire_superseded,
    sight,
    write_hint,
)

# --------------------------------------------------------------------------------------------
# settings (table properties)


#: The table property bounding a commit's duration, and its default (one day: well inside the
#: 3-day default grace period of orphan cleanup, with room for clocks that disagree).
MAX_DURATION = ("commit.max-duration-ms", 86_400_000)


def duration_limit_ms(props: Mapping[str, str]) -> int:
    """``commit.max-duration-ms`` of a table (``ConfigError`` naming a bad value)."""
    return whole_number(props, *MAX_DURATION, 1)


#: Iceberg's switch for removing metadata files that fell out of the metadata log; datashard
#: retires them (a stub keeps the key taken) and does so by default.
RETIRE_VERSIONS = "write.metadata.delete-after-commit.enabled"


def _flag(props: Mapping[str, str], key: str, *, default: bool) -> bool:
    raw = props.get(key)
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"table property {key}={raw!r}: expected 'true' or 'false'")
    return value == "true"


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
    ``write.metadata.previous-versions-max``      10        metadata-log entries (whole versions)
                                                            kept
    ``history.expire.max-snapshots``              100       snapshots kept in metadata
    ``commit.max-duration-ms``                    1 day     longest a commit may take, from its
                                                            start to its last conditional create
    ``write.metadata.delete-after-commit.enabled``  true    retire versions out of the metadata
                                                            log (overwrite them with stubs)
    ============================================  ========  ======================================

    ``commit.max-duration-ms`` is what makes orphan cleanup safe beside writers:
    :func:`datashard.table.orphans.remove_orphan_files` refuses a grace period shorter than it,
    and a commit that would send its conditional create later than this after it started
    gives up instead (:class:`~datashard.errors.CommitTimeoutError`, staged files deleted).
    """

    num_retries: int = 20
    min_wait_ms: int = 20
    max_wait_ms: int = 500
    min_count_to_merge: int = 50
    merge_enabled: bool = True
    target_manifest_bytes: int = 8 << 20
    previous_versions_max: int = PREVIOUS_VERSIONS_MAX[1]
    max_snapshots: int = MAX_SNAPSHOTS[1]
    max_duration_ms: int = MAX_DURATION[1]
    retire_versions: bool = True

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> CommitSettings:
        """Settings from table properties; ``ConfigError`` names a malformed value."""
        merge = str(props.get("commit.manifest-merge.enabled", "true")).strip().lower()
        return cls(
            num_retries=whole_number(props, "commit.retry.num-retries", cls.num_retries, 0),
            min_wait_ms=whole_number(props, "commit.retry.min-wait-ms", cls.min_wait_ms, 0),
            max_wait_ms=whole_number(props, "commit.retry.max-wait-ms", cls.max_wait_ms, 0),
            min_count_to_merge=whole_number(
                props, "commit.manifest.min-count-to-merge", cls.min_count_to_merge, 2
            ),
            merge_enabled=merge not in ("false", "0", "no", "off"),
            target_manifest_bytes=whole_number(
                props, "commit.manifest.target-size-bytes", cls.target_manifest_bytes, 1
            ),
            previous_versions_max=whole_number(props, *PREVIOUS_VERSIONS_MAX, 1),
            max_snapshots=whole_number(props, *MAX_SNAPSHOTS, 1),
            max_duration_ms=duration_limit_ms(props),
            retire_versions=_flag(props, RETIRE_VERSIONS, default=True),
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (0-based): uniform in
        ``[min-wait, min(max-wait, min-wait * 2**attempt)]``."""
        cap = min(self.max_wait_ms, self.min_wait_ms * (2 ** min(attempt, 30)))
        return random.uniform(self.min_wait_ms, max(self.min_wait_ms, cap)) / 1000.0


# --------------------------------------------------------------------------------------------
# the one retry loop


def new_commit_id() -> str:
    return uuid.uuid4().hex


def carries_commit(md: TableMetadata, commit_id: str) -> bool:
    """Whether some snapshot of ``md`` was made by the commit ``commit_id`` (or, for a commit
    without a snapshot, whether the table property names it)."""
    if md.properties.get(COMMIT_ID) == commit_id:
        return True
    return any(s.summary.get(COMMIT_ID) == commit_id for s in md.snapshots)


#: Builds the metadata of one attempt on a base: returns it and the keys the attempt wrote
#: (deleted if the attempt provably did not land).
Build = Callable[[Loaded, int], tuple[TableMetadata, list[str]]]


@dataclass
class CommitResult:
    loaded: Loaded
    attempts: int
    #: the best-effort version-hint write: done (``True``/``False``) or still running
    hint: bool | Future[bool]
    #: with group commit, the snapshot of another writer that folded this commit in
    folded_into: Snapshot | None = None


class _Outcome(Enum):
    WON = "won"
    LOST = "lost"
    ABSENT = "absent"  # a send's outcome was unknown and v<N+1> is not there (yet)


@dataclass
class _Attempt:
    """One built attempt: the version it targets, its bytes, and how its sends went."""

    target: int
    body: bytes
    metadata: TableMetadata
    keys: list[str]
    sends: int = 0
    uncertain: StorageError | None = None  # set once any send's outcome was unknown


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
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    upkeep: Callable[[Loaded], None] | None = None,
    group: Group | None = None,
) -> CommitResult:
    """Commit what ``build`` makes on ``base``, retrying lost races; the new version on success.

    ``staged_keys`` (data files, manifests) are deleted only if the commit provably did not
    land. Raises ``CommitConflictError`` (a requirement failed), ``CommitRetriesExhaustedError``
    (every attempt lost a race) or ``CommitStateUnknownError`` (the outcome could not be
    learned; nothing is deleted). With ``background``, the version-hint write after the win and
    the removal of lost attempts' manifest lists run there; :attr:`CommitResult.hint` is the
    future of that work. It starts writing once ``after`` (the same work of the writer's
    previous commit, if still running) is done, so one writer's hints land in order.

    ``started`` (a ``clock`` reading taken before the commit wrote its first file) bounds the
    commit: no conditional create is sent later than ``commit.max-duration-ms`` after it (the
    smallest value of every base the loop built on), and the storage retries of a send stop
    there too. Past it the loop raises ``CommitTimeoutError`` (staged files deleted), or
    ``CommitStateUnknownError`` while an earlier send's outcome is still unknown.

    ``upkeep`` runs in ``background`` after a win that made a version divisible by
    :data:`~datashard.table.versions.SWEEP_EVERY` (the automatic removal of unreferenced
    metadata files); it must never raise.

    ``group`` (an append on a table with ``commit.group.enabled``): after the first lost race
    the append publishes a pending record, and every later attempt folds in the open records
    of other appends; the loop ends when a snapshot names this commit, whoever made it
    (:mod:`datashard.table.group`). Lost races then do not count against
    ``commit.retry.num-retries`` until the record's deadline.
    """
    attempt = 0
    limit_ms = settings.max_duration_ms  # read from the base's properties
    dead_keys: list[str] = []  # written by attempts that provably did not land
    resend: _Attempt | None = None  # an attempt whose send's outcome is not known yet

    group_keys: list[str] = []  # the pending record and its manifest, once published
    group_deadline: float | None = None  # ``clock`` reading of the record's deadline

    def give_up(exc: Exception, settled: bool = False) -> Exception:
        """``exc``, with the staged files deleted: the commit did not land. Once a group
        record is published another writer may fold it in until its deadline, so before that
        (``settled``) the files are kept and the error says the commit may have landed."""
        if group_keys and not settled:
            delete_quietly(backend, dead_keys)
            unknown = CommitStateUnknownError(
                f"commit {commit_id} to {backend.uri_for(paths.prefix)} stopped ({exc}) after "
                "publishing a pending append record that other writers may still fold in; its "
                "files are kept: reload the table to see whether it landed"
            )
            unknown.__cause__ = exc
            return unknown
        delete_quietly(backend, [*dead_keys, *staged_keys, *group_keys])
        return exc

    def publish(on: Loaded) -> float | None:
        """Publish the group record on ``on``; the ``clock`` reading of its deadline. Not if
        ``on`` breaks a requirement (an idempotency key that landed): the attempt on it
        raises that, with nothing published."""
        nonlocal group_keys
        assert group is not None
        try:
            for requirement in requirements:
                requirement.validate(on.metadata)
        except CommitConflictError:
            return None
        deadline = clock() + (group.deadline_ms(limit_ms) - now_ms()) / 1000.0
        try:
            group_keys = group.publish(on, limit_ms)
        except StorageError:
            # the record may be there: stay in group mode; its keys are removed with the
            # rest if the commit provably does not land
            group_keys = group.keys()
        return deadline

    if group is not None and group.eager:
        group_deadline = publish(base)

    def follow(on: Loaded, deadline: float) -> Loaded | None:
        """Wait for a version newer than ``on`` (another writer leads this round and folds
        this append in): that version, or ``None`` once the wait is over (this writer then
        builds an attempt itself)."""
        assert group is not None
        began = clock()
        # stop waiting well before the deadline: the attempts after it still need time
        end = min(began + group.patience_s(), deadline - group.patience_s())
        look = 0
        missing = on.observed  # v<N+1> was missing then, so v<N+2> was too
        while clock() < end:
            sleep(group.poll_s(look))
            look += 1
            before = sight()
            try:
                # one request a look: the next version, read whole when it is there (it
                # need not be the newest: the loop looks again from it)
                newer = replace(load_version(backend, paths, on.version + 1), observed=missing)
            except ObjectNotFoundError:
                missing = before
                continue
            except SupersededVersionError:  # far behind: retired meanwhile
                try:
                    newer = load_newest(backend, paths, on) or on
                except (StorageError, CorruptMetadataError, SupersededVersionError):
                    return None
            except (StorageError, CorruptMetadataError):
                return None
            group.saw_versions(clock() - began, newer.version - on.version)
            return newer
        group.suspect()
        return None

    def folded_result(found: Loaded, snap: Snapshot | None) -> CommitResult:
        assert group is not None

        dead = [*dead_keys, *group.cleanup_after_landed(snap)]
        # the hint is the folding writer's to write: it made the version
        hint = _after(backend, paths, found, dead, background, after, hint=False)
        return CommitResult(found, attempt + 1, hint, folded_into=snap)

    def settle(exc: Exception) -> CommitResult:
        """After the record's deadline: nobody folds it any more, so the newest metadata says
        whether it landed. Raises ``exc`` (files deleted) if it did not."""
        assert group is not None
        try:
            newest = load_newest(backend, paths, base) or base
        except (StorageError, CorruptMetadataError) as exc2:
            raise CommitStateUnknownError(
                f"commit {commit_id} published a pending append record and the newest "
                f"metadata could not be read to learn whether it was folded in ({exc2}); its "
                "files are kept: reload the table to see"
            ) from exc2
        state, snap = group.state(newest.metadata)
        if state is State.LANDED:
            return folded_result(newest, snap)
        if state is State.GONE:
            raise _gone(backend, paths, commit_id)
        raise give_up(exc, settled=True)

    # Whenever ``resend`` is None every earlier attempt is provably dead (its v<N+1> holds
    # another commit), so a failure there may delete what was staged.
    while True:
        if resend is not None:
            current = resend
        else:
            if group is not None and group.entered:
                state, snap = group.state(base.metadata)
                if state is State.LANDED:
                    return folded_result(base, snap)
                if state is State.GONE:
                    raise _gone(backend, paths, commit_id)
                if not group.refold(base):
                    if group_deadline is not None and not group.leads(base):
                        newer = follow(base, group_deadline)
                        if newer is not None:
                            base = newer
                            continue
                    group.gather(base)
            if needs_look(base.observed):
                # v<N+1> was seen missing too long ago (a table held for long, or opened by
                # its metadata file), and old stubs are deleted: make sure v<N> is still the
                # newest before building v<N+1> (docs/format.md, "Deleting old stubs")
                try:
                    newest = load_newest(backend, paths, base)
                except (StorageError, CorruptMetadataError, SupersededVersionError) as exc:
                    raise give_up(exc) from exc.__cause__
                if newest is None:
                    raise give_up(
                        TableNotFoundError(
                            f"commit {commit_id}: the table at "
                            f"{backend.uri_for(paths.prefix)} has no metadata any more"
                        )
                    )
                base = newest
            try:
                for requirement in requirements:
                    requirement.validate(base.metadata)
                new_md, attempt_keys = build(base, attempt)
            except ObjectNotFoundError as exc:
                # A file the base names is gone: maintenance (expire_snapshots) deletes files
                # only after committing a newer version, so this base is stale: build on the
                # newest.
                try:
                    newer = load_newest(backend, paths, base) or base
                    limit_ms = min(limit_ms, duration_limit_ms(newer.metadata.properties))
                except (StorageError, ConfigError) as exc2:
                    raise give_up(exc2) from exc2.__cause__
                if newer.version == base.version or attempt >= settings.num_retries:
                    raise give_up(exc) from exc.__cause__
                base = newer
                attempt += 1
                continue
            except AlreadyCommittedError as exc:
                if group is None or not group.entered:
                    raise give_up(exc) from exc.__cause__
                state, snap = group.state(base.metadata)
                if state is State.LANDED:  # folded in by the snapshot that carries the key
                    return folded_result(base, snap)
                if state is State.GONE:
                    raise _gone(backend, paths, commit_id) from exc
                # Another attempt with the key landed after the record's base (the record
                # was published on a base without it): every writer that could fold the
                # record checks the key on a base that holds that snapshot, or loses the race
                # it would fold it in, so the record never lands
                raise give_up(exc, settled=True) from exc.__cause__
            except (CommitConflictError, StorageError) as exc:
                raise give_up(exc) from exc.__cause__
            current = _Attempt(
                base.version + 1, metadata_to_json(new_md), new_md, list(attempt_keys)
            )
        elapsed = None if started is None else clock() - started
        remaining = None if elapsed is None else limit_ms / 1000 - elapsed
        if elapsed is not None and remaining is not None and remaining <= 0:
            late = _late(backend, paths, commit_id, limit_ms, elapsed)
            if resend is None:  # every earlier send provably lost: nothing can land
                dead_keys.extend(current.keys)
                timeout = CommitTimeoutError(f"{late}; nothing was committed")
                if group is not None and group.entered:
                    return settle(timeout)
                raise give_up(timeout)
            raise CommitStateUnknownError(
                f"{late} while the outcome of its send to "
                f"{backend.uri_for(paths.version(current.target))} was unknown (last error: "
                f"{current.uncertain}); it may still land; its files are kept: reload the "
                "table to see"
            ) from current.uncertain
        # no request of this send starts later than STALE_BASE_S after v<N+1> was seen missing
        fresh = fresh_for(base.observed)
        if fresh <= 0:
            if resend is not None:
                raise CommitStateUnknownError(
                    f"commit {commit_id}: the outcome of its send to "
                    f"{backend.uri_for(paths.version(current.target))} is unknown (last "
                    f"error: {current.uncertain}) and its base was seen to be the newest "
                    f"version more than {STALE_BASE_S:.0f} s ago, so it is not sent again; its "
                    "files are kept: reload the table to see"
                ) from current.uncertain
            dead_keys.extend(current.keys)  # built too slowly: build again on a fresh look
            delete_quietly(backend, current.keys)
            continue
        remaining = fresh if remaining is None else min(remaining, fresh)
        folded_by = None if group is None else group.send_deadline(clock)
        if folded_by is not None and clock() >= folded_by:
            # a record this attempt folds in is near its deadline: its writer may soon
            # conclude that it did not land, so this attempt must not be sent
            if resend is not None:
                raise CommitStateUnknownError(
                    f"commit {commit_id}: the outcome of its send to "
                    f"{backend.uri_for(paths.version(current.target))} is unknown (last error: "
                    f"{current.uncertain}) and the appends it folds in are past their deadline,"
                    " so it is not sent again; its files are kept: reload the table to see"
                ) from current.uncertain
            dead_keys.extend(current.keys)
            delete_quietly(backend, current.keys)
            continue
        if folded_by is not None:
            # no request of this send (a storage-layer retry included) starts after the
            # folded records' send deadline
            until = folded_by - clock()
            remaining = until if remaining is None else min(remaining, until)
        if remaining is None:
            outcome, found = _send(backend, paths, current, commit_id)
        else:
            with retry_budget(remaining):
                outcome, found = _send(backend, paths, current, commit_id)
        if outcome is _Outcome.WON:
            assert found is not None  # a win always returns the version it made
            keep = retire_keep(found.metadata)
            sweep = upkeep if found.version % SWEEP_EVERY == 0 and background else None
            if group is not None:
                dead_keys.extend(group.cleanup_after_win())
            return CommitResult(
                found,
                attempt + 1,
                _after(backend, paths, found, dead_keys, background, after, keep, sweep),
            )
        if outcome is _Outcome.ABSENT:
            # not there (yet): an earlier send may still be in flight, so re-send the SAME
            # bytes to the SAME key (at most one of them can ever create it)
            if current.sends > max(3, settings.num_retries):
                key = backend.uri_for(paths.version(current.target))
                raise CommitStateUnknownError(
                    f"could not create {key} after {current.sends} sends (last error: "
                    f"{current.uncertain}); commit {commit_id} may still land; its files are "
                    "kept: reload the table to see"
                ) from current.uncertain
            sleep(settings.backoff(current.sends - 1))
            resend = current
            continue
        resend = None
        dead_keys.extend(current.keys)
        if background is None:
            delete_quietly(backend, current.keys)  # else after the win, in the background
        if attempt >= settings.num_retries:
            exhausted = CommitRetriesExhaustedError(
                f"commit to {paths.prefix} lost the race for a new version {attempt + 1} "
                f"times (commit.retry.num-retries={settings.num_retries}); the table is "
                "unchanged by this commit"
            )
            if group_deadline is None:
                raise give_up(exhausted)
            if clock() >= group_deadline:
                return settle(exhausted)
            # published: other writers may still fold it in, so keep going to the deadline
        # published: others fold it in, so look again soon rather than backing off
        sleep(settings.backoff(0 if group_deadline is not None else attempt))
        attempt += 1
        try:
            was = (base.version, clock())
            base = newest_after_loss(backend, paths, current.target, found)
            limit_ms = min(limit_ms, duration_limit_ms(base.metadata.properties))
        except (StorageError, ConfigError) as exc:
            raise give_up(exc) from exc.__cause__
        if group is not None:
            group.saw_versions(clock() - was[1], base.version - was[0])
            if not group.entered:
                group_deadline = publish(base)


def _gone(backend: StorageBackend, paths: TablePaths, commit_id: str) -> CommitStateUnknownError:
    return CommitStateUnknownError(
        f"commit {commit_id} to {backend.uri_for(paths.prefix)} published a pending append "
        "record, and snapshots made since then have left the metadata (history.expire."
        "max-snapshots or expire_snapshots) before this writer saw its record named: it may "
        "have been folded into one of them; its files are kept: reload the table to see"
    )


def _late(
    backend: StorageBackend, paths: TablePaths, commit_id: str, limit_ms: int, elapsed: float
) -> str:
    return (
        f"commit {commit_id} to {backend.uri_for(paths.prefix)} reached its conditional create "
        f"{elapsed:.3f} s after it started, past {MAX_DURATION[0]}={limit_ms}: orphan cleanup "
        f"may delete the files of a commit older than that, so it does not send it. Raise "
        f"{MAX_DURATION[0]} on the table (and keep the grace period of remove_orphan_files "
        "above it) if commits take this long"
    )


def _send(
    backend: StorageBackend, paths: TablePaths, attempt: _Attempt, commit_id: str
) -> tuple[_Outcome, Loaded | None]:
    """One conditional create of ``v<target>`` (no retry, no sleep).

    ``(WON, it)``: this commit is there. ``(LOST, it or None)``: another commit holds the key
    (read back when a send's outcome was unknown; ``None`` after a clean loss, where nothing
    needs reading here). ``(ABSENT, None)``: a send's outcome is unknown and the key is empty.
    Raises ``CommitStateUnknownError`` when ``v<target>`` cannot be read back.
    """
    key = paths.version(attempt.target)
    attempt.sends += 1
    before = sight()  # v<target+1> cannot exist before v<target> does
    try:
        backend.put_if_absent(key, attempt.body)
        return _Outcome.WON, Loaded(
            attempt.metadata, attempt.target, backend.uri_for(key), observed=before
        )
    except ObjectExistsError:
        if attempt.uncertain is None:
            return _Outcome.LOST, None  # every send was answered: someone else holds the key
        # else maybe an earlier send of ours landed: read it
    except StorageError as exc:  # the request may or may not have landed
        attempt.uncertain = exc
    try:
        found = load_version(backend, paths, attempt.target)
    except ObjectNotFoundError:
        return _Outcome.ABSENT, None
    except SupersededVersionError as exc:
        # v<target> was created and retired since (many commits ago): ours only if the
        # newest metadata still names this commit
        try:
            newest = load_newest(backend, paths)
        except (StorageError, CorruptMetadataError):
            newest = None
        if newest is not None and carries_commit(newest.metadata, commit_id):
            return _Outcome.WON, newest
        raise CommitStateUnknownError(
            f"the outcome of commit {commit_id} is unknown: {backend.uri_for(key)} was "
            "retired before it could be read back, and the newest version does not name the "
            "commit; its files are kept: reload the table to see"
        ) from exc
    except (StorageError, CorruptMetadataError) as exc:
        raise CommitStateUnknownError(
            f"the outcome of commit {commit_id} is unknown: {backend.uri_for(key)} could not "
            f"be read back ({exc}); its files are kept: reload the table to see"
        ) from attempt.uncertain
    if carries_commit(found.metadata, commit_id):
        return _Outcome.WON, found
    return _Outcome.LOST, found


def _after(
    backend: StorageBackend,
    paths: TablePaths,
    won: Loaded,
    dead: list[str],
    background: Executor | None,
    after: Future[bool] | None,
    keep: int | None = None,
    upkeep: Callable[[Loaded], None] | None = None,
    hint: bool = True,
) -> bool | Future[bool]:
    """The work after a win (the hint unless ``hint`` is false, then the files of attempts
    that lost, then retiring the version that fell out of the metadata log when ``keep`` is
    given): in ``background`` when given and running, else here."""
    if background is not None:
        try:
            return background.submit(
                contextvars.copy_context().run,
                _after_win,
                backend,
                paths,
                won,
                list(dead),
                after,
                keep,
                upkeep,
                hint,
            )
        except RuntimeError:  # the pool is shut down (interpreter exit): do it here
            pass
    written = hint and write_hint(backend, paths, won.version)
    delete_quietly(backend, dead)
    retire_quietly(backend, paths, won.version, keep, INLINE_STUBS)
    return written


def retire_keep(md: TableMetadata) -> int | None:
    """How many previous versions stay whole after ``md`` (``None``: retiring is off): the
    table's ``write.metadata.previous-versions-max``, and never fewer than ``md``'s metadata
    log names (another writer, such as PyIceberg, may keep a longer log)."""
    try:
        settings = CommitSettings.from_properties(md.properties)
    except ConfigError:
        return None  # a malformed setting another engine wrote: leave versions alone
    if not settings.retire_versions:
        return None
    return max(settings.previous_versions_max, len(md.metadata_log))


#: Stubs a sweep deletes at most when it runs inside a commit rather than in the background.
INLINE_STUBS = 2 * SWEEP_EVERY


def retire_quietly(
    backend: StorageBackend,
    paths: TablePaths,
    version: int,
    keep: int | None,
    stubs: int = STUBS_PER_SWEEP,
) -> None:
    """Retire what ``v<version>`` superseded and, every :data:`SWEEP_EVERY` versions, delete
    up to ``stubs`` stubs past the horizon (advisory: errors are ignored; a later sweep does
    what is left)."""
    if keep is None:
        return
    sweep = version % SWEEP_EVERY == 0
    try:
        retire_superseded(backend, paths, version, keep, sweep=sweep)
        if sweep:
            delete_old_stubs(backend, paths, version, keep, stubs)
    except StorageError:
        pass


#: Seconds the background work after a win (an advisory hint write, the removal of files of
#: attempts that lost) may retry a failing storage server: a process exits within about this
#: long even when the server went away right after its last commit.
AFTER_WIN_SECONDS = 5.0


def _after_win(
    backend: StorageBackend,
    paths: TablePaths,
    won: Loaded,
    dead: list[str],
    after: Future[bool] | None = None,
    keep: int | None = None,
    upkeep: Callable[[Loaded], None] | None = None,
    hint: bool = True,
) -> bool:
    """Background work after a win: the hint (once ``after`` is done; unless ``hint`` is
    false), then the files of attempts that lost, then retiring superseded versions; skipped
    once the interpreter is exiting (all of it is advisory)."""
    if after is not None:
        after.exception()  # submitted earlier to the same FIFO pool: running or done
    if exiting():
        return False
    with retry_budget(AFTER_WIN_SECONDS):
        written = hint and write_hint(backend, paths, won.version)
        delete_quietly(backend, dead)
        retire_quietly(backend, paths, won.version, keep)
        if upkeep is not None and not exiting():
            upkeep(won)
    return written


def delete_quietly(backend: StorageBackend, keys: Sequence[str]) -> None:
    """Delete ``keys``, ignoring storage errors (an object left behind is an orphan, which
    ``remove_orphan_files`` removes)."""
    if not keys:
        return
    try:
        backend.delete_many(list(keys))
    except StorageError:
        pass  # orphans are harmless; remove_orphan_files removes them


# --------------------------------------------------------------------------------------------
# commits without a snapshot

#: The updates of a metadata-only change, made from the base of each attempt (raise
#: ``CommitConflictError`` or ``ValidationError`` to refuse).
MakeUpdates = Callable[[TableMetadata], Sequence[Update]]


def commit_updates(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    make: MakeUpdates,
    requirements: Sequence[Requirement] = (),
) -> Loaded:
    """Commit the updates ``make`` builds on ``base`` (rebuilt on a newer base after a lost
    race); the new version.

    The commit id is recorded in the table property ``datashard.commit-id`` so that an unknown
    outcome can be resolved by reading what landed. The updates are applied once to ``base``
    first, so bad input fails before any request. Raises what :func:`commit` raises.
    """
    commit_id = new_commit_id()
    # bad input fails here, before any request
    apply(base.metadata, make(base.metadata), base_location=None, now_ms=now_ms())

    def build(loaded: Loaded, attempt: int) -> tuple[TableMetadata, list[str]]:
        updates = [*make(loaded.metadata), SetProperties({COMMIT_ID: commit_id})]
        return apply(loaded.metadata, updates, base_location=loaded.location, now_ms=now_ms()), []

    result = commit(
        backend,
        paths,
        base,
        build,
        [AssertTableUUID(base.metadata.table_uuid), *requirements],
        commit_id,
        CommitSettings.from_properties(base.metadata.properties),
    )
    return result.loaded


__all__ = [
    "Build",
    "CommitResult",
    "CommitSettings",
    "MAX_DURATION",
    "MakeUpdates",
    "carries_commit",
    "commit",
    "commit_updates",
    "delete_quietly",
    "duration_limit_ms",
    "new_commit_id",
    "retire_keep",
    "INLINE_STUBS",
    "retire_quietly",
]
