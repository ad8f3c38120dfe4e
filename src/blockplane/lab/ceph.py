"""A one-node Ceph cluster for the lab, the tests and the benchmarks.

It owns one work directory and everything in it: the cluster's ceph.conf, its keyrings, one
monitor and one memstore OSD (their data, logs, admin sockets and run files), and ``pids.json``,
the daemons it started. Two clusters in two work directories never meet: each monitor listens on
ports the kernel handed out free for it.

It must not touch /etc/ceph, /var/lib/ceph, systemd units or any process it did not record in
its work directory: it stops daemons by their recorded PID (checked against the process's start
time, so a reused PID is left alone), SIGTERM first and SIGKILL after a grace period.

The memstore OSD keeps its data in RAM: a SIGKILL loses whatever was written since it started,
and ``memstore device bytes`` is only the capacity it reports, not memory taken up front.
"""

from __future__ import annotations

import base64
import contextlib
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

from blockplane.errors import InvalidInput, OperationFailed
from blockplane.storage.ceph import check_name

# The daemons and tools a cluster needs; the tests skip where any is missing.
CEPH_BINARIES = ("ceph-mon", "ceph-osd", "monmaptool", "ceph", "rbd")
MON_ID = "a"
OSD_ID = 0
PIDS_FILE = "pids.json"
DEFAULT_POOL = "rbd"
DEFAULT_MEMSTORE_BYTES = 2 * 1024**3
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# A port handed out free can be taken again before the monitor binds it (another session's
# outgoing connection): then the monitor exits, and the cluster is made again on new ports.
PORT_ATTEMPTS = 3
LOG_TAIL_CHARS = 2000


class CephLabError(OperationFailed):
    code = "ceph.lab"
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
    pids: Mapping[str, int]

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
        return [
            tool,
            "--conf",
            str(self.conf),
            "--keyring",
            str(self.admin_keyring),
            "--id",
            "admin",
            *arguments,
        ]

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
        self.run(
            "ceph", "osd", "pool", "create", name, str(pg_num), str(pg_num), timeout_s=timeout_s
        )
        self.run("rbd", "pool", "init", name, timeout_s=timeout_s)

    def create_user(
        self, name: str, *, pools: tuple[str, ...] = (DEFAULT_POOL,), timeout_s: float = 30.0
    ) -> CephUser:
        """A cephx user with ``profile rbd`` on ``pools``; its keyring is written here (0600)."""
        check_name(name, "user")
        for pool in pools:
            check_name(pool, "pool")
        osd_caps = ", ".join(f"profile rbd pool={pool}" for pool in pools)
        output = self.run(
            "ceph",
            "auth",
            "get-or-create",
            f"client.{name}",
            "mon",
            "profile rbd",
            "osd",
            osd_caps,
            "--format",
            "json",
            timeout_s=timeout_s,
        )
        try:
            key = str(json.loads(output)[0]["key"])
        except (ValueError, LookupError, TypeError) as error:
            raise CephLabError(
                f"ceph auth get-or-create client.{name}: unexpected answer"
            ) from error
        keyring = self.workdir / f"ceph.client.{name}.keyring"
        _write_private(keyring, keyring_text(f"client.{name}", key, {}))
        return CephUser(name=name, keyring=keyring, key=key)

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


def conf_text(
    workdir: Path, fsid: str, address: str, v2_port: int, v1_port: int, memstore_bytes: int
) -> str:
    """ceph.conf for one monitor and one memstore OSD; every daemon path lies under ``workdir``."""
    daemon_paths = (
        f"run dir = {workdir}/run\n"
        f"admin socket = {workdir}/run/$cluster-$name.asok\n"
        f"pid file = {workdir}/run/$cluster-$name.pid\n"
        f"log file = {workdir}/log/$cluster-$name.log\n"
        f"crash dir = {workdir}/crash\n"
    )
    return (
        "[global]\n"
        f"fsid = {fsid}\n"
        f"mon host = [v2:{address}:{v2_port},v1:{address}:{v1_port}]\n"
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
        "osd objectstore = memstore\n"
        f"memstore device bytes = {memstore_bytes}\n"
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
    memstore_bytes: int = DEFAULT_MEMSTORE_BYTES,
    timeout_s: float = START_TIMEOUT_S,
) -> CephCluster:
    """Make and start a one-node cluster in ``workdir`` and return once it takes writes.

    ``port`` fixes the monitor's msgr v2 port, the one to give a bare ``IP:PORT`` mon address
    and libvirt's ``<host port=...>`` (librados tries v2 first on such a port, so the v1 port
    there works only after a logged protocol error); by default both ports are chosen free.
    ``pool`` is created and initialised for RBD unless it is None.
    """
    missing = missing_binaries()
    if missing:
        raise CephLabError(
            f"Ceph is not installed here (missing: {', '.join(missing)})", code="ceph.not_installed"
        )
    workdir = workdir.resolve()
    if any(character.isspace() for character in str(workdir)):
        raise InvalidInput(f"the cluster directory must have no spaces in its path: {workdir}")
    if pool is not None:
        check_name(pool, "pool")
    if _live_processes(workdir):
        raise CephLabError(f"a cluster already runs in {workdir}", code="ceph.lab_running")
    deadline = time.monotonic() + timeout_s
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cluster = _make_and_start(workdir, address, port, memstore_bytes, deadline)
        if pool is not None:
            cluster.create_pool(pool, timeout_s=_left(deadline))
        _wait_healthy(cluster, deadline)
    except BaseException:
        stop_cluster(workdir)
        raise
    return cluster


