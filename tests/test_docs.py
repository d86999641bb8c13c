"""The code in the docs runs as written.

Every page (README.md, each docs/*.md and docs/guides/*.md, found by glob, so a new page is
covered at once) runs all its ```python blocks in order in one fresh interpreter, like a
notebook: a later block sees the names an earlier block of the same page defined. Blocks fenced
as anything else (```text, ```bash, ```json ...) are not run, except on the pages listed in
``SHELL_PAGES``: their ```bash blocks run after the python blocks, in order, as one
``bash -euo pipefail`` script in the same directory, with a ``datashard`` command on the path
that runs this checkout's CLI.

Each page runs in a fresh working directory (so the default warehouse ``./datashard-warehouse``
lands there) with no ``DATASHARD_*`` variable and no cloud credentials set. A page whose code
talks to a storage server is listed in ``SERVERS``: it gets the server from the session fixtures
of tests/conftest.py through the variables a user would set (``DATASHARD_STORAGE_TYPE`` and
``DATASHARD_<TYPE>_*``, ``AWS_*``, ``AZURE_STORAGE_CONNECTION_STRING``,
``STORAGE_EMULATOR_HOST``), and the buckets or containers it names are created empty beforehand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "guides").glob("*.md")),
]

#: page -> {server kind: the buckets (S3, GCS) or containers (Azure) its code names}. A kind is
#: ``s3`` (moto), ``azure`` (Azurite) or ``gcs`` (fake-gcs-server). Pages not listed run on the
#: local default with no server.
SERVERS: dict[str, dict[str, tuple[str, ...]]] = {
    "docs/container.md": {"s3": ("bucket",)},
    "docs/loader.md": {"s3": ("bucket",)},
    "docs/storage.md": {"s3": ("my-bucket",)},
    "docs/storage-s3.md": {"s3": ("my-bucket",)},
    "docs/storage-azure-gcs.md": {"azure": ("tables",), "gcs": ("my-bucket",)},
    "docs/guides/workflows.md": {"s3": ("lake",)},
}

#: Pages whose ```bash blocks are run too (they drive the ``datashard`` command).
SHELL_PAGES = {"docs/guides/cli.md"}

#: The session fixture (tests/conftest.py) that starts each kind of server.
FIXTURES = {"s3": "moto_s3", "azure": "azurite", "gcs": "fake_gcs"}

#: How long one page may take, all its blocks together.
TIMEOUT = 120

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)")

# Runs the blocks of one page in one namespace. Each block is compiled with the page as its file
# name and its own line numbers, so a traceback points into the .md file.
_RUNNER = r"""
import json, sys, traceback
page, blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"[docs] block at {page}:{line}", file=sys.stderr, flush=True)
    try:
        exec(compile("\n" * line + code, page, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"[docs] FAILED: the block at {page}:{line}", file=sys.stderr, flush=True)
        sys.exit(1)
"""


def python_blocks(text: str, page: str, language: str = "python") -> list[tuple[int, str]]:
    """``(line of the opening fence, code)`` of every ```python block (or block of
    ``language``), in order (CommonMark
    fences: a block ends at a line holding only a fence at least as long as the opening one).

    Raises ``AssertionError`` for a fence that is never closed: the rest of the page would
    render as code.
    """
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, info = opening.groups()
        start = i
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if (
                closing is not None
                and closing.group(1)[0] == fence[0]
                and len(closing.group(1)) >= len(fence)
                and lines[i].strip() == closing.group(1)
            ):
                break
            i += 1
        else:
            raise AssertionError(f"{page}:{start + 1}: the code fence is never closed")
        if info == language:
            blocks.append((start + 1, "\n".join(lines[start + 1 : i]) + "\n"))
        i += 1
    return blocks


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without any storage setting: no ``DATASHARD_*``, no cloud
    credentials or endpoints; this checkout's datashard first on the path."""
    cloud = ("DATASHARD_", "AWS_", "AZURE_", "STORAGE_EMULATOR_HOST", "GOOGLE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(cloud)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["HOME"] = str(tmp_path)  # no ~/.aws or gcloud files of the machine
    env["MPLBACKEND"] = "Agg"
    return env


def _empty_bucket(kind: str, server: Any, name: str) -> None:
    """Make bucket/container ``name`` exist on ``server``, with nothing in it."""
    if kind == "s3":
        s3 = server.client()
        if name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=name)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=obj["Key"])
    elif kind == "azure":
        from azure.core.exceptions import ResourceExistsError

        service = server.client()
        try:
            service.create_container(name)
        except ResourceExistsError:
            container = service.get_container_client(name)
            for blob in container.list_blobs():
                container.delete_blob(blob.name)
    elif kind == "gcs":
        from google.api_core.exceptions import Conflict

        client = server.client()
        try:
            client.create_bucket(name)
        except Conflict:
            for blob in client.list_blobs(name):
                blob.delete()
    else:
        raise AssertionError(f"unknown server kind {kind!r}")


def _server_env(kind: str, server: Any, bucket: str, only: bool) -> dict[str, str]:
    """The variables a user of ``server`` would set. ``only``: the page uses no other kind of
    server, so ``DATASHARD_STORAGE_TYPE`` can name this one and the default warehouse is there."""
    if kind == "s3":
        env: dict[str, str] = server.env(bucket)
        if not only:
            env = {k: v for k, v in env.items() if not k.startswith("DATASHARD_")}
        return env
    if kind == "azure":
        env = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string}
        if only:
            env["DATASHARD_STORAGE_TYPE"] = "azure"
            env["DATASHARD_AZURE_CONNECTION_STRING"] = server.connection_string
            env["DATASHARD_AZURE_CONTAINER"] = bucket
        return env
    if kind == "gcs":
        env = {"STORAGE_EMULATOR_HOST": server.endpoint, "GOOGLE_CLOUD_PROJECT": server.project}
        if only:
            env["DATASHARD_STORAGE_TYPE"] = "gcs"
            env["DATASHARD_GCS_BUCKET"] = bucket
        return env
    raise AssertionError(f"unknown server kind {kind!r}")


def _params() -> list[Any]:
    params = []
    for path in PAGES:
        page = _page_id(path)
        marks = [pytest.mark.s3] if "s3" in SERVERS.get(page, {}) else []
        params.append(pytest.param(path, id=page, marks=marks))
    return params


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_page(
    page: str, blocks: list[tuple[int, str]], tmp_path: Path, env: dict[str, str], work: Path
) -> subprocess.CompletedProcess[str]:
    """The python blocks of ``page`` run in order in one fresh interpreter in ``work``."""
    script = tmp_path / "blocks.json"
    script.write_text(json.dumps([page, blocks]), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(script)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def _run_shell_blocks(
    page: str, blocks: list[tuple[int, str]], tmp_path: Path, env: dict[str, str], work: Path
) -> None:
    """The ```bash blocks of ``page`` as one script in ``work``, ``datashard`` on the path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "datashard"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m datashard.cli "$@"\n')
    command.chmod(0o755)
    script = tmp_path / "blocks.sh"
    script.write_text(
        "".join(f"echo '[docs] block at {page}:{line}' >&2\n{code}" for line, code in blocks)
    )
    shell_env = {**env, "PATH": os.pathsep.join([str(bin_dir), env.get("PATH", "")])}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", str(script)],
        env=shell_env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        running = re.findall(r"\[docs\] block at (\S+)", done.stderr)
        where = running[-1] if running else page
        pytest.fail(
            f"{where}: the bash block starting at that line fails (exit {done.returncode})\n"
            f"{_tail(done.stdout)}\n{_tail(done.stderr)}",
            pytrace=False,
        )


@pytest.mark.parametrize("path", _params())
def test_page_code_runs_as_written(
    path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    page = _page_id(path)
    text = path.read_text(encoding="utf-8")
    blocks = python_blocks(text, page)
    shell = python_blocks(text, page, "bash") if page in SHELL_PAGES else []
    if not blocks and not shell:
        return  # nothing to run (the fences are still checked above)
    env = _clean_env(tmp_path)
    servers = SERVERS.get(page, {})
    for kind, buckets in servers.items():
        server = request.getfixturevalue(FIXTURES[kind])
        for name in buckets:
            _empty_bucket(kind, server, name)
        env.update(_server_env(kind, server, buckets[0], only=len(servers) == 1))
    work = tmp_path / "work"
    work.mkdir()
    if shell:
        _run_shell_blocks(page, shell, tmp_path, env, work)
        if not blocks:
            return
    try:
        done = _run_page(page, blocks, tmp_path, env, work)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        running = re.findall(r"\[docs\] block at (\S+)", err)
        where = running[-1] if running else page
        pytest.fail(
            f"{where}: the code of {page} did not finish in {TIMEOUT} s\n{_tail(err)}",
            pytrace=False,
        )
    if done.returncode != 0:
        failed = re.findall(r"\[docs\] (?:FAILED: the )?block at (\S+)", done.stderr)
        where = failed[-1] if failed else page
        pytest.fail(
            f"{where}: the python block starting at that line fails "
            f"(exit {done.returncode})\n{_tail(done.stderr)}",
            pytrace=False,
        )


def test_every_python_fence_is_found() -> None:
    """The extractor finds every ```python fence of every page (none is silently skipped)."""
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        page = _page_id(path)
        expected = [
            n
            for n, line in enumerate(text.splitlines(), 1)
            if re.match(r" {0,3}```python\s*$", line)
        ]
        assert [line for line, _ in python_blocks(text, page)] == expected, page


def test_blocks_are_cut_at_their_closing_fence() -> None:
    text = (
        "# Page\n\n```python\nx = 1\n```\n\n```text\nnot code\n```\n\n"
        "````python\nprint('```')\n````\n\n```python\ny = x + 1\n```\n"
    )
    assert python_blocks(text, "p.md") == [
        (3, "x = 1\n"),
        (11, "print('```')\n"),
        (15, "y = x + 1\n"),
    ]
    with pytest.raises(AssertionError, match=r"p.md:3: the code fence is never closed"):
        python_blocks("# Page\n\n```python\nx = 1\n``` and text after the fence\n", "p.md")


def test_the_readme_quickstart_runs_a_second_time(tmp_path: Path) -> None:
    """A user runs the README's code again in the same directory: the table is there already,
    and the code still works (it asks for it with ``exist_ok=True``)."""
    page = "README.md"
    blocks = python_blocks((ROOT / page).read_text(encoding="utf-8"), page)
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(tmp_path)
    for attempt in (1, 2):
        done = _run_page(page, blocks, tmp_path, env, work)
        assert done.returncode == 0, f"run {attempt}:\n{_tail(done.stderr)}"
    assert (work / "datashard-warehouse" / "user-events" / "metadata" / "v3.metadata.json").exists()
