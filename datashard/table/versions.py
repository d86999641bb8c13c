"""A table's versions on its backend: its keys, the hint, and finding and loading the newest.

A table at ``<prefix>`` keeps ``<prefix>/metadata/v<N>.metadata.json`` (N = 1, 2, 3 ...), created
with ``put_if_absent``: the create of ``v<N+1>`` IS the commit. ``version-hint.text`` holds an N
written best-effort after each commit; it is advisory only. To find the newest version a reader
starts from a version it holds (or the hint) and probes forward until a version is missing
(:func:`probe_forward`, the one probe loop); with nothing to start from, or a run longer than
:data:`MAX_PROBE`, it lists ``metadata/``.

Tables written by other Iceberg writers name their metadata ``<NNNNN>-<uuid>.metadata.json``;
:func:`newest_foreign_metadata` finds the highest of those so they can be read.

Superseded versions are retired (:func:`retire_superseded`): a version that fell out of the
newest version's metadata log is overwritten with a stub of about 150 bytes. Its key stays
taken, so a writer holding an old base still loses the race for it and moves to the newest
version, as it would against the whole file; deleting it at once would let that writer create
it again and fork the history. Probes only ask whether a version exists, so stubs cost them
nothing; a read that meets a stub (a version retired since it was found) probes on from it, and
opening a stub directly raises :class:`~datashard.errors.SupersededVersionError`.

A stub is deleted once its version was created more than :data:`STUB_HORIZON_MS` ago
(:func:`delete_old_stubs`, oldest first), which is safe because no writer sends the create of
``v<N+1>`` later than :data:`STALE_BASE_S` after it saw ``v<N+1>`` missing (``Loaded.observed``),
and a probe trusts a missing version only when the version before it is young or still there
after the probe (docs/format.md, "Deleting old stubs").
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from datashard.errors import ObjectNotFoundError, StorageError, SupersededVersionError
from datashard.iceberg.metadata import TableMetadata, now_ms
from datashard.iceberg.metadata_codec import metadata_from_json
from datashard.storage.base import ObjectMeta, StorageBackend
from datashard.table.process import exiting, submit

HINT = "version-hint.text"
_VERSION = re.compile(r"^v(\d+)\.metadata\.json$")
_FOREIGN = re.compile(r"^(\d+)-[0-9a-fA-F-]+\.metadata\.json$")
#: A hint worth reading: a version number that fits in 64 bits (the spec's ``long``).
_HINT_TEXT = re.compile(r"[0-9]{1,18}")
#: The most versions a forward probe walks before the caller lists instead.
MAX_PROBE = 64
#: Versions probed one by one before the hint is consulted.
HINT_AFTER = 2


#: How a retired version's stub starts: valid JSON that no Iceberg reader takes for metadata.
STUB_MARK = b'{"datashard-superseded":'
#: A listed version at most this big is a stub already (real metadata is several KB).
STUB_MAX_BYTES = 512
#: Every this many versions, a winner also looks at the versions before the one it retires and
#: retires any left whole (by a writer that died before retiring its own).
SWEEP_EVERY = 64
#: A writer sends the create of ``v<N+1>`` only while it saw ``v<N+1>`` missing at most this
#: many seconds before; a base seen longer ago is checked to be the newest first.
STALE_BASE_S = 3600.0
#: Seconds an attempt keeps for building and sending after a fresh look at the newest
#: version: with less left of :data:`STALE_BASE_S`, it looks again before building.
SEND_MARGIN_S = 60.0
#: A retired version is deleted once its stub is older than this (milliseconds): far past
#: :data:`STALE_BASE_S`, with the rest for clocks that disagree and requests in flight.
STUB_HORIZON_MS = 86_400_000
#: A probe that finds ``v<N+1>`` missing checks that ``v<N>`` is still there afterwards when
#: ``v<N>`` was committed more than this long ago (milliseconds): the sweeps may be deleting
#: from below, oldest first, and a missing ``v<N+1>`` then proves nothing until ``v<N>`` is
#: seen present after it.
RECHECK_AFTER_MS = STUB_HORIZON_MS // 2
#: A sight: readings of a clock that counts time a machine was suspended (``CLOCK_BOOTTIME``
#: where there is one) and of the wall clock, taken together (see :func:`sight`).
Sight = tuple[float, float]

_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def sight() -> Sight:
    """Now, as a :data:`Sight`."""
    steady = time.clock_gettime(_BOOT_CLOCK) if _BOOT_CLOCK is not None else time.monotonic()
    return steady, time.time()


def since(then: Sight) -> float:
    """Seconds since ``then``: the larger of the two clocks' counts, so neither a suspended
    machine (a monotonic clock that stopped) nor a wall clock set back makes it look
    recent."""
    now = sight()
    return max(now[0] - then[0], now[1] - then[1])


def fresh_for(observed: Sight | None) -> float:
    """Seconds left to send the create of ``v<N+1>`` on a base that saw ``v<N+1>`` missing at
    ``observed``: until :data:`STALE_BASE_S` after it (0 when that is not known)."""
    return 0.0 if observed is None else STALE_BASE_S - since(observed)


def needs_look(observed: Sight | None) -> bool:
    """Whether a base seen at ``observed`` must be checked to be the newest before an attempt
    is built on it (less than :data:`SEND_MARGIN_S` of its send window left)."""
    return fresh_for(observed) < SEND_MARGIN_S


#: The most stubs one sweep deletes (an old table's backlog goes over several sweeps).
STUBS_PER_SWEEP = 1000


@dataclass(frozen=True)
class TablePaths:
    """The keys of one table under its backend root."""

    prefix: str

    @property
    def metadata_dir(self) -> str:
        return f"{self.prefix}/metadata"

    @property
    def data_dir(self) -> str:
        return f"{self.prefix}/data"

    @property
    def hint(self) -> str:
        return f"{self.metadata_dir}/{HINT}"

    def version(self, n: int) -> str:
        return f"{self.metadata_dir}/v{n}.metadata.json"


@dataclass(frozen=True)
class Loaded:
    """A metadata version as read: the metadata, its version N and its location."""

    metadata: TableMetadata
    version: int
    location: str
    #: when ``v<version+1>`` was seen missing (a :func:`sight` taken before that request, or
    #: before this writer's own create of ``v<version>``), ``None`` when not known: a writer
    #: builds ``v<version+1>`` on it only within :data:`STALE_BASE_S` of it
    observed: Sight | None = field(default=None, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # a sight means nothing in another process: a copy has none (its writer looks again)
        return (Loaded, (self.metadata, self.version, self.location))


def key_for_uri(backend: StorageBackend, uri: str) -> str:
    """The backend key of an absolute file URI written in metadata.

    Accepts the backend's own URIs, and for ``file://`` backends plain absolute paths and
    ``file:/path`` forms that other writers record. Raises ``InvalidPathError`` for a URI
    outside the backend's root.
    """
    if backend.scheme in ("file", "direct") and "://" not in uri:
        path = uri[len("file:") :] if uri.startswith("file:") else uri
        return backend.key_for(f"{backend.root_uri.split('://', 1)[0]}://{path}")
    return backend.key_for(uri)


def version_of(key: str) -> int | None:
    """N of ``.../v<N>.metadata.json``; ``None`` for any other name."""
    match = _VERSION.match(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------
# the hint


def read_hint(backend: StorageBackend, paths: TablePaths) -> int | None:
    """The version the hint names, or ``None`` if it is missing, unreadable or absurd: not a
    positive number of at most 18 ASCII digits (never raises for a bad hint: it is advisory,
    and a caller with no hint lists ``metadata/``)."""
    try:
        text = backend.read(paths.hint).decode("ascii", "replace").strip()
    except StorageError:
        return None
    if not _HINT_TEXT.fullmatch(text):
        return None  # also keeps int() from refusing 5,000 digits with a ValueError
    return int(text) or None


def deleted_version(backend: StorageBackend, key: str) -> SupersededVersionError | None:
    """For a ``v<N>.metadata.json`` at ``key`` found missing: the error to raise when the table
    has newer versions (the hint names one, or ``v<N+1>`` exists), as the stub of a superseded
    version is deleted a day after it was written; ``None`` when nothing says so."""
    version = version_of(key)
    metadata_dir = key.rpartition("/")[0]
    paths = TablePaths(metadata_dir.rpartition("/")[0])
    if version is None or paths.metadata_dir != metadata_dir:
        return None
    newest = read_hint(backend, paths)
    if (newest is None or newest <= version) and not backend.exists(paths.version(version + 1)):
        return None
    newer = f"v{newest}" if newest is not None and newest > version else "newer versions"
    return SupersededVersionError(
        f"{backend.uri_for(key)} is gone: the table has {newer}, and a superseded version is "
        "retired, then deleted a day after (docs/format.md, 'Deleting old stubs'): load the "
        "table by name for its newest version"
    )


def write_hint(backend: StorageBackend, paths: TablePaths, version: int) -> bool:
    """Best-effort: record ``version`` in the hint; ``False`` if the write failed."""
    try:
        backend.write(paths.hint, str(version).encode("ascii"))
    except StorageError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# probing


def _probe_one(backend: StorageBackend, key: str, bodies: bool) -> bytes | None:
    """``key``'s body (``bodies``) or ``b""`` if it exists (a ``head``); ``None`` if missing."""
    try:
        if bodies:
            return backend.read(key)
        backend.head(key)
    except ObjectNotFoundError:
        return None
    return b""


