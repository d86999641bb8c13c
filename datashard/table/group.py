"""Group commit: appends that lost a race are folded into whichever commit wins next.

With the table property ``commit.group.enabled=true``, an append that loses the race for
``v<N+1>`` does not just retry alone. It publishes its staged append (data files and a manifest
already written) as a small *pending record* under ``metadata/pending/``, and from then on
every attempt of an append that is in the same state folds every pending record it can see
into its own snapshot. The writer of a record learns from the newest metadata that its rows
landed (its commit id is named in the ``datashard.folded-commits`` summary of some snapshot)
and returns that snapshot. Uncontended appends never publish, list or read a record: they cost
what the plain protocol costs.

Exactly once, with only the storage contract (the argument in docs/format.md):

* A record is folded only into a version built on a base in which it is *open*: no snapshot
  newer than the record's base names it, and the base still holds every snapshot with a
  sequence number above the record's base sequence number (:func:`state_of`). Versions are
  linear (``put_if_absent``), so the version that folds a record is built on a base that does
  not name it, and every later base names it or has lost a snapshot in the range, after which
  no writer folds it again (snapshots never come back).
* A record is folded only before its deadline (its writer's wall clock: the writer's start
  plus ``commit.group.max-wait-ms``, at most ``commit.max-duration-ms``) less twice the clock
  skew allowance ``commit.group.clock-skew-ms``, checked when the attempt is built and again
  before it is sent. Its writer gives up only after the deadline: then nobody can fold it any
  more, so "not named" means "not landed", and only then are its files deleted.
* If the base has lost a snapshot of the range before the writer saw its record named, the
  writer cannot tell whether it landed: it raises ``CommitStateUnknownError`` and keeps its
  files. Snapshots leave the metadata only by ``history.expire.max-snapshots`` (one snapshot per
  version here) or by ``expire_snapshots``, and a waiting writer looks at the newest metadata
  after every race it loses, so this needs that many versions between two of its looks.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from datashard.errors import (
    ConfigError,
    CorruptMetadataError,
    StorageError,
    ValidationError,
)
from datashard.iceberg.manifest import DataFile
from datashard.iceberg.manifest_codec import read_manifest
from datashard.iceberg.metadata import Snapshot, TableMetadata, now_ms
from datashard.storage.base import StorageBackend
from datashard.table.process import submit
from datashard.table.updates import (
    COMMIT_ID,
    FOLDED_KEYS,
    check_idempotency_key,
    snapshot_with_key,
    whole_number,
)
from datashard.table.versions import Loaded, TablePaths

#: The table property that turns group commit on for appends (default off).
ENABLED = "commit.group.enabled"
#: The longest an append waits for its record to be folded, from its start (milliseconds).
MAX_WAIT = ("commit.group.max-wait-ms", 60_000)
#: The clock difference between writers this protocol allows for (milliseconds).
CLOCK_SKEW = ("commit.group.clock-skew-ms", 2_000)
#: The snapshot summary property naming the commits a snapshot folded in (comma separated).
FOLDED = "datashard.folded-commits"
#: Where pending records live, under the table's metadata directory.
PENDING = "pending"
#: At most this many records are folded into one snapshot.
MAX_FOLD = 256
#: The ``format`` of a record this module writes for an append without an idempotency key.
RECORD_FORMAT = "datashard-pending-append/1"
#: The ``format`` of a record of an append with an idempotency key. A writer that does not know
#: it (an older release, which would fold it without checking the key) leaves it alone.
KEYED_RECORD_FORMAT = "datashard-pending-append/2"
#: The summary counters a record carries and a folding snapshot adds up.
_COUNTERS = ("added-data-files", "added-records", "added-files-size")
#: summary properties a folding snapshot adds the records' counters to, and which counter
_SUMMED = (
    *((c, c) for c in _COUNTERS),
    ("total-data-files", "added-data-files"),
    ("total-records", "added-records"),
    ("total-files-size", "added-files-size"),
)


@dataclass(frozen=True)
class GroupSettings:
    enabled: bool = False
    max_wait_ms: int = MAX_WAIT[1]
    clock_skew_ms: int = CLOCK_SKEW[1]

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> GroupSettings:
        """The settings of a table; ``ConfigError`` names a malformed value."""
        raw = str(props.get(ENABLED, "false")).strip().lower()
        if raw not in ("true", "false"):
            raise ConfigError(f"table property {ENABLED}={raw!r}: expected 'true' or 'false'")
        out = cls(
            enabled=raw == "true",
            max_wait_ms=whole_number(props, *MAX_WAIT, 1),
            clock_skew_ms=whole_number(props, *CLOCK_SKEW, 0),
        )
        if out.max_wait_ms <= 2 * out.clock_skew_ms:
            raise ConfigError(
                f"table property {MAX_WAIT[0]}={out.max_wait_ms} must be more than twice "
                f"{CLOCK_SKEW[0]}={out.clock_skew_ms}: a record is folded in only until its "
                "deadline less twice the clock skew allowance"
            )
        return out


@dataclass(frozen=True)
class PendingRecord:
    """One published append waiting to be folded in."""

    key: str
    commit_id: str
    #: the table's ``last-sequence-number`` when the record was published
    base_sequence_number: int
    #: wall-clock milliseconds (the writer's clock) after which nobody may fold it
    deadline_ms: int
    schema_id: int
    spec_id: int
    #: its data files, as the bytes of a manifest (snapshot ids and sequence numbers
    #: inherited): never written as a manifest of its own, a folding attempt writes them into
    #: its manifest
    manifest: bytes
    counters: Mapping[str, int]
    partitions: tuple[str, ...]
    #: the data files of ``manifest`` (read from it once, when the record is read)
    files: tuple[DataFile, ...] = ()
    #: the append's idempotency key: folded only on a base no snapshot of which carries it
    idempotency_key: str | None = None


def encode_record(record: PendingRecord) -> bytes:
    """The bytes of ``record`` (JSON; the data files as an Avro manifest, in base64)."""
    body: dict[str, object] = {
        "format": RECORD_FORMAT if record.idempotency_key is None else KEYED_RECORD_FORMAT,
        "commit-id": record.commit_id,
        "base-sequence-number": record.base_sequence_number,
        "deadline-ms": record.deadline_ms,
        "schema-id": record.schema_id,
        "spec-id": record.spec_id,
        "counters": dict(record.counters),
        "partitions": list(record.partitions),
        "manifest": base64.b64encode(record.manifest).decode("ascii"),
    }
    if record.idempotency_key is not None:
        body["idempotency-key"] = record.idempotency_key
    return json.dumps(body, sort_keys=True).encode()


def decode_record(data: bytes, key: str) -> PendingRecord:
    """The record in ``data`` read from ``key``; ``CorruptMetadataError`` naming it if bad."""
    try:
        body = json.loads(data)
        keyed = body.get("format") == KEYED_RECORD_FORMAT
        if body.get("format") != RECORD_FORMAT and not keyed:
            raise ValueError(
                f"format {body.get('format')!r}, expected {RECORD_FORMAT!r} or "
                f"{KEYED_RECORD_FORMAT!r}"
            )
        key_of = check_idempotency_key(body["idempotency-key"]) if keyed else None
        manifest = base64.b64decode(body["manifest"], validate=True)
        files = tuple(e.data_file for e in read_manifest(manifest, key))
        return PendingRecord(
            key=key,
            commit_id=str(body["commit-id"]),
            base_sequence_number=int(body["base-sequence-number"]),
            deadline_ms=int(body["deadline-ms"]),
            schema_id=int(body["schema-id"]),
            spec_id=int(body["spec-id"]),
            manifest=manifest,
            counters={k: int(body["counters"][k]) for k in _COUNTERS},
            partitions=tuple(str(p) for p in body["partitions"]),
            files=files,
            idempotency_key=key_of,
        )
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        CorruptMetadataError,
        ValidationError,
    ) as exc:
        raise CorruptMetadataError(f"pending append record {key} is malformed: {exc}") from exc


def folded_commits(snapshot: Snapshot) -> set[str]:
    """The commit ids ``snapshot`` carries: its own and those it folded in."""
    out = {c for c in snapshot.summary.get(FOLDED, "").split(",") if c}
    own = snapshot.summary.get(COMMIT_ID)
    if own:
        out.add(own)
    return out


#: how many of the newest snapshots :func:`contended` looks at
RECENT = 4


def contended(md: TableMetadata) -> bool:
    """Whether one of the newest snapshots of ``md`` folded appends in: the table is under
    contention now, so an append publishes its record before its first attempt (and takes part
    in folding) rather than racing alone. Reads nothing: it looks at the metadata held."""
    snap = md.current_snapshot()
    for _ in range(RECENT):
        if snap is None:
            return False
        if FOLDED in snap.summary:
            return True
        snap = md.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return False


class State(Enum):
    #: some snapshot newer than the record's base names it
    LANDED = "landed"
    #: not named, and the metadata still holds every snapshot since the record's base
    OPEN = "open"
    #: not named, but a snapshot since the record's base is gone: never foldable again, and
    #: whether it landed cannot be told from this metadata
    GONE = "gone"


def state_of(
    md: TableMetadata, commit_id: str, base_sequence_number: int
) -> tuple[State, Snapshot | None]:
    """Where a record stands in ``md`` (and the snapshot that names it, if one does)."""
    seen = set()
    for snap in md.snapshots:
        if snap.sequence_number > base_sequence_number:
            if commit_id in folded_commits(snap):
                return State.LANDED, snap
            seen.add(snap.sequence_number)
    if len(seen) < md.last_sequence_number - base_sequence_number:
        return State.GONE, None
    return State.OPEN, None


@dataclass
class Group:
    """The group-commit side of one append (made by the append, driven by the commit loop).

    :meth:`publish` writes the record (the append's data files, as a manifest whose entries
    inherit their snapshot id) once, after the first lost race or, for an append whose writer
    met contention on its last append, before the first attempt.
    """

    backend: StorageBackend
    paths: TablePaths
    commit_id: str
    settings: GroupSettings
    #: the bytes of a manifest of the append's data files (entries inherit their snapshot id)
    make_manifest: Callable[[], bytes]
    counters: Mapping[str, int]
    partitions: tuple[str, ...]
    schema_id: int
    spec_id: int
    #: the append's idempotency key, if it has one
    idempotency_key: str | None = None
    #: publish before the first attempt (the writer's last append met contention)
    eager: bool = False
    #: wall-clock milliseconds when the append started
    started_ms: int = field(default_factory=now_ms)
    #: the manifest the append's own attempts name, once one was built (written with its
    #: manifest list; deleted when another writer folds this append in)
    own_manifest: str | None = None
    record: PendingRecord | None = None
    #: the key :meth:`publish` writes (the record), once it has
    written: list[str] = field(default_factory=list)
    #: the records the current attempt folds in
    chosen: list[PendingRecord] = field(default_factory=list)
    #: records read so far, by key (a record never changes): the writer's, shared by its
    #: appends
    _cache: dict[str, PendingRecord | None] = field(default_factory=dict)
    #: the snapshot that carries this append, once another writer folded it in
    landed: Snapshot | None = None
    #: the keys of the listing :meth:`gather` uses next (``None``: list again)
    _listed: list[str] | None = None
    #: the keys of the last listing of pending records (``None``: none yet)
    _known: list[str] | None = None
    #: the record whose writer leads this round (when this writer does not)
    leader: str | None = None
    #: records whose writers led a round in which no version came (the writer's, shared by
    #: its appends; a key is dropped once it is no longer listed)
    _suspects: set[str] = field(default_factory=set)
    #: seconds between two versions as this writer saw them (a running average)
    round_s: float = 0.1

    @property
    def entered(self) -> bool:
        return self.record is not None

    def deadline_ms(self, limit_ms: int) -> int:
        return self.started_ms + min(self.settings.max_wait_ms, limit_ms)

    def publish(self, base: Loaded, limit_ms: int) -> list[str]:
        """Write the record for ``base``; the keys written. A failed write still counts as
        published (the record may be there)."""
        record = PendingRecord(
            # named by when it was published: a listing gives the oldest first, and every
            # writer that lists sees the same oldest record (the round's leader)
            key=f"{self.paths.metadata_dir}/{PENDING}/{now_ms():013d}-{self.commit_id}.json",
            commit_id=self.commit_id,
            base_sequence_number=base.metadata.last_sequence_number,
            deadline_ms=self.deadline_ms(limit_ms),
            schema_id=self.schema_id,
            spec_id=self.spec_id,
            manifest=self.make_manifest(),
            counters=dict(self.counters),
            partitions=self.partitions,
            idempotency_key=self.idempotency_key,
        )
        self.record = record
        self.written = [record.key]
        self.backend.write(record.key, encode_record(record))
        return self.keys()

    def keys(self) -> list[str]:
        """The keys :meth:`publish` writes."""
        return list(self.written)

    def state(self, md: TableMetadata) -> tuple[State, Snapshot | None]:
        assert self.record is not None
        return state_of(md, self.commit_id, self.record.base_sequence_number)

    def foldable(self, record: PendingRecord, md: TableMetadata, now: int) -> bool:
        """Whether an attempt built now on ``md`` may fold ``record`` in."""
        if record.commit_id == self.commit_id:
            return False
        if record.schema_id != md.current_schema_id or record.spec_id != md.default_spec_id:
            return False
        if now >= record.deadline_ms - 2 * self.settings.clock_skew_ms:
            return False
        state, _ = state_of(md, record.commit_id, record.base_sequence_number)
        if state is not State.OPEN:
            return False
        # a keyed append lands once: not if its key is this append's own, or landed already
        # (every snapshot since the record's base is retained: OPEN)
        key = record.idempotency_key
        return key is None or (key != self.idempotency_key and snapshot_with_key(md, key) is None)

    def _list(self) -> list[str] | None:
        """The keys of the pending records (sorted), or ``None`` if the listing failed."""
        prefix = f"{self.paths.metadata_dir}/{PENDING}/"
        try:
            keys = [m.key for m in self.backend.list(prefix) if m.key.endswith(".json")]
        except StorageError:
            return None
        return sorted(keys)

    def leads(self, base: Loaded) -> bool:
        """Whether this writer builds the next attempt on ``base`` itself: it does unless the
        oldest record that may still be folded is another writer's (that writer builds the one
        attempt of this round, folding this one in; the others wait). Decided from the listed
        keys and the records already read, reading none: the election only spends work, and
        a record its writer cannot act on any more costs a follower one wait, after which it
        passes that writer over (:meth:`suspect`). Lists only when its last listing does not
        hold its own record: the records published since are newer than its own, so they do
        not change who leads before it; a writer that leads lists again to gather."""
        known = self._known
        fresh = known is None or not set(self.written) <= set(known)
        keys = self._list() if fresh else known
        self._listed = keys if fresh else None  # gather lists again unless this one is new
        if keys is None:
            return True
        self._known = keys
        now = now_ms()
        # past this, a record is past its deadline whatever its writer's duration limit (the
        # deadline is at most its start plus max-wait-ms, and it started before publishing)
        expired = now - self.settings.max_wait_ms + 2 * self.settings.clock_skew_ms
        named = _named(base.metadata)
        listed = set(keys)
        for key in [k for k in self._suspects if k not in listed]:
            self._suspects.discard(key)
        self.leader = None
        for key in keys:
            commit_id = _commit_id(key)
            if commit_id == self.commit_id:
                return True
            if commit_id in named or key in self._suspects:
                continue  # landed (its writer removes it), or its writer kept us waiting
            if _published_ms(key) <= expired:
                continue
            record = self._cache.get(key)
            if key in self._cache and (
                record is None or not self.foldable(record, base.metadata, now)
            ):
                continue  # read before (by a round this writer led): not foldable here
            self.leader = key
            return False
        return True

    def suspect(self) -> None:
        """The round's leader made no version while this writer waited: it may be dead or
        slow, so this writer's later rounds pass it over while its record is listed."""
        if self.leader is not None:
            self._suspects.add(self.leader)

    def refold(self, base: Loaded) -> bool:
        """After a lost race: whether the next attempt on ``base`` folds the same records as
        the last one, at once, with no listing or read (it does when every one of them is
        still foldable there: the race went to a version that folded none of them, and a
        quick retry is what wins the next one). New records wait for the round after."""
        if not self.chosen:
            return False
        now = now_ms()
        if all(self.foldable(r, base.metadata, now) for r in self.chosen):
            return True
        self.chosen = []
        return False

    def gather(self, base: Loaded) -> None:
        """Choose the records the next attempt on ``base`` folds in (listing, unless
        :meth:`leads` just did, and reading the ones not read before). A failed listing or
        read folds fewer, never wrong ones."""
        self.chosen = []
        keys = self._listed if self._listed is not None else self._list()
        self._listed = None
        if keys is None:
            return
        self._known = keys
        for gone in [k for k in self._cache if k not in keys]:
            del self._cache[gone]  # removed from the store: never listed again
        named = _named(base.metadata)
        keys = [k for k in keys if _commit_id(k) not in named]  # landed: not read
        new = [k for k in keys if k not in self._cache]
        for key, future in [(k, submit(self._read, k)) for k in new]:
            self._cache[key] = future.result()
        now = now_ms()
        found = [self._cache[k] for k in keys]
        self.chosen = _one_per_key(
            [r for r in found if r is not None and self.foldable(r, base.metadata, now)]
        )[:MAX_FOLD]
        self.chosen.sort(key=lambda r: r.commit_id)

    def saw_versions(self, seconds: float, versions: int) -> None:
        """Record that the table advanced ``versions`` versions in ``seconds``."""
        if versions > 0:
            self.round_s = 0.7 * self.round_s + 0.3 * (seconds / versions)

    def patience_s(self) -> float:
        """How long a writer that does not lead waits for the round's version before it
        builds an attempt itself (the leader may have died or be slow)."""
        return min(10.0, max(0.5, 6 * self.round_s))

    def poll_s(self, look: int) -> float:
        """How long a waiting writer sleeps before its ``look``-th look (0-based) for a newer
        version: half the usual interval between versions first, then a quarter (each look is
        a request every waiting writer makes)."""
        return min(0.5, max(0.01, self.round_s / (2 if look == 0 else 4)))

    def _read(self, key: str) -> PendingRecord | None:
        try:
            return decode_record(self.backend.read(key), key)
        except (StorageError, CorruptMetadataError):
            return None  # gone (folded and removed), unreadable or foreign: not folded

    def send_deadline(self, clock: Callable[[], float] = time.monotonic) -> float | None:
        """The ``clock`` reading after which the current attempt must not be sent (its
        folded records' deadlines less the skew allowance), or ``None``."""
        if not self.chosen:
            return None
        soonest = min(r.deadline_ms for r in self.chosen) - 2 * self.settings.clock_skew_ms
        return clock() + (soonest - now_ms()) / 1000.0

    def folded_files(self) -> list[DataFile]:
        """The data files of the chosen records (an attempt writes them into one manifest)."""
        return [f for r in self.chosen for f in r.files]

    def add_to_summary(self, summary: dict[str, str]) -> None:
        """Count the chosen records into a snapshot summary and name them in it."""
        if not self.chosen:
            return
        for key, counter in _SUMMED:
            if key in summary:
                extra = sum(r.counters.get(counter, 0) for r in self.chosen)
                summary[key] = str(int(summary[key]) + extra)
        partitions = set().union(*(r.partitions for r in self.chosen))
        summary["changed-partition-count"] = str(
            int(summary.get("changed-partition-count", "0")) + len(partitions)
        )
        summary[FOLDED] = ",".join(r.commit_id for r in self.chosen)
        keys = [r.idempotency_key for r in self.chosen if r.idempotency_key is not None]
        if keys:
            summary[FOLDED_KEYS] = json.dumps(keys, ensure_ascii=False)

    def cleanup_after_win(self) -> list[str]:
        """Keys to remove once an attempt of this append won: its own record and the records
        it folded in (named by the winning snapshot, so never folded again; their writers
        learn from the metadata, not from the records). Deleted with the lost attempts' files,
        in one request: each folded writer would otherwise delete its own. A record left
        behind by a writer that died is an orphan to the upkeep and ``remove_orphan_files``."""
        return [*self.written, *(r.key for r in self.chosen)]

    def cleanup_after_landed(self, snapshot: Snapshot | None) -> list[str]:
        """Keys to remove once ``snapshot`` carries this append: when it is another writer's,
        the manifest of this append's own attempts if one was written (the folding snapshot
        lists its files in a manifest of its own; the folding writer removes the record);
        when it is this append's own (a send whose answer was lost), what a win removes."""
        if snapshot is not None and snapshot.summary.get(COMMIT_ID) == self.commit_id:
            return self.cleanup_after_win()
        return [] if self.own_manifest is None else [_key(self.backend, self.own_manifest)]


def _one_per_key(records: list[PendingRecord]) -> list[PendingRecord]:
    """``records`` less every record whose idempotency key an earlier one carries (two
    attempts of one task, both published: one of them lands)."""
    seen: set[str] = set()
    out = []
    for record in records:
        key = record.idempotency_key
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(record)
    return out


def _published_ms(key: str) -> int:
    """When a record was published, by its writer's clock (the start of its key's name);
    0 for a key not in that form (treated as long past)."""
    stamp = key.rsplit("/", 1)[-1].partition("-")[0]
    return int(stamp) if stamp.isdigit() else 0


def _commit_id(key: str) -> str:
    """The commit id a record's key names (``.../pending/<published-ms>-<commit-id>.json``)."""
    return key.rsplit("/", 1)[-1].removesuffix(".json").rpartition("-")[2]


def _named(md: TableMetadata) -> set[str]:
    """The commit ids the snapshots of ``md`` carry."""
    return {c for snap in md.snapshots for c in folded_commits(snap)}


def _key(backend: StorageBackend, uri: str) -> str:
    try:
        return backend.key_for(uri)
    except ValueError:  # pragma: no cover - our own manifests are under the backend's root
        return uri
