"""Tables on Azure (Azurite) and GCS (the GCS emulator): create, append, read, time travel, and
appends from concurrent processes, through ``create_table`` / ``load_table`` with ``az://`` and
``gs://`` warehouses."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from datashard import Schema, create_table, load_table
from datashard.testing.servers import AzureServer, GCSServer
from datashard.testing.writers import append_worker

SCHEMA = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "writer", "type": "int", "required": True},
        {"id": 2, "name": "commit", "type": "int", "required": True},
        {"id": 3, "name": "row", "type": "int", "required": True},
    ],
)
PROPS = {"history.expire.max-snapshots": "1000", "commit.retry.num-retries": "100"}
RETRIES = {"retry_first_delay": 0.05, "retry_max_delay": 1.0, "retry_attempts": 8}


def _warehouse(kind: str, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """A fresh warehouse URI and its options on Azurite (``azure``), the GCS emulator
    (``gcs``) or fake-gcs-server (``fake-gcs``, which honours generation preconditions)."""
    run = uuid.uuid4().hex[:8]
    if kind == "azure":
        azurite: AzureServer = request.getfixturevalue("azurite")
        container: str = request.getfixturevalue("azure_container")
        options = {
            "account_name": azurite.account_name,
            "account_key": azurite.account_key,
            "account_url": azurite.endpoint,
            **RETRIES,
        }
        return f"az://{container}/wh-{run}", options
    fake = kind == "fake-gcs"
    gcs: GCSServer = request.getfixturevalue("fake_gcs" if fake else "gcs_emulator")
    bucket: str = request.getfixturevalue("fake_gcs_bucket" if fake else "gcs_bucket")
    options = {"endpoint": gcs.endpoint, "project": gcs.project, "anonymous": True, **RETRIES}
    return f"gs://{bucket}/wh-{run}", options


@pytest.fixture(params=["azure", "gcs"])
def cloud_wh(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    kind: str = request.param
    return _warehouse(kind, request)


def _records(writer: int, commit: int, rows: int) -> list[dict[str, int]]:
    return [{"writer": writer, "commit": commit, "row": r} for r in range(rows)]


def test_create_append_read_and_time_travel(cloud_wh: tuple[str, dict[str, Any]]) -> None:
    uri, options = cloud_wh
    table = create_table("events", SCHEMA, warehouse=uri, properties=PROPS, **options)
    ids = [table.append_records(_records(0, c, 10)).snapshot_id for c in range(3)]

    again = load_table("events", warehouse=uri, **options)
    current = again.current_snapshot()
    assert current is not None and current.snapshot_id == ids[-1]
    assert again.count() == 30
    rows = again.to_arrow().to_pylist()
    assert sorted((r["commit"], r["row"]) for r in rows) == [
        (c, r) for c in range(3) for r in range(10)
    ]
    assert [s.snapshot_id for s in again.snapshots()] == ids
    assert again.scan(snapshot_id=ids[0]).count() == 10
    assert again.scan(snapshot_id=ids[1]).to_arrow().num_rows == 20
    assert again.scan(as_of=again.snapshot(ids[1]).timestamp_ms).count() == 20
    assert current.manifest_list.startswith(uri + "/events/metadata/")


WRITERS, COMMITS, ROWS = 3, 4, 5
GCS_NO_PRECONDITIONS = (
    "gcp-storage-emulator ignores ifGenerationMatch=0, so two writers can both 'win' one "
    "metadata version and one commit is overwritten; real GCS answers 412 (not strict: a run "
    "without a collision passes)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cloud",
    [
        "azure",
        "fake-gcs",  # a real race on GCS's conditional create: every row, no expected failure
        pytest.param("gcs", marks=pytest.mark.xfail(reason=GCS_NO_PRECONDITIONS)),
    ],
)
def test_concurrent_appends_from_processes_keep_every_row(
    cloud: str, request: pytest.FixtureRequest
) -> None:
    uri, options = _warehouse(cloud, request)
    create_table("t", SCHEMA, warehouse=uri, properties=PROPS, **options)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WRITERS, mp_context=ctx) as pool:
        futures = [
            pool.submit(append_worker, uri, options, "t", w, COMMITS, ROWS) for w in range(WRITERS)
        ]
        acked = {w: f.result(timeout=600) for w, f in enumerate(futures)}

    table = load_table("t", warehouse=uri, **options)
    rows = table.to_arrow().to_pylist()
    keys = Counter((r["writer"], r["commit"], r["row"]) for r in rows)
    assert len(rows) == WRITERS * COMMITS * ROWS
    assert max(keys.values()) == 1, "a row appears twice"
    snapshots = table.snapshots()
    by_id = {s.snapshot_id for s in snapshots}
    for commits in acked.values():
        assert all(snapshot_id in by_id for _, snapshot_id, _ in commits)
    assert [s.sequence_number for s in snapshots] == list(range(1, WRITERS * COMMITS + 1))