def probe_forward(
    backend: StorageBackend,
    paths: TablePaths,
    known: int,
    *,
    use_hint: bool = True,
    bodies: bool = False,
) -> tuple[int, bytes | None] | None:
    """The newest version reachable from ``known`` (a version that exists) by probing
    ``known+1``, ``known+2`` ... until one is missing, and the body of that version if this
    probe read it (``None`` when it is ``known`` itself, or when probing by ``head``).

    ``bodies=False`` probes with ``head`` (a reader: it reads only the newest body after);
    ``bodies=True`` probes with GETs (a writer after a lost race: a hit brings the body along,
    where ``head`` would need a GET after it). With ``use_hint``, after :data:`HINT_AFTER` hits
    the hint is read and, if it is ahead, probing jumps there: by ``head`` the hinted version
    is trusted (the caller's read of it fails and lists if it is missing; nothing of ours
    writes a hint ahead of a version), by GET it is read, and probing goes on one by one if it
    is missing. ``None`` when more than :data:`MAX_PROBE` versions follow (the caller lists).
    """
    have: int = known
    body: bytes | None = None
    probe, jumped = known + 1, False
    for step in range(1, MAX_PROBE + 1):
        found = _probe_one(backend, paths.version(probe), bodies)
        if found is None:
            if not jumped or probe == have + 1:
                return have, body
            probe = have + 1  # the hint named a missing version: go on one by one
            continue
        have, body, probe = probe, found if bodies else None, probe + 1
        if use_hint and step == HINT_AFTER and not jumped:
            hint = read_hint(backend, paths)
            if hint is not None and not bodies and hint > have:
                have, probe = hint, hint + 1  # trusted: see above
            elif hint is not None and bodies and hint > probe:
                probe, jumped = hint, True
    return None


