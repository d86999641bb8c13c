"""Command line for benchmarks: run one test server until SIGTERM or SIGINT.

    python -m datashard.testing.servers start ceph|moto|azurite|gcs --env-file FILE

writes FILE (mode 600) with shell ``export`` lines (endpoint, credentials, PID, log) once the
server is ready, waits, and on SIGTERM/SIGINT stops the server and deletes FILE. Exits 0 after a
signal, 1 if the server did not start or died on its own.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from datashard.testing.server_process import ServerStartError, pid_alive
from datashard.testing.servers import SERVER_KINDS, Server, start_server, stop_server


class _Stopped(BaseException):
    """Raised by the SIGTERM/SIGINT handler of the command line."""


def _on_signal(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _write_env_file(path: Path, variables: dict[str, str]) -> None:
    """Write ``export NAME=value`` lines atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        for name, value in variables.items():
            handle.write(f"export {name}={shlex.quote(value)}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``start KIND --env-file FILE``: run one server until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m datashard.testing.servers",
        description="Run one test storage server on 127.0.0.1 until SIGTERM or SIGINT.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a server and wait")
    start.add_argument("kind", choices=SERVER_KINDS)
    start.add_argument(
        "--env-file",
        type=Path,
        required=True,
        help="written (mode 600) with `export` lines once the server is ready; deleted at exit",
    )
    start.add_argument("--timeout", type=float, default=None, help="start-up limit, seconds")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    env_file: Path = args.env_file
    server: Server | None = None
    wrote = False
    try:
        began = time.monotonic()
        server = start_server(args.kind, timeout=args.timeout)
        variables = {
            **server.env(),
            "DATASHARD_SERVER_KIND": args.kind,
            "DATASHARD_SERVER_PID": str(server.pid),
            "DATASHARD_SERVER_LOG": str(server.log_path),
        }
        _write_env_file(env_file, variables)
        wrote = True
        print(
            f"{args.kind} ready in {time.monotonic() - began:.1f} s on port {server.port} "
            f"(pids {' '.join(map(str, server.pids))}, log {server.log_path}); "
            f"environment in {env_file}",
            flush=True,
        )
        while all(pid_alive(pid) for pid in server.pids):
            time.sleep(0.5)
        print(f"{args.kind} exited on its own\n{server.log_tail()}", file=sys.stderr)
        return 1
    except _Stopped:
        return 0
    except ServerStartError as exc:
        print(f"{args.kind} did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if server is not None:
            stop_server(server)
        if wrote:
            env_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
