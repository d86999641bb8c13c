"""The ``datashard`` command through its real entry point (``python -m datashard.cli`` in a
subprocess), on a local warehouse and on moto S3 configured by ``DATASHARD_*`` variables:
outputs a user reads (JSON parsed), exit codes, refusals that delete nothing, and progress bars
only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: wall-clock bound of one command (they take about a second)
TIMEOUT = 60


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASHARD_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datashard.cli", *args],
        cwd=cwd,
        env=env or _env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """The parsed JSON a successful ``--json`` command prints."""
    done = run("--json", *args, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    parquet = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({"id": list(range(100)), "kind": [f"k{i % 5}" for i in range(100)]}), parquet
    )
    csv = tmp_path / "more.csv"
    csv.write_text("id,kind\n100,x\n101,y\n102,x\n")
    return parquet, csv


def _s3_env(moto_s3: Any, bucket: str) -> dict[str, str]:
    return _env(
        {
            "DATASHARD_STORAGE_TYPE": "s3",
            "DATASHARD_S3_BUCKET": bucket,
            "DATASHARD_S3_PREFIX": "wh",
            "DATASHARD_S3_REGION": moto_s3.region,
            "DATASHARD_S3_ENDPOINT": moto_s3.endpoint_url,
            "DATASHARD_S3_ACCESS_KEY": moto_s3.access_key_id,
            "DATASHARD_S3_SECRET_KEY": moto_s3.secret_access_key,
        }
    )


@pytest.fixture(params=["local", "moto"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """(warehouse arguments, environment): ``--warehouse DIR`` locally, the S3 env on moto."""
    if request.param == "local":
        return ["--warehouse", str(tmp_path / "wh")], _env()
    env = _s3_env(request.getfixturevalue("moto_s3"), request.getfixturevalue("moto_bucket"))
    return [], env


def test_table_commands_create_read_and_describe_a_table(
    where: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    wh, env = where
    parquet, csv = _files(tmp_path)
    assert run(*wh, "create", "events", "--from", str(parquet), "--append", cwd=tmp_path,
               env=env).returncode == 0  # fmt: skip
    done = run(*wh, "append", "events", str(csv), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "appended 3 rows" in done.stderr

    assert ok(*wh, "list", cwd=tmp_path, env=env) == ["events"]
    assert ok(*wh, "count", "events", cwd=tmp_path, env=env) == {"count": 103}
    assert ok(*wh, "count", "events", "--where", "kind == 'x' or id < 2", cwd=tmp_path,
              env=env) == {"count": 4}  # fmt: skip
    rows = ok(*wh, "head", "events", "-n", "3", "--columns", "id", "--where",
              "id >= 10 and kind in ('k1', 'k2')", cwd=tmp_path, env=env)  # fmt: skip
    assert rows == [{"id": 11}, {"id": 12}, {"id": 16}]

    info = ok(*wh, "describe", "events", cwd=tmp_path, env=env)
    assert info["records"] == 103
    assert info["data_files"] == 2
    assert info["bytes"] > 0
    assert [f["name"] for f in info["schema"]["fields"]] == ["id", "kind"]
    history = ok(*wh, "history", "events", cwd=tmp_path, env=env)
    assert [(h["operation"], h["added_records"]) for h in history] == [
        ("append", 100),
        ("append", 3),
    ]
    files = ok(*wh, "files", "events", cwd=tmp_path, env=env)
    assert sorted(f["records"] for f in files) == [3, 100]

    # time travel: the first snapshot had 100 rows
    first = str(history[0]["snapshot_id"])
    assert ok(*wh, "count", "events", "--snapshot", first, cwd=tmp_path, env=env) == {"count": 100}


def test_properties_set_get_remove(tmp_path: Path) -> None:
    wh = ["--warehouse", str(tmp_path / "wh")]
    parquet, _ = _files(tmp_path)
    assert run(*wh, "create", "t", "--from", str(parquet), cwd=tmp_path).returncode == 0
    assert run(*wh, "properties", "t", "set", "owner=ana", "tier=gold",
               cwd=tmp_path).returncode == 0  # fmt: skip
    assert ok(*wh, "properties", "t", "get", "owner", cwd=tmp_path) == {"owner": "ana"}
    assert run(*wh, "properties", "t", "remove", "tier", cwd=tmp_path).returncode == 0
    props = ok(*wh, "properties", "t", cwd=tmp_path)
    assert props["owner"] == "ana" and "tier" not in props
    missing = run(*wh, "properties", "t", "get", "tier", cwd=tmp_path)
    assert missing.returncode == 1
    assert "table 't' has no property 'tier'" in missing.stderr
    bad = run(*wh, "properties", "t", "set", "novalue", cwd=tmp_path)
    assert bad.returncode == 1 and "KEY=VALUE, got 'novalue'" in bad.stderr


def test_upkeep_commands_dry_run_changes_nothing(tmp_path: Path) -> None:
    wh = ["--warehouse", str(tmp_path / "wh")]
    parquet, csv = _files(tmp_path)
    run(*wh, "create", "t", "--from", str(parquet), "--append", cwd=tmp_path)
    run(*wh, "append", "t", str(csv), cwd=tmp_path)
    plan = ok(*wh, "compact", "t", "--dry-run", cwd=tmp_path)
    assert plan["rewritten_files"] == 2 and plan["dry_run"] is True
    said = run(*wh, "compact", "t", "--dry-run", cwd=tmp_path).stdout
    assert said.strip() == "would rewrite 2 files (103 rows)", said
    assert len(ok(*wh, "files", "t", cwd=tmp_path)) == 2
    done = ok(*wh, "compact", "t", cwd=tmp_path)
    assert done["rewritten_files"] == 2 and done["added_files"] == 1
    assert len(ok(*wh, "files", "t", cwd=tmp_path)) == 1
    assert ok(*wh, "count", "t", cwd=tmp_path) == {"count": 103}
    expired = ok(*wh, "expire", "t", "--older-than", "0s", "--retain-last", "1", "--dry-run",
                 cwd=tmp_path)  # fmt: skip
    assert len(expired["expired_snapshot_ids"]) == 2
    assert len(ok(*wh, "history", "t", cwd=tmp_path)) == 3
    summary = run(*wh, "remove-orphans", "t", "--dry-run", cwd=tmp_path)
    assert summary.returncode == 0 and "would delete 0 orphan files" in summary.stdout


def test_errors_name_the_table_and_exit_1_usage_exits_2(tmp_path: Path) -> None:
    wh = ["--warehouse", str(tmp_path / "wh")]
    missing = run(*wh, "describe", "nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no table 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    parquet, _ = _files(tmp_path)
    run(*wh, "create", "t", "--from", str(parquet), cwd=tmp_path)
    unsafe = run(*wh, "count", "t", "--where", "__import__('os').getcwd() == 1", cwd=tmp_path)
    assert unsafe.returncode == 1 and "is not supported" in unsafe.stderr
    column = run(*wh, "count", "t", "--where", "nosuch > 1", cwd=tmp_path)
    assert column.returncode == 1 and "nosuch" in column.stderr
    assert run("frobnicate", cwd=tmp_path).returncode == 2
    assert run(*wh, "head", cwd=tmp_path).returncode == 2


def test_drop_refuses_without_yes_when_stdin_is_not_a_terminal(tmp_path: Path) -> None:
    wh = ["--warehouse", str(tmp_path / "wh")]
    parquet, _ = _files(tmp_path)
    run(*wh, "create", "t", "--from", str(parquet), "--append", cwd=tmp_path)
    refused = run(*wh, "drop", "t", cwd=tmp_path, stdin="y\n")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert ok(*wh, "count", "t", cwd=tmp_path) == {"count": 100}
    assert run(*wh, "drop", "t", "--yes", cwd=tmp_path).returncode == 0
    assert ok(*wh, "list", cwd=tmp_path) == []


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    return src


def test_cp_ls_du_rm_between_local_disk_and_s3(moto_s3: Any, moto_bucket: str,
                                              tmp_path: Path) -> None:  # fmt: skip
    env = _s3_env(moto_s3, moto_bucket)
    src = _tree(tmp_path)
    dest = f"s3://{moto_bucket}/copy/"
    copied = ok("cp", str(src), dest, cwd=tmp_path, env=env)
    assert copied["copied"] == 3
    listing = ok("ls", f"s3://{moto_bucket}/copy", "--recursive", cwd=tmp_path, env=env)
    assert sorted(d["uri"].split("/copy/")[1] for d in listing) == ["a.txt", "big.bin", "sub/b.txt"]
    top = ok("ls", f"s3://{moto_bucket}/copy", cwd=tmp_path, env=env)
    assert sorted(d["name"] for d in top) == ["a.txt", "big.bin", "sub/"]
    assert ok("ls", f"s3://{moto_bucket}/copy", "-r", "--regex", r"\.txt$", "--count",
              cwd=tmp_path, env=env) == {"objects": 2, "bytes": 9}  # fmt: skip
    usage = ok("du", f"s3://{moto_bucket}/copy", cwd=tmp_path, env=env)
    assert usage["objects"] == 3 and usage["bytes"] == 3 * 1024 * 1024 + 17 + 9

    # store -> local, byte for byte; store -> store; a glob
    ok("cp", f"s3://{moto_bucket}/copy/big.bin", str(tmp_path / "back.bin"), cwd=tmp_path, env=env)
    assert (tmp_path / "back.bin").read_bytes() == (src / "big.bin").read_bytes()
    ok("cp", f"s3://{moto_bucket}/copy/*.txt", f"s3://{moto_bucket}/txt/", cwd=tmp_path, env=env)
    names = ok("ls", f"s3://{moto_bucket}/txt", cwd=tmp_path, env=env)
    assert [d["name"] for d in names] == ["a.txt"]
    again = ok("cp", str(src), dest, "--resume", cwd=tmp_path, env=env)
    assert again == {"copied": 0, "skipped": 3, "bytes": 3 * 1024 * 1024 + 26}

    # rm: refuses without --yes and no terminal, deleting nothing; --yes deletes
    refused = run("rm", f"s3://{moto_bucket}/copy", cwd=tmp_path, env=env, stdin="y\n")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert "copy/big.bin" in refused.stderr  # it showed what it would delete
    assert ok("du", f"s3://{moto_bucket}/copy", cwd=tmp_path, env=env)["objects"] == 3
    gone = ok("rm", f"s3://{moto_bucket}/copy", "--regex", "sub/", "--yes", cwd=tmp_path, env=env)
    assert gone["deleted"] == 1
    assert ok("du", f"s3://{moto_bucket}/copy", cwd=tmp_path, env=env)["objects"] == 2


def _run_on_pty(args: list[str], cwd: Path, answer: bytes | None = None) -> tuple[int, str]:
    """Run with stderr (and stdin, when there is an ``answer`` to type) on a pseudo-terminal;
    the exit code and what the terminal showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "datashard.cli", *args],
        cwd=cwd,
        env=_env({"TERM": "xterm-256color", "COLUMNS": "100"}),
        stdin=follower if answer is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    if answer is not None:
        os.write(leader, answer)
    seen = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=TIMEOUT), seen.decode("utf-8", "replace")


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    code, shown = _run_on_pty(["cp", str(src), str(tmp_path / "out") + "/"], tmp_path)
    assert code == 0
    assert "copying" in shown and "━" in shown  # rich's bar
    assert (tmp_path / "out" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    quiet = run("cp", str(src), str(tmp_path / "out2") + "/", cwd=tmp_path)
    assert quiet.returncode == 0
    assert quiet.stderr == "" and "━" not in quiet.stdout


def test_rm_on_a_terminal_asks_and_deletes_only_on_yes(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    code, shown = _run_on_pty(["rm", str(src / "sub")], tmp_path, answer=b"n\n")
    assert code == 1 and "[y/N]" in shown and "sub/b.txt" in shown
    assert (src / "sub" / "b.txt").exists()
    code, shown = _run_on_pty(["rm", str(src / "sub")], tmp_path, answer=b"y\n")
    assert code == 0
    assert not (src / "sub" / "b.txt").exists() and (src / "a.txt").exists()