def list_versions(backend: StorageBackend, paths: TablePaths) -> list[int]:
    """Every ``v<N>`` under ``metadata/``, ascending."""
    found = []
    for meta in backend.list(paths.metadata_dir + "/"):
        n = version_of(meta.key)
        if n is not None:
            found.append(n)
    return sorted(found)


def newest_listed_version(backend: StorageBackend, paths: TablePaths) -> int | None:
    """The newest version by listing ``metadata/`` (then probing past it: a listing may lag)."""
    versions = list_versions(backend, paths)
    if not versions:
        return None
    probed = probe_forward(backend, paths, versions[-1], use_hint=False)
    return probed[0] if probed is not None else versions[-1]


def newest_version(
    backend: StorageBackend, paths: TablePaths, known: int | None = None
) -> int | None:
    """The newest committed version as far as ``head`` probes show, or ``None`` if none.

    Starts from ``known`` (a version the caller holds) or else the hint; lists ``metadata/``
    when there is nothing to start from or the run is too long. The hint is not checked here:
    a caller whose read of the returned version finds nothing calls
    :func:`newest_listed_version`.
    """
    start = known if known is not None else read_hint(backend, paths)
    if start is not None:
        probed = probe_forward(backend, paths, start)
        if probed is not None:
            return probed[0]
    return newest_listed_version(backend, paths)


