"""A throw-away single-node Ceph cluster serving S3 through the RADOS Gateway.

One monitor, one OSD on ``memstore`` (objects live in the OSD's memory, nothing on disk but
small metadata), and one ``radosgw`` with the beast front end on 127.0.0.1. Authentication
inside the cluster is off (``auth ... required = none``), which is why the ``ms ... mode``
settings must allow ``crc``: without them radosgw cannot reach the monitor. No manager daemon
runs; nothing here needs one.

Every path (config, keyring, monitor store, OSD data, admin sockets, logs) is under one root
directory, so several clusters can run side by side on one machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from datashard.testing.server_process import (
    HOST,
    ServerStartError,
    describe_logs,
    free_port,
    http_status,
    run_checked,
    spawn,
    stop_pids,
    wait_until,
)

#: The programs the Debian packages radosgw, ceph-mon, ceph-osd (and their dependencies
#: ceph-common, ceph-base) provide; scripts/install-test-deps.sh installs them.
CEPH_PROGRAMS = (
    "ceph",
    "ceph-authtool",
    "monmaptool",
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
)

_CONF = """\
[global]
fsid = {fsid}
mon host = [v2:{host}:{mon_port}]
mon initial members = a
public addr = {host}
cluster addr = {host}
public network = {host}/32
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms service mode = crc secure
ms cluster mode = crc secure
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
keyring = {root}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
# Commit monitor changes (pool creation: 2 per pool) at once instead of once a second.
paxos propose interval = 0.01
paxos min wait = 0.01

[mon]
mon data = {root}/mon/$cluster-$id

[osd]
osd data = {root}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd mon shutdown timeout = 1

[client.rgw]
rgw frontends = beast endpoint={host}:{rgw_port} tcp_nodelay=1
rgw data = {root}/rgw
rgw enable usage log = false
rgw dynamic resharding = false
"""


@dataclass(frozen=True, kw_only=True)
class CephCluster:
    """A running cluster: where it listens, its processes, and its files."""

    endpoint_url: str
    rgw_port: int
    mon_port: int
    #: radosgw, OSD, monitor: the order to stop them in.
    pids: tuple[int, ...]
    root_dir: Path
    conf_path: Path
    #: The radosgw log (requests and errors).
    log_path: Path
    log_paths: tuple[Path, ...]


def _env() -> dict[str, str]:
    """The environment for Ceph's own tools: free of any virtualenv's Python settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CEPH_"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def _check_installed() -> None:
    missing = [name for name in CEPH_PROGRAMS if shutil.which(name) is None]
    if missing:
        raise ServerStartError(
            f"Ceph programs not found: {', '.join(missing)}; run scripts/install-test-deps.sh "
            "(installs the Debian packages radosgw ceph-mon ceph-osd)"
        )


def _osd_up(conf: Path, setup_log: Path, osd_id: str) -> bool:
    out = run_checked(
        ["ceph", "-c", str(conf), "--connect-timeout", "10", "osd", "dump", "-f", "json"],
        setup_log,
        env=_env(),
        timeout=30,
    )
    osds = json.loads(out).get("osds", [])
    return any(str(osd.get("osd")) == osd_id and osd.get("up") == 1 for osd in osds)


