"""The test servers themselves: each starts, stores and returns bytes, handles conditional
create the way docs/testing.md says, and is gone (PIDs dead, port free) after it is stopped."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from datashard.testing.server_process import (
    ServerStartError,
    pid_alive,
    port_is_free,
    spawn,
    wait_until,
)
from datashard.testing.servers import (
    AzureServer,
    GCSServer,
    S3Server,
    Server,
    start_moto,
    stop_server,
    unique_name,
)

# --------------------------------------------------------------------------------------------
# S3: Ceph RGW and moto


@pytest.fixture(params=["ceph", "moto"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(f"{request.param}_s3")
    return server


def test_s3_server_stores_and_returns_bytes(s3: S3Server) -> None:
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="a/b.bin", Body=b"\x00hello\xff")
    assert client.get_object(Bucket=s3.bucket, Key="a/b.bin")["Body"].read() == b"\x00hello\xff"
    ranged = client.get_object(Bucket=s3.bucket, Key="a/b.bin", Range="bytes=1-5")
    assert ranged["Body"].read() == b"hello"


def test_s3_server_refuses_second_create_with_if_none_match(s3: S3Server) -> None:
    client = s3.client()
    key = unique_name("create")
    client.put_object(Bucket=s3.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as lost:
        client.put_object(Bucket=s3.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert lost.value.response["Error"]["Code"] == "PreconditionFailed"
    assert lost.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"first"


def test_s3_multipart_upload_round_trips(s3: S3Server) -> None:
    client = s3.client()
    payload = os.urandom(11 * 1024 * 1024)  # three parts at boto3's 8 MiB default part size
    client.upload_fileobj(io.BytesIO(payload), s3.bucket, "multi.bin")
    assert client.get_object(Bucket=s3.bucket, Key="multi.bin")["Body"].read() == payload


def test_fresh_buckets_do_not_share_objects(moto_s3: S3Server, moto_bucket: str) -> None:
    client = moto_s3.client()
    client.put_object(Bucket=moto_bucket, Key="only-here", Body=b"x")
    listed = client.list_objects_v2(Bucket=moto_bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["only-here"]
    assert moto_bucket != moto_s3.bucket


def test_s3_server_repr_hides_credentials(ceph_s3: S3Server) -> None:
    shown = repr(ceph_s3) + str(ceph_s3)
    assert ceph_s3.secret_access_key not in shown
    assert ceph_s3.access_key_id not in shown
    assert ceph_s3.endpoint_url in shown


def test_ceph_logs_redact_credentials(ceph_s3: S3Server) -> None:
    for path in ceph_s3.log_paths:
        if path.exists():
            assert ceph_s3.secret_access_key not in path.read_text(errors="replace"), path


def test_ceph_serves_every_path_from_one_temp_dir(ceph_s3: S3Server) -> None:
    conf = (ceph_s3.root_dir / "ceph.conf").read_text()
    assert f"beast endpoint=127.0.0.1:{ceph_s3.port} tcp_nodelay=1" in conf
    assert ceph_s3.log_path.is_relative_to(ceph_s3.root_dir)
    assert all(pid_alive(pid) for pid in ceph_s3.pids)


# --------------------------------------------------------------------------------------------
# Azure: Azurite


def test_azurite_stores_and_returns_bytes(azurite: AzureServer, azure_container: str) -> None:
    blob = azurite.client().get_blob_client(azure_container, "a/b.bin")
    blob.upload_blob(b"\x00hello\xff")
    assert blob.download_blob().readall() == b"\x00hello\xff"
    assert blob.download_blob(offset=1, length=5).readall() == b"hello"


def test_azurite_refuses_second_create_with_if_none_match(
    azurite: AzureServer, azure_container: str
) -> None:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    blob = azurite.client().get_blob_client(azure_container, "once")
    blob.upload_blob(b"first", overwrite=False)
    # overwrite=False sends If-None-Match: *; the server answers 409 BlobAlreadyExists.
    with pytest.raises(ResourceExistsError) as lost:
        blob.upload_blob(b"second", overwrite=False)
    assert getattr(lost.value, "error_code", None) == "BlobAlreadyExists"
    stale = blob.get_blob_properties().etag
    blob.upload_blob(b"third", overwrite=True)
    with pytest.raises(ResourceModifiedError):
        blob.upload_blob(
            b"fourth", overwrite=True, etag=stale, match_condition=MatchConditions.IfNotModified
        )
    assert blob.download_blob().readall() == b"third"


# --------------------------------------------------------------------------------------------
# GCS: gcp-storage-emulator


def test_gcs_emulator_stores_and_returns_bytes(gcs_emulator: GCSServer, gcs_bucket: str) -> None:
    blob = gcs_emulator.client().bucket(gcs_bucket).blob("a/b.bin")
    blob.upload_from_string(b"\x00hello\xff")
    assert blob.download_as_bytes() == b"\x00hello\xff"
    assert blob.download_as_bytes(start=1, end=5) == b"hello"


def test_gcs_emulator_ignores_if_generation_match_but_logs_it(
    gcs_emulator: GCSServer, gcs_bucket: str
) -> None:
    """The emulator does not honour preconditions (docs/testing.md): a second create with
    ifGenerationMatch=0 overwrites. What it does is log the request line, so tests of our GCS
    client prove the precondition was sent by reading request_log_path."""
    blob = gcs_emulator.client().bucket(gcs_bucket).blob("once")
    blob.upload_from_string(b"first", if_generation_match=0)
    blob.upload_from_string(b"second", if_generation_match=0)  # a real GCS raises 412 here
    assert blob.download_as_bytes() == b"second"
    log = gcs_emulator.request_log_path.read_text(errors="replace")
    sent = [ln for ln in log.splitlines() if gcs_bucket in ln and "ifGenerationMatch=0" in ln]
    assert len(sent) == 2, log[-2000:]


# --------------------------------------------------------------------------------------------
# stop


def _assert_gone(server: Server) -> None:
    assert not any(pid_alive(pid) for pid in server.pids), server.pids
    # Free within a few seconds: the kernel may still hold a socket of the dead server for a
    # moment, and on a busy machine another process's outgoing connection can briefly take the
    # same local port (it is in the ephemeral range).
    deadline = time.monotonic() + 5
    while not port_is_free(server.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_is_free(server.port), f"port {server.port} still taken after the server stopped"
    assert not server.root_dir.exists()


def test_stop_kills_moto_and_frees_its_port() -> None:
    server = start_moto()
    assert pid_alive(server.pid)
    stop_server(server)
    _assert_gone(server)
    stop_server(server)  # idempotent


@pytest.mark.parametrize("kind", ["ceph", "azurite", "gcs"])
def test_stop_kills_server_and_frees_its_port(kind: str) -> None:
    from datashard.testing.servers import start_server

    server = start_server(kind)  # type: ignore[arg-type]
    assert all(pid_alive(pid) for pid in server.pids)
    stop_server(server)
    _assert_gone(server)


def test_command_line_writes_env_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    env_file = tmp_path / "moto.env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "datashard.testing.servers", "start", "moto",
         "--env-file", str(env_file)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert env_file.exists(), proc.communicate()[1].decode() if proc.poll() is not None else ""
        text = env_file.read_text()
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        values = dict(
            line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line
        )
        endpoint = values["DATASHARD_S3_ENDPOINT"]
        pid = int(values["DATASHARD_SERVER_PID"])
        assert endpoint.startswith("http://127.0.0.1:")
        assert pid_alive(pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not pid_alive(pid)
        assert port_is_free(int(endpoint.rsplit(":", 1)[1]))
        assert not env_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_servers_die_with_the_process_that_started_them() -> None:
    """A test run killed with SIGKILL leaves no server behind (PR_SET_PDEATHSIG)."""
    script = (
        "import time\n"
        "from datashard.testing.servers import start_moto\n"
        "server = start_moto()\n"
        "print(server.pid, server.port, server.root_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    root_text = ""
    try:
        assert parent.stdout is not None
        pid_text, port_text, root_text = parent.stdout.readline().decode().split()
        pid, port = int(pid_text), int(port_text)
        assert pid_alive(pid)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(pid)
        assert port_is_free(port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if root_text:
            shutil.rmtree(root_text, ignore_errors=True)


def test_a_server_that_exits_at_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = spawn(["sh", "-c", "echo 'bind: port taken (example)'; exit 3"], log)
    with pytest.raises(ServerStartError) as failed:
        wait_until(lambda: False, what="example server", timeout=30, processes=[proc], logs=[log])
    message = str(failed.value)
    assert "exited with status 3" in message
    assert "bind: port taken (example)" in message