def newest_foreign_metadata(backend: StorageBackend, paths: TablePaths) -> str | None:
    """The key of the highest ``<NNNNN>-<uuid>.metadata.json`` (another writer's naming)."""
    best: tuple[int, str] | None = None
    for meta in backend.list(paths.metadata_dir + "/"):
        match = _FOREIGN.match(meta.key.rsplit("/", 1)[-1])
        if match:
            candidate = (int(match.group(1)), meta.key)
            if best is None or candidate > best:
                best = candidate
    return best[1] if best else None


# --------------------------------------------------------------------------------------------
# loading


def is_stub(data: bytes) -> bool:
    """Whether ``data`` is the stub of a retired version."""
    return data.lstrip()[: len(STUB_MARK)] == STUB_MARK


def stub_body(version: int, newest: int) -> bytes:
    """The stub that replaces ``v<version>`` once ``v<newest>`` made it superseded."""
    return json.dumps(
        {
            "datashard-superseded": True,
            "version": version,
            "superseded-by": f"v{newest}.metadata.json",
            "note": "retired; load the table by name for its newest version",
        },
        separators=(",", ":"),
    ).encode("ascii")


def parse_version(data: bytes, location: str, version: int) -> Loaded:
    """``v<version>`` from its bytes; ``SupersededVersionError`` naming it for a stub,
    ``CorruptMetadataError`` naming it if it does not parse."""
    if is_stub(data):
        try:
            newer = json.loads(data).get("superseded-by", "a newer version")
        except (ValueError, AttributeError):
            newer = "a newer version"
        raise SupersededVersionError(
            f"{location} was superseded by {newer} and retired (its content is gone; the "
            "table's metadata log keeps write.metadata.previous-versions-max versions whole): "
            "load the table by name for its newest version"
        )
    return Loaded(metadata_from_json(data, location), version, location)


def load_version(backend: StorageBackend, paths: TablePaths, version: int) -> Loaded:
    """Read and parse ``v<version>``; ``ObjectNotFoundError`` if missing,
    ``SupersededVersionError`` if it was retired, ``CorruptMetadataError`` naming the file if
    it does not parse."""
    key = paths.version(version)
    return parse_version(backend.read(key), backend.uri_for(key), version)


#: Times a load moves on past a version retired under it before giving up.
_RETIRED_RETRIES = 8


def _load_newest_from(backend: StorageBackend, paths: TablePaths, version: int) -> Loaded:
    """The newest version at or after ``version`` (which exists), moving on past any version
    retired between finding it and reading it; read after the probe that found the version
    after it missing, so it is still there after that probe (``observed`` is set)."""
    before = sight()
    for _ in range(_RETIRED_RETRIES):
        newest = newest_version(backend, paths, version) or version
        try:
            return replace(load_version(backend, paths, newest), observed=before)
        except SupersededVersionError:
            if newest != version:
                version = newest  # retired meanwhile: newer versions exist
                continue
            # a stub with nothing after it: one written again among deleted ones (a retire
            # that ran late); the newest version is never a stub, so list
            listed = newest_listed_version(backend, paths)
            if listed is None or listed == version:
                raise
            version = listed
        except ObjectNotFoundError:  # deleted meanwhile (an old stub): list
            listed = newest_listed_version(backend, paths)
            if listed is None:
                raise
            version = listed
    last = newest_version(backend, paths, version) or version
    return replace(load_version(backend, paths, last), observed=before)


def _still_there(
    backend: StorageBackend, paths: TablePaths, loaded: Loaded, before: Sight
) -> Loaded | None:
    """``loaded`` (held since before the probe), found the newest by a probe taken after
    ``before`` that found the next version missing, with ``observed`` set; ``None`` if it was
    retired or deleted since (the caller lists). Stubs are deleted oldest first and never past
    a whole version, so a version read whole at some moment keeps every later version for a
    day after it (it must be retired, its stub age a day and be deleted first). One last seen
    more than :data:`RECHECK_AFTER_MS` ago, or never (``observed`` unknown), is looked at once
    more (``head``): still there and whole after the probe, the next one was never created."""
    if loaded.observed is None or since(loaded.observed) * 1000 >= RECHECK_AFTER_MS:
        try:
            size = backend.head(paths.version(loaded.version)).size
        except ObjectNotFoundError:
            return None
        if size <= STUB_MAX_BYTES:  # retired since: newer versions exist
            return None
    return replace(loaded, observed=before)