def start_ceph_cluster(
    root_dir: Path,
    *,
    access_key: str,
    secret_key: str,
    user: str = "datashard",
    memstore_bytes: int = 16 * 1024**3,
    timeout: float = 180.0,
) -> CephCluster:
    """Start a monitor, an OSD and radosgw under ``root_dir``; make an S3 user with these keys.

    Returns once radosgw answers HTTP and the user exists. Raises ServerStartError with the
    tail of the logs when a step fails or the whole start-up takes longer than ``timeout``
    seconds; the processes started so far are stopped first.
    """
    _check_installed()
    deadline = time.monotonic() + timeout
    root = root_dir.resolve()
    for sub in ("run", "log", "mon", "osd", "rgw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "ceph.conf"
    setup_log = root / "log" / "setup.log"
    mon_port, rgw_port = free_port(), free_port()
    while rgw_port == mon_port:
        rgw_port = free_port()
    fsid = str(uuid.uuid4())
    conf.write_text(
        _CONF.format(
            fsid=fsid,
            host=HOST,
            mon_port=mon_port,
            rgw_port=rgw_port,
            root=root,
            memstore_bytes=memstore_bytes,
        )
    )
    env = _env()
    started: list[subprocess.Popen[bytes]] = []
    logs = [setup_log]

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServerStartError(
                f"Ceph did not start within {timeout:g} s\n" + describe_logs(logs)
            )
        return left

    try:
        run_checked(
            ["ceph-authtool", "--create-keyring", str(root / "keyring"), "--gen-key",
             "-n", "mon.", "--cap", "mon", "allow *"],
            setup_log, env=env, timeout=remaining(),
        )  # fmt: skip
        run_checked(
            ["monmaptool", "--create", "--addv", "a", f"[v2:{HOST}:{mon_port}]",
             "--fsid", fsid, str(root / "monmap")],
            setup_log, env=env, timeout=remaining(),
        )  # fmt: skip
        run_checked(
            ["ceph-mon", "-c", str(conf), "--mkfs", "-i", "a", "--monmap", str(root / "monmap")],
            setup_log, env=env, timeout=remaining(),
        )  # fmt: skip

        logs += [root / "log" / "mon.a.out", root / "log" / "mon.a.log"]
        mon = spawn(["ceph-mon", "-f", "-c", str(conf), "-i", "a"], logs[-2], env=env)
        started.append(mon)
        osd_uuid = str(uuid.uuid4())
        osd_id = run_checked(
            ["ceph", "-c", str(conf), "--connect-timeout", "20", "osd", "new", osd_uuid],
            setup_log, env=env, timeout=remaining(),
        ).strip()  # fmt: skip
        if not osd_id.isdigit():
            raise ServerStartError(f"`ceph osd new` printed {osd_id!r}, expected an OSD id")
        (root / "osd" / f"ceph-{osd_id}").mkdir(exist_ok=True)
        run_checked(
            ["ceph-osd", "-c", str(conf), "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid],
            setup_log, env=env, timeout=remaining(),
        )  # fmt: skip

        logs += [root / "log" / f"osd.{osd_id}.out", root / "log" / f"osd.{osd_id}.log"]
        osd = spawn(["ceph-osd", "-f", "-c", str(conf), "-i", osd_id], logs[-2], env=env)
        started.append(osd)
        wait_until(
            lambda: _osd_up(conf, setup_log, osd_id),
            what=f"Ceph OSD {osd_id}",
            timeout=remaining(),
            processes=started,
            logs=logs,
            interval=0.3,
        )

        rgw_log = root / "log" / "client.rgw.log"
        logs += [root / "log" / "client.rgw.out", rgw_log]
        rgw = spawn(["radosgw", "-f", "-c", str(conf), "-n", "client.rgw"], logs[-2], env=env)
        started.append(rgw)
        url = f"http://{HOST}:{rgw_port}"
        wait_until(
            lambda: http_status(url + "/") == 200,
            what=f"Ceph radosgw on {url}",
            timeout=remaining(),
            processes=started,
            logs=logs,
            interval=0.2,
        )
        run_checked(
            ["radosgw-admin", "-c", str(conf), "-n", "client.admin", "user", "create",
             f"--uid={user}", f"--display-name={user}", f"--access-key={access_key}",
             f"--secret={secret_key}"],
            setup_log, env=env, timeout=remaining(),
        )  # fmt: skip
    except BaseException:
        stop_pids([p.pid for p in reversed(started)], grace=5.0)
        raise
    return CephCluster(
        endpoint_url=url,
        rgw_port=rgw_port,
        mon_port=mon_port,
        pids=(rgw.pid, osd.pid, mon.pid),
        root_dir=root,
        conf_path=conf,
        log_path=rgw_log,
        log_paths=tuple(logs),
    )


def stop_ceph_cluster(pids: tuple[int, ...], grace: float = 10.0) -> None:
    """Stop radosgw, then the OSD, then the monitor (each by PID, SIGTERM then SIGKILL)."""
    for pid in pids:
        stop_pids([pid], grace=grace)