def _make_and_start(
    workdir: Path, address: str, port: int | None, memstore_bytes: int, deadline: float
) -> CephCluster:
    fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    conf = workdir / "ceph.conf"
    for attempt in range(1, PORT_ATTEMPTS + 1):
        v2_port = port if port is not None else _free_port(address)
        v1_port = _free_port(address, avoid=v2_port)
        cluster = CephCluster(
            workdir,
            conf,
            workdir / "ceph.client.admin.keyring",
            fsid,
            address,
            v2_port,
            v1_port,
            {},
        )
        _write_layout(cluster, memstore_bytes)
        monmap = str(workdir / "monmap")
        mon_keyring = str(workdir / "mon.keyring")
        create_map = ["monmaptool", "--create", "--clobber", "--fsid", fsid]
        _run([*create_map, "--addv", MON_ID, cluster.mon_host, monmap], deadline, workdir)
        mon_mkfs = ["--mkfs", "-i", MON_ID, "--monmap", monmap, "--keyring", mon_keyring]
        _run(["ceph-mon", "--conf", str(conf), *mon_mkfs], deadline, workdir)
        mon = _spawn(
            workdir, f"mon.{MON_ID}", ["ceph-mon", "--conf", str(conf), "-f", "-i", MON_ID]
        )
        if _wait_listening(mon, (v1_port, v2_port), deadline):
            break
        log_tail = _tail(workdir / "log" / f"ceph-mon.{MON_ID}.log")
        stop_cluster(workdir)
        if port is not None or attempt == PORT_ATTEMPTS or "bind" not in log_tail:
            raise CephLabError(f"the Ceph monitor did not start on {cluster.mon_host}: {log_tail}")
        shutil.rmtree(workdir / f"mon.{MON_ID}", ignore_errors=True)

    osd_mkfs = ["--mkfs", "-i", str(OSD_ID), "--osd-uuid", osd_uuid, "--no-mon-config"]
    _run(["ceph-osd", "--conf", str(conf), *osd_mkfs], deadline, workdir)
    cluster.run("ceph", "osd", "new", osd_uuid, str(OSD_ID), timeout_s=_left(deadline))
    osd_run = ["ceph-osd", "--conf", str(conf), "-f", "-i", str(OSD_ID)]
    osd = _spawn(workdir, f"osd.{OSD_ID}", osd_run)
    return dataclasses.replace(cluster, pids={f"mon.{MON_ID}": mon, f"osd.{OSD_ID}": osd})