def retire_superseded(
    backend: StorageBackend, paths: TablePaths, newest: int, keep: int, *, sweep: bool = False
) -> list[int]:
    """Overwrite with a stub the version that just fell out of ``v<newest>``'s metadata log
    (the newest ``keep`` + 1 stay whole); with ``sweep``, also every whole one among the
    :data:`SWEEP_EVERY` versions before it (found by ``head``: a writer that died before
    retiring left it). Sweeps made every :data:`SWEEP_EVERY` versions tile the versions, so
    each is looked at once, at one ``head`` per commit on average, however long the table
    lives. The versions retired (storage errors propagate: the caller treats this as
    advisory)."""
    cutoff = newest - keep  # v<cutoff> .. v<newest> stay whole
    if cutoff <= 1:
        return []
    targets = [cutoff - 1]
    if sweep:
        for n in range(max(1, cutoff - 1 - SWEEP_EVERY), cutoff - 1):
            try:
                if backend.head(paths.version(n)).size > STUB_MAX_BYTES:
                    targets.append(n)
            except ObjectNotFoundError:
                continue  # never created (a table whose first version was not v1)
    for n in sorted(targets):
        backend.write(paths.version(n), stub_body(n, newest))
    return sorted(targets)


def load_newest(
    backend: StorageBackend, paths: TablePaths, known: Loaded | None = None
) -> Loaded | None:
    """The newest version (from ``known`` or the hint, probing forward), or ``None`` if the
    table has no version. A hint naming a missing version falls back to a listing. The result
    carries ``observed``.

    From the hint, the version it names is read while the next one is probed: a hint that is
    current (the usual case) costs two round trips, not three.
    """
    before = sight()
    early: Future[Loaded] | None = None
    start = known.version if known is not None else read_hint(backend, paths)
    if known is None and start is not None:
        early = submit(load_version, backend, paths, start)
    n = newest_version(backend, paths, start) if start is not None else None
    if n is None:
        n = newest_listed_version(backend, paths)
    if n is None:
        return None
    try:
        if known is not None and n == known.version:
            held: Loaded | None = _still_there(backend, paths, known, before)
        elif early is not None and n == start:  # read whole beside the probe
            held = _still_there(backend, paths, replace(early.result(), observed=before), before)
        else:
            return replace(load_version(backend, paths, n), observed=before)
        if held is not None:
            return held
        raise ObjectNotFoundError(f"{paths.version(n)} was deleted", key=paths.version(n))
    except SupersededVersionError:  # retired between the probe and the read: newer ones exist
        return _load_newest_from(backend, paths, n)
    except ObjectNotFoundError:
        listed = newest_listed_version(backend, paths)
        if listed is None:
            return None
        return _load_newest_from(backend, paths, listed)


def newest_after_loss(
    backend: StorageBackend, paths: TablePaths, taken: int, found: Loaded | None
) -> Loaded:
    """The newest version after losing the race for ``v<taken>`` (``found``: it, if read).

    Probes by GET (:func:`probe_forward` with ``bodies``); only the newest body is parsed. A
    run longer than :data:`MAX_PROBE` is left to :func:`load_newest`, which lists. The result
    carries ``observed``.
    """
    before = sight()
    probed = probe_forward(backend, paths, taken, bodies=True)
    if probed is None:
        return load_newest(backend, paths, found) or _load_newest_from(backend, paths, taken)
    have, data = probed
    if have == taken or data is None:
        if found is None:
            return _load_newest_from(backend, paths, taken)
        # read whole when this writer lost the race for it, just before the probe
        held = _still_there(backend, paths, replace(found, observed=before), before)
        return held if held is not None else _load_newest_from(backend, paths, have)
    if is_stub(data):  # retired since the probe read it: newer versions exist
        return _load_newest_from(backend, paths, have)
    loaded = parse_version(data, backend.uri_for(paths.version(have)), have)
    held = _still_there(backend, paths, replace(loaded, observed=before), before)
    return held if held is not None else load_newest(backend, paths) or loaded


