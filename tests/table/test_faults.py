"""Fault injection at every storage call of a commit: fail, time out, or lose the response.

Each case leaves the table loadable, every acknowledged commit present exactly once, and the
faulted commit present at most once (exactly once when it was acknowledged).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datashard import Schema, create_table, load_table
from datashard.errors import CommitStateUnknownError, DataShardError
from datashard.storage.config import open_backend
from datashard.table import Table
from datashard.testing.faults import Fault, FaultKind, FaultyBackend

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "batch", "type": "long", "required": True},
        {"id": 2, "name": "row", "type": "long", "required": True},
    ],
)
KINDS: tuple[FaultKind, ...] = ("fail", "timeout", "lose")
FAST = {"commit.retry.min-wait-ms": "1", "commit.retry.max-wait-ms": "5"}


def _rows(batch: int, n: int = 3) -> list[dict[str, int]]:
    return [{"batch": batch, "row": r} for r in range(n)]


def _setup(
    where: Path | str, stale: bool, options: dict[str, Any] | None = None
) -> tuple[FaultyBackend, Table, str]:
    """A table with batch 0 committed, a writer over a fault wrapper that is warm (holds the
    newest version) or stale (another writer committed batch 1 after it loaded)."""
    uri = f"file://{where}/wh" if isinstance(where, Path) else where
    backend = open_backend(uri, **(options or {}))
    create_table("t", SCHEMA, warehouse=backend, properties=FAST)
    faulty = FaultyBackend(backend)
    writer = load_table("t", warehouse=faulty)
    writer.append_records(_rows(0))  # warm: caches its manifests
    writer.flush()
    if stale:
        load_table("t", warehouse=backend).append_records(_rows(1))
    return faulty, writer, uri


def _calls_of_one_append(
    where: Path | str, stale: bool, options: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    faulty, writer, _ = _setup(where, stale, options)
    faulty.arm()
    writer.append_records(_rows(7))
    writer.flush()  # the version-hint write runs in the background
    return list(faulty.calls)


def _key_class(key: str) -> str:
    """A part of the key that names its role and is the same in every run."""
    name = key.rsplit("/", 1)[-1]
    if key.startswith("t/data/"):
        return "t/data/"
    if name.endswith("-m0.avro"):
        return "-m0.avro"
    if name.startswith("snap-"):
        return "-" + name.split("-")[2] + "-"  # the attempt number
    return name


def _cases() -> list[tuple[bool, int, FaultKind]]:
    import tempfile

    out = []
    for stale in (False, True):
        with tempfile.TemporaryDirectory() as d:
            n = len(_calls_of_one_append(Path(d), stale))
        out += [(stale, i, kind) for i in range(n) for kind in KINDS]
    return out


def test_a_warm_uncontended_append_makes_five_requests(tmp_path: Path) -> None:
    calls = _calls_of_one_append(tmp_path, stale=False)
    methods = [m for m, _ in calls]
    assert methods == ["write", "write", "write", "put_if_absent", "write"], calls
    keys = [k for _, k in calls]
    first_three = sorted(_key_class(k) for k in keys[:3])  # written concurrently
    assert first_three == ["-0-", "-m0.avro", "t/data/"]
    assert keys[3] == "t/metadata/v3.metadata.json"
    assert keys[4] == "t/metadata/version-hint.text"


@pytest.mark.parametrize(("stale", "index", "kind"), _cases())
def test_a_fault_at_any_call_never_loses_or_doubles_a_commit(
    tmp_path: Path, stale: bool, index: int, kind: FaultKind
) -> None:
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    _fault_case(probe_dir, tmp_path / "real", {}, stale, index, kind)


@pytest.mark.s3
@pytest.mark.parametrize("warehouse", ["moto"], indirect=True)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stale", [False, True])
def test_faults_on_s3_never_lose_or_double_a_commit(
    warehouse: Any, stale: bool, kind: FaultKind
) -> None:
    n = len(_calls_of_one_append(warehouse.uri + "/count", stale, warehouse.options))
    for index in range(n):
        _fault_case(
            f"{warehouse.uri}/probe{index}",
            f"{warehouse.uri}/real{index}",
            warehouse.options,
            stale,
            index,
            kind,
        )


def _fault_case(
    probe: Path | str,
    real: Path | str,
    options: dict[str, Any],
    stale: bool,
    index: int,
    kind: FaultKind,
) -> None:
    calls = _calls_of_one_append(probe, stale, options)
    method, key = calls[index]
    cls = _key_class(key)
    nth = sum(1 for m, k in calls[: index + 1] if m == method and cls in k)
    faulty, writer, uri = _setup(real, stale, options)
    faulty.arm(Fault(method, nth=nth, kind=kind, delay=0.01, key_contains=cls))
    acknowledged = {0} | ({1} if stale else set())
    unknown = False
    try:
        writer.append_records(_rows(7))
        writer.flush()
        acknowledged.add(7)
    except CommitStateUnknownError:
        unknown = True
    except DataShardError:
        pass  # a clean failure: the commit provably did not land
    assert faulty.injected, f"no fault was injected at {method} #{nth} ({key})"

    table = load_table("t", warehouse=uri, **options)  # loadable
    batches = Counter(r["batch"] for r in table.to_arrow().to_pylist())
    for batch in acknowledged:
        assert batches[batch] == 3, (batch, batches)
    if 7 not in acknowledged:
        assert batches[7] in ((0, 3) if unknown else (0,)), batches
    ids = [s.snapshot_id for s in table.snapshots()]
    assert len(ids) == len(set(ids))
    assert [s.parent_snapshot_id for s in table.snapshots()] == [None, *ids[:-1]]
    # the writer that saw the fault keeps working
    writer.refresh().append_records(_rows(9))
    assert (
        Counter(
            r["batch"] for r in load_table("t", warehouse=uri, **options).to_arrow().to_pylist()
        )[9]
        == 3
    )