def _write_layout(cluster: CephCluster, memstore_bytes: int) -> None:
    workdir = cluster.workdir
    for directory in ("run", "log", "crash", f"osd.{OSD_ID}"):
        (workdir / directory).mkdir(exist_ok=True)
    cluster.conf.write_text(
        conf_text(
            workdir, cluster.fsid, cluster.address, cluster.v2_port, cluster.v1_port, memstore_bytes
        )
    )
    admin_key, osd_key = new_cephx_key(), new_cephx_key()
    all_caps = {"mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}
    osd_caps = {"mon": "allow profile osd", "osd": "allow *", "mgr": "allow profile osd"}
    admin = keyring_text("client.admin", admin_key, all_caps)
    osd = keyring_text(f"osd.{OSD_ID}", osd_key, osd_caps)
    _write_private(workdir / "ceph.client.admin.keyring", admin)
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


# -- processes -------------------------------------------------------------------------------


def _spawn(workdir: Path, name: str, arguments: list[str]) -> int:
    with (workdir / "log" / f"{name}.stdout").open("ab") as output:
        process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Recorded before anything waits on the daemon, so stop_cluster finds it after any crash.
    _record_pid(workdir, name, process.pid)
    return process.pid


def _record_pid(workdir: Path, name: str, pid: int) -> None:
    records = _read_pids(workdir)
    records[name] = {"pid": pid, "start_time": _start_time(pid)}
    temporary = workdir / f"{PIDS_FILE}.tmp"
    temporary.write_text(json.dumps(records, indent=2))
    temporary.replace(workdir / PIDS_FILE)


def _read_pids(workdir: Path) -> dict[str, dict[str, int | None]]:
    try:
        loaded = json.loads((workdir / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def recorded_pids(workdir: Path) -> dict[str, int]:
    """Every daemon PID the cluster in ``workdir`` recorded, running or not."""
    return {name: int(str(record["pid"])) for name, record in _read_pids(workdir).items()}


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may hold spaces, so split after it.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _is_running(pid: int, start_time: int | None) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and (start_time is None or _start_time(pid) == start_time)


def _live_processes(workdir: Path) -> dict[str, int]:
    live = {}
    for name, record in _read_pids(workdir).items():
        pid, start_time = record.get("pid"), record.get("start_time")
        if isinstance(pid, int) and _is_running(pid, start_time):
            live[name] = pid
    return live


def stop_cluster(workdir: Path, *, grace_s: float = STOP_GRACE_S) -> None:
    """Stop every daemon recorded in ``workdir``: OSDs first, then the monitor.

    Each gets SIGTERM, then SIGKILL after ``grace_s``; only processes whose recorded start time
    still matches are signalled. Safe to call twice, or after a crash of the process that started
    the cluster.
    """
    workdir = workdir.resolve()
    records = _read_pids(workdir)
    for kind in ("osd.", "mon."):
        _terminate({name: rec for name, rec in records.items() if name.startswith(kind)}, grace_s)
    # Whatever kind a future daemon is, it is stopped too.
    _terminate(
        {name: record for name, record in records.items() if not name.startswith(("osd.", "mon."))},
        grace_s,
    )


def _terminate(records: Mapping[str, Mapping[str, int | None]], grace_s: float) -> None:
    targets = []
    for record in records.values():
        pid, start_time = record.get("pid"), record.get("start_time")
        if isinstance(pid, int) and _is_running(pid, start_time):
            targets.append((pid, start_time))
    for pid, _ in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_is_running(*target) for target in targets):
        time.sleep(0.05)
    for pid, start_time in targets:
        if _is_running(pid, start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    killed_by = time.monotonic() + grace_s
    while any(_is_running(*target) for target in targets):
        if time.monotonic() > killed_by:
            raise CephLabError(f"Ceph daemons {[pid for pid, _ in targets]} outlived SIGKILL")
        time.sleep(0.02)


# -- helpers ---------------------------------------------------------------------------------


def _run(arguments: list[str], deadline: float, workdir: Path) -> str:
    timeout_s = _left(deadline)
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
        raise CephLabError(
            f"{' '.join(arguments[:1] + _visible(arguments))} did not answer within "
            f"{timeout_s:.0f} s (cluster in {workdir})",
            code="ceph.lab_timeout",
        ) from error
    except OSError as error:
        raise CephLabError(f"{arguments[0]} could not run: {error}") from error
    if completed.returncode != 0:
        raise CephLabError(
            f"{' '.join(arguments[:1] + _visible(arguments))} failed "
            f"({completed.returncode}): {completed.stderr.strip()[-LOG_TAIL_CHARS:]}"
        )
    return completed.stdout


def _visible(arguments: list[str]) -> list[str]:
    """The arguments after the common connection options, for messages."""
    skip = {"--conf", "--keyring", "--id"}
    shown: list[str] = []
    hide_next = False
    for argument in arguments[1:]:
        if hide_next:
            hide_next = False
        elif argument in skip:
            hide_next = True
        else:
            shown.append(argument)
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
        if not _is_running(pid, None):
            return False
        if set(ports) <= _listening_ports(pid):
            return True
        time.sleep(0.02)
    raise CephLabError(
        f"the Ceph monitor (pid {pid}) did not listen within the timeout", code="ceph.lab_timeout"
    )


def _listening_ports(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(descriptor)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"
