"""The version hint written in the background after a win: truthful at interpreter exit, no
hang in a process forked while it is still being written, and no hang at exit while a server
keeps failing it."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from datashard import Schema, Table, create_table, load_table
from datashard.storage.config import open_backend
from datashard.testing.faultproxy import FaultProxy
from datashard.testing.faults import FaultyBackend

SCHEMA = Schema(schema_id=0, fields=[{"id": 1, "name": "x", "type": "int", "required": True}])

EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from datashard import Schema, create_table, load_table
    from datashard.storage.config import open_backend
    from datashard.testing.faults import FaultyBackend

    uri, out = sys.argv[1], sys.argv[2]
    schema = Schema(schema_id=0, fields=[{"id": 1, "name": "x", "type": "int", "required": True}])
    create_table("t", schema, warehouse=uri)

    class SlowCommit(FaultyBackend):
        def put_if_absent(self, key, data):
            time.sleep(1.0)  # the main thread returns meanwhile
            return self.inner.put_if_absent(key, data)

    table = load_table("t", warehouse=SlowCommit(open_backend(uri)))
    table.append_records([{"x": 0}])  # warm: the commit's thread pool exists

    def work():
        try:
            table.append_records([{"x": 1}])
            result = "ok"
        except BaseException as exc:
            result = "raised " + type(exc).__name__ + ": " + str(exc)
        with open(out, "w") as f:
            f.write(result)

    threading.Thread(target=work).start()  # not a daemon: the interpreter waits for it
    time.sleep(0.5)  # the staged writes are done, the conditional PUT sleeps; main returns
    """
)


def test_append_in_flight_at_interpreter_exit_reports_what_happened(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    out = tmp_path / "out.txt"
    uri = (tmp_path / "wh").as_uri()
    subprocess.run([sys.executable, str(script), uri, str(out)], check=True, timeout=60)
    result = out.read_text()
    rows = sorted(r["x"] for r in load_table("t", warehouse=uri).to_arrow().to_pylist())
    assert result == "ok", result  # it landed, and the caller is told so
    assert rows == [0, 1]


class _SlowHint(FaultyBackend):
    def write(self, key: str, data: Any) -> None:
        if key.endswith("version-hint.text"):
            time.sleep(1.0)
        self.inner.write(key, data)


_INHERITED: list[Table] = []


def _append_in_child() -> None:
    _INHERITED[0].append_records([{"x": 2}])


def test_a_process_forked_during_the_hint_write_can_commit(tmp_path: Path) -> None:
    uri = (tmp_path / "wh").as_uri()
    create_table("t", SCHEMA, warehouse=uri)
    table = load_table("t", warehouse=_SlowHint(open_backend(uri)))
    table.append_records([{"x": 1}])  # returns while its hint write sleeps in the background
    _INHERITED[:] = [table]
    child = multiprocessing.get_context("fork").Process(target=_append_in_child)
    child.start()
    child.join(20)
    hung = child.is_alive()
    if hung:
        child.kill()
        child.join()
    assert not hung, "the forked child hung waiting for its parent's hint write"
    assert child.exitcode == 0
    assert sorted(r["x"] for r in load_table("t", warehouse=uri).to_arrow().to_pylist()) == [1, 2]


HINT_FAILS_SCRIPT = textwrap.dedent(
    """
    import sys
    from datashard import load_table

    table = load_table("t")  # storage from the DATASHARD_* environment: through the proxy
    table.append_records([{"x": 7}])
    print("appended", flush=True)
    # the interpreter exits now, with the hint write failing (503) in the background
    """
)


@pytest.mark.s3
def test_a_process_exits_in_seconds_while_its_hint_write_keeps_failing(
    moto_s3: Any, moto_bucket: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASHARD_")}
    env.update(moto_s3.env(moto_bucket))
    create_table("t", SCHEMA, warehouse=f"s3://{moto_bucket}", **_s3_options(moto_s3))
    with FaultProxy(moto_s3.endpoint_url) as proxy:
        proxy.fail(n=100_000, method="PUT", path=r"version-hint\.text")
        env["DATASHARD_S3_ENDPOINT"] = proxy.url
        script = tmp_path / "hint.py"
        script.write_text(HINT_FAILS_SCRIPT)
        # before the fix the advisory retries kept the process alive for minutes
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        hint_puts = sum(1 for _, method, path in proxy.arrivals if "version-hint" in path)
    assert done.returncode == 0, done.stderr
    assert "appended" in done.stdout
    assert hint_puts >= 1  # the hint write was tried and failed
    table = load_table("t", warehouse=f"s3://{moto_bucket}", **_s3_options(moto_s3))
    assert [r["x"] for r in table.to_arrow().to_pylist()] == [7]  # the append landed
    assert table.version == 2
    assert table.backend.read("t/metadata/version-hint.text") == b"1"  # every hint PUT failed


def _s3_options(server: Any) -> dict[str, Any]:
    return {
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "path_style": True,
    }