def delete_old_stubs(
    backend: StorageBackend,
    paths: TablePaths,
    newest: int,
    keep: int,
    limit: int = STUBS_PER_SWEEP,
) -> list[int]:
    """Delete, oldest first and one at a time, the retired versions from ``v2`` on whose stub
    is older than :data:`STUB_HORIZON_MS`, at most ``limit``; the versions deleted. ``v1``
    stays (``create_table`` is a create of it). Every version up to one whose stub is that old
    was created before it, so none of them can still be the target of a writer's create (see
    :data:`STALE_BASE_S`). Deleting in ascending order keeps what is left a contiguous run,
    and only stubs are deleted: a whole version met on the way (left by a writer that died
    before retiring it) is retired now and the sweep stops there, so a version read whole
    keeps every later one for a day at least. Storage errors propagate (the caller treats
    this as advisory). Each stub deleted is itself a day old, so a version read whole is never
    deleted within a day of that read."""
    top = newest - keep - 2  # retired for certain (the newest keep + 1 stay whole)
    if top < 2:  # v1 stays: its key is what makes create_table find the table there
        return []
    cutoff = now_ms() - STUB_HORIZON_MS
    table = backend.uri_for(paths.prefix)

    def head(n: int) -> ObjectMeta | None:
        try:
            return backend.head(paths.version(n))
        except ObjectNotFoundError:
            return None

    def old(n: int) -> bool:
        """``v<n>`` is there and older than the horizon (missing counts as young: never
        guess past what is there)."""
        meta = head(n)
        modified = None if meta is None else meta.last_modified
        return modified is not None and modified.timestamp() * 1000 < cutoff

    low = _FLOORS.get(table)
    if low is not None and (low > 2 and head(low - 1) is not None or head(low) is None):
        low = None  # a table made again under the name, or another sweep went further
    if low is None:
        low = _lowest_present(backend, paths, top)
        if low is not None:
            _FLOORS[table] = low  # the next sweeps start here, without bisecting again
    if low is None or low > top or not old(low):
        return []
    # the highest version in [low, low + limit) whose stub is old (stubs are written in about
    # the order of their versions; any one found old makes everything below it old enough)
    lo, hi = low, min(top, low + limit - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old(mid):
            lo = mid
        else:
            hi = mid - 1
    deleted: list[int] = []
    for n in range(low, lo + 1):
        if exiting():
            break
        meta = head(n)
        if meta is not None and meta.size > STUB_MAX_BYTES:
            backend.write(paths.version(n), stub_body(n, newest))  # superseded, left whole
            break
        if meta is not None:
            modified = meta.last_modified
            if modified is None or modified.timestamp() * 1000 >= cutoff:
                break  # a stub written late (a version retired out of order): a day first
            backend.delete(paths.version(n))
        deleted.append(n)
    if deleted:
        _FLOORS[table] = deleted[-1] + 1
    return deleted


#: The lowest version of each table (by URI) this process knows to be there.
_FLOORS: dict[str, int] = {}


def _lowest_present(backend: StorageBackend, paths: TablePaths, top: int) -> int | None:
    """The lowest version from 2 to ``top`` that exists (the deleted ones are a run from
    ``v2``), by bisection with ``head``; ``None`` if ``v<top>`` is missing too."""

    def present(n: int) -> bool:
        try:
            backend.head(paths.version(n))
        except ObjectNotFoundError:
            return False
        return True

    if present(2):
        return 2
    if not present(top):
        return None
    lo, hi = 2, top  # lo missing, hi present
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if present(mid):
            hi = mid
        else:
            lo = mid
    return hi


__all__ = [
    "HINT",
    "MAX_PROBE",
    "RECHECK_AFTER_MS",
    "SEND_MARGIN_S",
    "STALE_BASE_S",
    "STUBS_PER_SWEEP",
    "STUB_HORIZON_MS",
    "STUB_MAX_BYTES",
    "SWEEP_EVERY",
    "Loaded",
    "TablePaths",
    "delete_old_stubs",
    "deleted_version",
    "fresh_for",
    "needs_look",
    "is_stub",
    "key_for_uri",
    "list_versions",
    "load_newest",
    "load_version",
    "newest_after_loss",
    "newest_foreign_metadata",
    "newest_listed_version",
    "newest_version",
    "parse_version",
    "probe_forward",
    "read_hint",
    "retire_superseded",
    "stub_body",
    "version_of",
    "write_hint",
]
