"""A one-node Ceph cluster for the lab, the tests and the benchmarks.

It owns one work directory and everything in it: the cluster's ceph.conf, its keyrings, one
monitor and one OSD (their data, logs, admin sockets and run files) and, through
``ceph_daemons``, the record of the daemons' PIDs. Two clusters in two work directories never
meet: each monitor listens on ports the kernel handed out free for it.

It must not touch /etc/ceph, /var/lib/ceph or systemd units, nor any process it did not record.

The OSD is ``memstore`` by default: it starts in about a second and keeps its data in RAM (about
twice what was written), so a killed or stopped OSD comes back empty. ``bluestore`` keeps data
in a sparse file under the work directory: it survives a SIGKILL and a restart (for the fault
tests) and needs little RAM, but the cluster takes several seconds to start.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from blockplane.errors import InvalidInput
from blockplane.lab.ceph_daemons import (
    STOP_GRACE_S,
    DaemonError,
    is_running,
    listening_ports,
    live_daemons,
    recorded_pids,
    signal_daemon,
    spawn_daemon,
    stop_daemons,
)
from blockplane.storage.ceph import check_name

# The daemons and tools a cluster needs; the tests skip where any is missing.
CEPH_BINARIES = ("ceph-mon", "ceph-osd", "monmaptool", "ceph", "rbd")
MON_ID = "a"
OSD_ID = 0
DAEMONS = (f"mon.{MON_ID}", f"osd.{OSD_ID}")
DEFAULT_POOL = "rbd"
DEFAULT_OSD_BYTES = 2 * 1024**3
START_TIMEOUT_S = 60.0
# A port handed out free can be taken again before the monitor binds it (another session's
# outgoing connection): then the monitor exits, and the cluster is made again on new ports.
PORT_ATTEMPTS = 3
LOG_TAIL_CHARS = 2000
ObjectStore = Literal["memstore", "bluestore"]

__all__ = [
    "CephCluster",
    "CephLabError",
    "CephUser",
    "ObjectStore",
    "conf_text",
    "keyring_text",
    "missing_binaries",
    "new_cephx_key",
    "recorded_pids",
    "start_cluster",
    "stop_cluster",
]


class CephLabError(DaemonError):
    title = "Lab Ceph cluster failed"


def missing_binaries() -> list[str]:
    return [name for name in CEPH_BINARIES if shutil.which(name) is None]


@dataclasses.dataclass(frozen=True)
class CephUser:
    """A cephx client user: ``name`` without the ``client.`` prefix, and its keyring file."""

    name: str
    keyring: Path
    key: str = dataclasses.field(repr=False)

    @property
    def entity(self) -> str:
        return f"client.{self.name}"


@dataclasses.dataclass(frozen=True)
class CephCluster:
    workdir: Path
    conf: Path
    admin_keyring: Path
    fsid: str
    address: str
    v2_port: int
    v1_port: int
    objectstore: ObjectStore = "memstore"

    @property
    def pids(self) -> dict[str, int]:
        """Daemon name (``mon.a``, ``osd.0``) -> PID, as recorded in the work directory."""
        return recorded_pids(self.workdir)

    @property
    def mon_address(self) -> str:
        """The monitor's msgr v2 address, ``v2:IP:PORT``."""
        return f"v2:{self.address}:{self.v2_port}"

    @property
    def mon_host(self) -> str:
        """The ``mon host`` value of ceph.conf: both protocols of the one monitor."""
        return f"[v2:{self.address}:{self.v2_port},v1:{self.address}:{self.v1_port}]"

    def command(self, tool: str, *arguments: str) -> list[str]:
        """Arguments that run ``ceph``, ``rbd`` or ``rados`` as client.admin of this cluster."""
        connection = ["--conf", str(self.conf), "--keyring", str(self.admin_keyring)]
        return [tool, *connection, "--id", "admin", *arguments]

    def env(self) -> dict[str, str]:
        """Environment that points a plain ``ceph``/``rbd``/``rados`` at this cluster as admin."""
        return {
            "CEPH_CONF": str(self.conf),
            "CEPH_ARGS": f"--keyring {self.admin_keyring} --id admin",
        }

    def run(self, tool: str, *arguments: str, timeout_s: float = 30.0) -> str:
        return _run(self.command(tool, *arguments), time.monotonic() + timeout_s, self.workdir)

    def create_pool(self, name: str, *, pg_num: int = 8, timeout_s: float = 30.0) -> None:
        """Create a replicated pool of size 1 and initialise it for RBD (this waits for a write)."""
        check_name(name, "pool")
        placement_groups = str(pg_num)
        create = ["osd", "pool", "create", name, placement_groups, placement_groups]
        self.run("ceph", *create, timeout_s=timeout_s)
        self.run("rbd", "pool", "init", name, timeout_s=timeout_s)

    def create_user(
        self, name: str, *, pools: tuple[str, ...] = (DEFAULT_POOL,), timeout_s: float = 30.0
    ) -> CephUser:
        """A cephx user with ``profile rbd`` on ``pools``; its keyring is written here (0600).

        Asking again for the same user and pools gives the same key.
        """
        check_name(name, "user")
        osd_caps = ", ".join(f"profile rbd pool={check_name(pool, 'pool')}" for pool in pools)
        entity = f"client.{name}"
        caps = ["mon", "profile rbd", "osd", osd_caps]
        output = self.run(
            "ceph", "auth", "get-or-create", entity, *caps, "--format", "json", timeout_s=timeout_s
        )
        try:
            key = str(json.loads(output)[0]["key"])
        except (ValueError, LookupError, TypeError) as error:
            raise CephLabError(f"ceph auth get-or-create {entity}: unexpected answer") from error
        keyring = self.workdir / f"ceph.{entity}.keyring"
        _write_private(keyring, keyring_text(entity, key, {}))
        return CephUser(name=name, keyring=keyring, key=key)

    def signal_daemon(self, name: str, signal_number: int) -> int:
        """Send a signal to ``mon.a`` or ``osd.0``: SIGSTOP/SIGCONT freeze and thaw it."""
        return signal_daemon(self.workdir, _check_daemon(name), signal_number)

    def stop_daemon(self, name: str, *, kill: bool = False) -> None:
        """Stop one daemon: SIGKILL at once with ``kill``, else SIGTERM then SIGKILL."""
        if kill:
            self.signal_daemon(name, signal.SIGKILL)
        stop_daemons(self.workdir, [_check_daemon(name)])

    def start_daemon(self, name: str) -> int:
        """Start a stopped daemon again with the same data (a memstore OSD comes back empty)."""
        if _check_daemon(name) in live_daemons(self.workdir):
            raise CephLabError(f"the lab Ceph daemon {name} already runs", code="ceph.lab_running")
        return spawn_daemon(self.workdir, name, _daemon_arguments(self.conf, name))

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the cluster reports HEALTH_OK: a restarted OSD must mount its store, boot and
        peer before I/O goes on (a bluestore replay takes long on a busy host)."""
        _wait_healthy(self, time.monotonic() + timeout_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        stop_cluster(self.workdir, grace_s=grace_s)


def new_cephx_key(secret: bytes | None = None, created: int | None = None) -> str:
    """A cephx secret as ceph-authtool writes it: AES type, creation time, 16 random bytes."""
    secret = os.urandom(16) if secret is None else secret
    created = int(time.time()) if created is None else created
    return base64.b64encode(struct.pack("<HIIH", 1, created, 0, len(secret)) + secret).decode()


def keyring_text(entity: str, key: str, caps: Mapping[str, str]) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {service} = "{cap}"' for service, cap in caps.items()]
    return "\n".join(lines) + "\n"


def conf_text(cluster: CephCluster, osd_bytes: int, objectstore: ObjectStore = "memstore") -> str:
    """ceph.conf for one monitor and one OSD; every daemon path lies under the work directory."""
    workdir, address = cluster.workdir, cluster.address
    daemon_paths = (
        f"run dir = {workdir}/run\n"
        f"admin socket = {workdir}/run/$cluster-$name.asok\n"
        f"pid file = {workdir}/run/$cluster-$name.pid\n"
        f"log file = {workdir}/log/$cluster-$name.log\n"
        f"crash dir = {workdir}/crash\n"
    )
    if objectstore == "memstore":
        store = f"osd objectstore = memstore\nmemstore device bytes = {osd_bytes}\n"
    else:
        store = (
            "osd objectstore = bluestore\n"
            "bluestore block create = true\n"
            f"bluestore block size = {osd_bytes}\n"
            "bluestore fsck on mkfs = false\n"
            # A small fixed cache instead of the default target of several GiB.
            "bluestore cache autotune = false\n"
            "bluestore cache size = 67108864\n"
        )
    return (
        "[global]\n"
        f"fsid = {cluster.fsid}\n"
        f"mon host = {cluster.mon_host}\n"
        "auth cluster required = cephx\n"
        "auth service required = cephx\n"
        "auth client required = cephx\n"
        "auth allow insecure global id reclaim = false\n"
        "mon allow pool size one = true\n"
        "mon warn on pool no redundancy = false\n"
        "mon warn on insecure global id reclaim allowed = false\n"
        "mon data avail warn = 2\n"
        "mon data avail crit = 1\n"
        "osd pool default size = 1\n"
        "osd pool default min size = 1\n"
        "osd pool default pg autoscale mode = off\n"
        "osd crush chooseleaf type = 0\n"
        "ms bind ipv6 = false\n"
        "\n[client]\n"
        # Not $cluster: the ceph command takes the cluster's name from the conf file's name.
        f"keyring = {workdir}/ceph.$name.keyring\n"
        "\n[mon]\n"
        f"mon data = {workdir}/mon.$id\n"
        f"mon cluster log file = {workdir}/log/$cluster.log\n"
        f"public addr = {address}\n"
        # Commit map changes (the OSD, its boot, the pool) at once instead of batching for 1 s.
        "paxos propose interval = 0.05\n"
        "paxos min wait = 0.01\n"
        # One try on a taken port (0 means none at all): start_cluster tries again on new ports.
        "ms bind retry count = 1\n"
        "ms bind retry delay = 1\n"
        f"{daemon_paths}"
        "\n[osd]\n"
        f"osd data = {workdir}/osd.$id\n"
        "keyring = $osd_data/keyring\n"
        "osd journal = $osd_data/journal\n"
        f"{store}"
        f"public addr = {address}\n"
        f"cluster addr = {address}\n"
        f"{daemon_paths}"
    )


def start_cluster(
    workdir: Path,
    *,
    address: str = "127.0.0.1",
    port: int | None = None,
    pool: str | None = DEFAULT_POOL,
    objectstore: ObjectStore = "memstore",
    osd_bytes: int = DEFAULT_OSD_BYTES,
    timeout_s: float = START_TIMEOUT_S,
) -> CephCluster:
    """Make and start a one-node cluster in ``workdir`` and return once it takes writes.

    ``workdir`` must be empty or missing. ``port`` fixes the monitor's msgr v2 port, the one to
    give a bare ``IP:PORT`` mon address and libvirt's ``<host port=...>`` (librados tries v2
    first on such a port, so the v1 port there works only after a logged protocol error); by
    default both ports are chosen free. ``pool`` is created and initialised for RBD unless it is
    None. ``osd_bytes`` is the OSD's capacity: memstore's limit (RAM, taken as data is written)
    or the size of bluestore's sparse block file.
    """
    missing = missing_binaries()
    if missing:
        message = f"Ceph is not installed here (missing: {', '.join(missing)})"
        raise CephLabError(message, code="ceph.not_installed")
    workdir = workdir.resolve()
    if any(character.isspace() for character in str(workdir)):
        raise InvalidInput(f"the cluster directory must have no spaces in its path: {workdir}")
    if workdir.exists() and any(workdir.iterdir()):
        raise InvalidInput(f"the cluster directory {workdir} is not empty")
    if pool is not None:
        check_name(pool, "pool")
    if objectstore not in ("memstore", "bluestore"):
        raise InvalidInput(f"unknown OSD object store {objectstore!r}: memstore or bluestore")
    deadline = time.monotonic() + timeout_s
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cluster = _start_monitor(workdir, address, port, objectstore, osd_bytes, deadline)
        _start_osd(cluster, deadline)
        if pool is not None:
            cluster.create_pool(pool, timeout_s=_left(deadline))
        _wait_healthy(cluster, deadline)
    except BaseException:
        stop_cluster(workdir)
        raise
    return cluster


def stop_cluster(workdir: Path, *, grace_s: float = STOP_GRACE_S) -> None:
    """Stop every daemon recorded in ``workdir``: the OSD first, then the monitor.

    Each gets SIGTERM, then SIGKILL after ``grace_s``; only processes whose recorded start time
    still matches are signalled. Safe to call twice, or after the starter crashed.
    """
    stop_daemons(workdir.resolve(), grace_s=grace_s)


def _start_monitor(
    workdir: Path,
    address: str,
    port: int | None,
    objectstore: ObjectStore,
    osd_bytes: int,
    deadline: float,
) -> CephCluster:
    fsid = str(uuid.uuid4())
    for attempt in range(1, PORT_ATTEMPTS + 1):
        v2_port = port if port is not None else _free_port(address)
        v1_port = _free_port(address, avoid=v2_port)
        cluster = CephCluster(
            workdir=workdir,
            conf=workdir / "ceph.conf",
            admin_keyring=workdir / "ceph.client.admin.keyring",
            fsid=fsid,
            address=address,
            v2_port=v2_port,
            v1_port=v1_port,
            objectstore=objectstore,
        )
        _write_layout(cluster, osd_bytes)
        monmap, mon_keyring = str(workdir / "monmap"), str(workdir / "mon.keyring")
        create_map = ["monmaptool", "--create", "--clobber", "--fsid", fsid]
        _run([*create_map, "--addv", MON_ID, cluster.mon_host, monmap], deadline, workdir)
        mon_mkfs = ["--mkfs", "-i", MON_ID, "--monmap", monmap, "--keyring", mon_keyring]
        _run(["ceph-mon", "--conf", str(cluster.conf), *mon_mkfs], deadline, workdir)
        name = f"mon.{MON_ID}"
        mon = spawn_daemon(workdir, name, _daemon_arguments(cluster.conf, name))
        if _wait_listening(mon, (v1_port, v2_port), deadline):
            return cluster
        log_tail = _tail(workdir / "log" / f"ceph-{name}.log")
        stop_cluster(workdir)
        if port is not None or attempt == PORT_ATTEMPTS or "bind" not in log_tail:
            raise CephLabError(f"the Ceph monitor did not start on {cluster.mon_host}: {log_tail}")
        shutil.rmtree(workdir / name, ignore_errors=True)
    raise AssertionError("unreachable")


def _start_osd(cluster: CephCluster, deadline: float) -> None:
    osd_uuid = str(uuid.uuid4())
    osd_mkfs = ["--mkfs", "-i", str(OSD_ID), "--osd-uuid", osd_uuid, "--no-mon-config"]
    _run(["ceph-osd", "--conf", str(cluster.conf), *osd_mkfs], deadline, cluster.workdir)
    cluster.run("ceph", "osd", "new", osd_uuid, str(OSD_ID), timeout_s=_left(deadline))
    name = f"osd.{OSD_ID}"
    spawn_daemon(cluster.workdir, name, _daemon_arguments(cluster.conf, name))


def _daemon_arguments(conf: Path, name: str) -> list[str]:
    kind, identity = name.split(".", 1)
    return [f"ceph-{kind}", "--conf", str(conf), "-f", "-i", identity]


def _check_daemon(name: str) -> str:
    if name not in DAEMONS:
        raise InvalidInput(f"no lab Ceph daemon {name!r}: one of {', '.join(DAEMONS)}")
    return name


def _write_layout(cluster: CephCluster, osd_bytes: int) -> None:
    workdir = cluster.workdir
    for directory in ("run", "log", "crash", f"osd.{OSD_ID}"):
        (workdir / directory).mkdir(exist_ok=True)
    cluster.conf.write_text(conf_text(cluster, osd_bytes, cluster.objectstore))
    all_caps = {"mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}
    osd_caps = {"mon": "allow profile osd", "osd": "allow *", "mgr": "allow profile osd"}
    admin = keyring_text("client.admin", new_cephx_key(), all_caps)
    osd = keyring_text(f"osd.{OSD_ID}", new_cephx_key(), osd_caps)
    _write_private(cluster.admin_keyring, admin)
    _write_private(workdir / f"osd.{OSD_ID}" / "keyring", osd)
    # The monitor's keyring seeds its auth database: itself, the admin and the OSD.
    mon = keyring_text("mon.", new_cephx_key(), {"mon": "allow *"})
    _write_private(workdir / "mon.keyring", mon + admin + osd)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)
    path.chmod(0o600)


def _wait_healthy(cluster: CephCluster, deadline: float) -> None:
    status = ""
    while time.monotonic() < deadline:
        output = cluster.run("ceph", "health", "--format", "json", timeout_s=_left(deadline))
        status = str(json.loads(output).get("status", ""))
        if status == "HEALTH_OK":
            return
        time.sleep(0.2)
    raise CephLabError(f"the Ceph cluster in {cluster.workdir} is not healthy: {status}")


def _run(arguments: list[str], deadline: float, workdir: Path) -> str:
    timeout_s = _left(deadline)
    shown = " ".join(arguments[:1] + _visible(arguments))
    try:
        completed = subprocess.run(
            arguments,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        message = f"{shown} did not answer within {timeout_s:.0f} s (cluster in {workdir})"
        raise CephLabError(message, code="ceph.lab_timeout") from error
    except OSError as error:
        raise CephLabError(f"{arguments[0]} could not run: {error}") from error
    if completed.returncode != 0:
        tail = completed.stderr.strip()[-LOG_TAIL_CHARS:]
        raise CephLabError(f"{shown} failed ({completed.returncode}): {tail}")
    return completed.stdout


def _visible(arguments: list[str]) -> list[str]:
    """The arguments without the connection options' values, for messages."""
    shown: list[str] = []
    hide_next = False
    for argument in arguments[1:]:
        if not hide_next and argument not in ("--conf", "--keyring", "--id"):
            shown.append(argument)
        hide_next = not hide_next and argument in ("--conf", "--keyring", "--id")
    return shown


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise CephLabError("the Ceph cluster ran out of time to start", code="ceph.lab_timeout")
    return left


def _free_port(address: str, avoid: int | None = None) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            chosen = int(probe.getsockname()[1])
        if chosen != avoid:
            return chosen


def _wait_listening(pid: int, ports: tuple[int, ...], deadline: float) -> bool:
    """True once ``pid`` listens on every port; False if it exits first (a port was taken)."""
    while time.monotonic() < deadline:
        if not is_running(pid, None):
            return False
        if set(ports) <= listening_ports(pid):
            return True
        time.sleep(0.02)
    message = f"the Ceph monitor (pid {pid}) did not listen within the timeout"
    raise CephLabError(message, code="ceph.lab_timeout")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"
