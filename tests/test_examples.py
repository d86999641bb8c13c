"""The examples run as written, in a fresh local warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``examples/<script>`` in a fresh interpreter; ``AssertionError`` with its stderr if it
    fails."""
    # this checkout's datashard first, whatever the venv's editable install points at
    checkout = str(EXAMPLES.parent)
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [checkout, env.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("script", ["quickstart.py"])
def test_example_runs_twice_in_a_fresh_warehouse(script: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASHARD_")}
    env["DATASHARD_LOCAL_PATH"] = str(tmp_path / "wh")
    for _attempt in (1, 2):
        done = _run(script, env, tmp_path)
        assert "logout" in done.stdout
        assert "1 row(s) in the first snapshot" in done.stdout
    assert (tmp_path / "wh" / "user-events" / "metadata" / "v5.metadata.json").exists()
    assert not (tmp_path / "datashard-warehouse").exists()


@pytest.mark.s3
def test_quickstart_runs_on_s3_configured_by_the_environment(
    moto_s3: Any, moto_bucket: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASHARD_")}
    env.update(moto_s3.env(moto_bucket))
    done = _run("quickstart.py", env, tmp_path)
    assert "1 row(s) in the first snapshot" in done.stdout
    keys = [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=moto_bucket)["Contents"]]
    assert "user-events/metadata/v3.metadata.json" in keys
    assert not (tmp_path / "datashard-warehouse").exists()


def test_the_row_deletes_example_deletes_without_rewriting_then_compacts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASHARD_")}
    env["DATASHARD_LOCAL_PATH"] = str(tmp_path / "wh")
    for _attempt in (1, 2):  # the second run drops and re-creates the table
        done = _run("row_deletes.py", env, tmp_path)
        assert "delete files added: 1" in done.stdout
        assert "rows left: 980" in done.stdout
        assert "after compact: 980 rows, 1 file(s), 0 delete files" in done.stdout


def test_the_cli_walkthrough_loads_looks_and_compacts_through_the_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASHARD_")}
    env["DATASHARD_LOCAL_PATH"] = str(tmp_path / "wh")
    for _attempt in (1, 2):  # the second run drops and re-creates the table
        done = _run("cli_walkthrough.py", env, tmp_path)
        assert "2 snapshots, 63 rows" in done.stdout
        assert "big buys: [17, 20, 23, 26, 29]" in done.stdout
        assert "42 clicks+views" in done.stdout
        assert "compact would rewrite 3 files" in done.stdout
        assert "after compact: 1 data file(s)" in done.stdout
        assert "appended 33 rows from 2 files to cli-clicks" in done.stderr
    assert (tmp_path / "wh" / "cli-clicks" / "metadata").is_dir()
    assert not (tmp_path / "datashard-warehouse").exists()
