"""Start, watch and stop local server processes for tests and benchmarks.

Every process is started in its own session (so its PID is also its process-group id), with its
output appended to a log file, with stdin closed, and with ``PR_SET_PDEATHSIG`` so that it dies
with the process that started it even when that process is killed hard. Stopping is by PID only:
SIGTERM to the process group, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from datashard.errors import DataShardError

#: The only address any test server listens on.
HOST = "127.0.0.1"

_PR_SET_PDEATHSIG = 1

#: Popen objects of the processes :func:`spawn` started and that have not been reaped yet.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
#: PIDs this process has already stopped: never signalled again (the number may be reused).
_STOPPED: set[int] = set()


class ServerStartError(DataShardError, RuntimeError):
    """A test server did not start (or did not become ready); the message holds its log tail."""


class ServerStopError(DataShardError, RuntimeError):
    """A test server process survived SIGKILL (should never happen)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (as servers do, with
    SO_REUSEADDR, so closed connections still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET to ``url``, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the ")" that closes the command name.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note saying it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def describe_logs(paths: Iterable[Path], lines: int = 30) -> str:
    """A block with the tail of each log file, for error messages."""
    parts = []
    for path in paths:
        parts.append(f"--- last {lines} lines of {path} ---\n{log_tail(path, lines)}")
    return "\n".join(parts)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``.

    Raises ServerStartError when the program cannot be executed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only tie the
                # server's life to a thread that lives as long as the process.
                preexec_fn=_die_with_parent if _in_main_thread() else None,
            )
        except OSError as exc:
            raise ServerStartError(
                f"cannot run {argv[0]!r}: {exc.strerror}; run scripts/install-test-deps.sh "
                "(and `pip install -e '.[dev]'`) first"
            ) from exc
    _CHILDREN[proc.pid] = proc
    return proc


def run_checked(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> str:
    """Run a set-up command to completion; return its stdout.

    Its stderr goes to ``log_path``. Raises ServerStartError naming the command, its exit status
    and the tail of its stderr when it fails or takes longer than ``timeout`` seconds.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(("$ " + " ".join(_redacted(argv)) + "\n").encode())
        log.flush()
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=dict(env) if env is not None else None,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ServerStartError(
                f"cannot run {argv[0]!r}: not installed; run scripts/install-test-deps.sh first"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(
                f"{' '.join(argv[:3])} did not finish within {timeout:g} s\n"
                + describe_logs([log_path])
            ) from exc
    if done.returncode != 0:
        raise ServerStartError(
            f"{' '.join(argv[:3])} failed with exit status {done.returncode}\n"
            + describe_logs([log_path])
        )
    return done.stdout.decode("utf-8", "replace")


def _redacted(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of credential options replaced, for logging."""
    shown = []
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if eq and name.lstrip("-").lower() in _SECRET_OPTIONS:
            arg = f"{name}=***"
        shown.append(arg)
    return shown


_SECRET_OPTIONS = frozenset({"secret", "secret-key", "access-key", "key", "password"})


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    processes: Sequence[subprocess.Popen[bytes]] = (),
    logs: Sequence[Path] = (),
    interval: float = 0.1,
) -> float:
    """Poll ``ready`` until it returns True; return the seconds waited.

    Raises ServerStartError, with the tail of ``logs``, when any of ``processes`` exits first or
    when ``timeout`` seconds pass.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        for proc in processes:
            code = proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"{what}: process {proc.pid} ({_name(proc)}) exited with status {code} "
                    "before it was ready\n" + describe_logs(logs)
                )
        if ready():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise ServerStartError(f"{what}: not ready after {timeout:g} s\n" + describe_logs(logs))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    if isinstance(args, (list, tuple)) and args:
        return os.path.basename(str(args[0]))
    return str(args)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child, so it does not linger as a zombie."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    """Whether any process other than a zombie is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _signal(pid: int, sig: signal.Signals) -> None:
    for send in (os.killpg, os.kill):
        try:
            send(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:  # pragma: no cover - EPERM on someone else's process
            if exc.errno != errno.EPERM:
                raise


def stop_pids(pids: Sequence[int], grace: float = 10.0) -> None:
    """Stop processes by PID: SIGTERM (to the process and its group), wait, then SIGKILL.

    The processes must have been started by :func:`spawn` (each leads its own process group).
    They are stopped together; ``grace`` bounds the wait before SIGKILL. Stopping a PID a second
    time does nothing. Raises ServerStopError if any survives SIGKILL for 10 seconds.
    """
    live = [pid for pid in pids if pid > 0 and pid not in _STOPPED]
    for pid in live:
        _signal(pid, signal.SIGTERM)
    if not _wait_gone(live, grace):
        for pid in live:
            _signal(pid, signal.SIGKILL)
        if not _wait_gone(live, 10.0):
            left = [pid for pid in live if pid_alive(pid)]
            raise ServerStopError(f"processes {left} survived SIGKILL")
    _STOPPED.update(live)


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            _reap(pid)
        if not any(pid_alive(pid) or _group_alive(pid) for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
