"""``lab down``: stop exactly what ``up`` started, by PID, then remove the lab dir.

Works from the state file and from the pid files the holder, libvirtd and the agent write
themselves, so it also cleans up after an ``up`` that crashed anywhere. A process counts as
the lab's only if it is the recorded one (PID and start time), wrote one of those pid files
(QEMU writes its own under the host's /run/libvirt/qemu, which is how a VM whose daemon died
is found), or lives in the mount namespace of a host whose recorded processes are still in
it; the machine's own namespace is never swept. Loop devices are detached only if their
backing file is a file of this lab dir (same device and inode). Idempotent: a second
``down`` finds nothing and succeeds.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blockplane.errors import InvalidInput, NotFound, OperationFailed
from blockplane.lab import capabilities, claims
from blockplane.lab.layout import STATE_FILE, HostLayout
from blockplane.lab.processes import (
    Recorded,
    from_pid_file,
    in_namespace,
    mount_namespace,
    terminate,
)
from blockplane.lab.state import LabState, load

CEPH_MODULE = "blockplane.lab.ceph"


@dataclass
class DownReport:
    dir: str
    found: bool
    stopped: list[int] = field(default_factory=list)
    vms_destroyed: list[str] = field(default_factory=list)
    loop_devices: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    removed: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the curious

    def timed(self, step: str, started: float) -> None:
        self.seconds[step] = round(time.monotonic() - started, 3)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Host:
    """One host's processes as found now (None: not running or not provably ours)."""

    name: str
    layout: HostLayout
    namespace: str | None
    holder: Recorded | None
    libvirtd: Recorded | None
    agent: Recorded | None

    def trusted_namespace(self) -> str | None:
        """The host's namespace, if one of its own processes provably still lives in it."""
        if self.namespace is None or self.namespace in _machine_namespaces():
            return None
        for process in (self.holder, self.libvirtd, self.agent):
            if process is not None and mount_namespace(process.pid) == self.namespace:
                return self.namespace
        return None


def _machine_namespaces() -> set[str | None]:
    return {mount_namespace(1), mount_namespace(os.getpid())}


def _running(process: Recorded | None) -> Recorded | None:
    return process if process is not None and process.running() else None


def _find_hosts(root: Path, state: LabState | None) -> list[_Host]:
    recorded = {host.name: host for host in state.hosts} if state else {}
    names = set(recorded) | {path.name for path in root.glob("host*") if path.is_dir()}
    found = []
    for name in sorted(names):
        layout = HostLayout(root / name)
        host = recorded.get(name)
        holder = _running(host.holder if host else None) or from_pid_file(layout.holder_pid_file)
        namespace = host.namespace if host and host.namespace else None
        if namespace is None and holder is not None:
            namespace = mount_namespace(holder.pid)

        def inside(process: Recorded | None, namespace: str | None = namespace) -> Recorded | None:
            if process is None or namespace is None:
                return None
            return process if mount_namespace(process.pid) == namespace else None

        found.append(
            _Host(
                name=name,
                layout=layout,
                namespace=namespace,
                holder=inside(holder),
                libvirtd=inside(
                    _running(host.libvirtd if host else None)
                    or from_pid_file(layout.libvirtd_pid_file)
                ),
                agent=inside(
                    _running(host.agent if host else None) or from_pid_file(layout.agent_pid_file)
                ),
            )
        )
    return found


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str] | None:
    """``argv``'s result, or None when it did not finish (a hung daemon must not stop
    ``down``: what it would have stopped is ended by PID afterwards)."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return None


def _running_vms(host: _Host) -> list[str]:
    listing = _run(["virsh", "-c", host.layout.libvirt_uri, "list", "--name"], 20)
    return listing.stdout.split() if listing and listing.returncode == 0 else []


def _destroy_vms(hosts: list[_Host], report: DownReport) -> None:
    """``virsh destroy`` every running VM through its own daemon, all at once (each takes a
    second or two: libvirt waits for QEMU to exit)."""
    targets = [
        (host, name)
        for host in hosts
        if host.libvirtd is not None and host.libvirtd.running()
        for name in _running_vms(host)
    ]

    def destroy(target: tuple[_Host, str]) -> str | None:
        host, name = target
        result = _run(["virsh", "-c", host.layout.libvirt_uri, "destroy", name], 60)
        return f"{host.name}/{name}" if result and result.returncode == 0 else None

    if targets:
        with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
            report.vms_destroyed.extend(name for name in pool.map(destroy, targets) if name)


def _stop(
    processes: Sequence[Recorded | None], report: DownReport, grace_s: float
) -> list[Recorded]:
    targets = [process for process in processes if process is not None and process.running()]
    stuck = terminate(targets, grace_s)
    report.stopped.extend(process.pid for process in targets if process not in stuck)
    return stuck


def _qemu_processes(host: _Host) -> list[Recorded]:
    found = []
    for pid_file in (host.layout.libvirt_dir("run") / "qemu").glob("*.pid"):
        process = from_pid_file(pid_file)
        if process is not None:
            found.append(process)
    return found


def _stop_processes(hosts: list[_Host], report: DownReport) -> list[Recorded]:
    namespaces = {host.name: host.trusted_namespace() for host in hosts}
    started = time.monotonic()
    stuck = _stop([host.agent for host in hosts], report, 15.0)
    report.timed("agents", started)
    started = time.monotonic()
    _destroy_vms(hosts, report)
    report.timed("vms", started)
    started = time.monotonic()
    stuck += _stop([host.libvirtd for host in hosts], report, 5.0)
    report.timed("libvirtd", started)
    started = time.monotonic()
    # QEMU runs in a mount namespace of its own (libvirt's private /dev), so it is found by
    # the pid file it writes under the host's /run/libvirt/qemu: a VM `virsh destroy` missed.
    stuck += _stop([_qemu for host in hosts for _qemu in _qemu_processes(host)], report, 10.0)
    for host in hosts:
        namespace = namespaces[host.name]
        if namespace is None:
            continue
        # A `lab exec` still running, anything else started in the host's namespace.
        others = [process for process in in_namespace(namespace) if process != host.holder]
        stuck += _stop(others, report, 10.0)
    stuck += _stop([host.holder for host in hosts], report, 5.0)
    report.timed("namespaces", started)
    return stuck


def _lab_files(root: Path) -> set[tuple[int, int]]:
    files = set()
    for directory, _subdirectories, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(directory, name))
                files.add((info.st_dev, info.st_ino))
    return files


def _detach_loop_devices(root: Path, report: DownReport) -> list[str]:
    listing = _run(["losetup", "--list", "--json", "--output", "NAME,BACK-INO,BACK-MAJ:MIN"], 60)
    if listing is None or listing.returncode != 0 or not listing.stdout.strip():
        return []
    files = _lab_files(root)
    left: list[str] = []
    for device in json.loads(listing.stdout).get("loopdevices", []):
        try:
            major, minor = (int(part) for part in str(device["back-maj:min"]).split(":"))
            backing = (os.makedev(major, minor), int(device["back-ino"]))
        except (KeyError, TypeError, ValueError):
            continue
        if backing not in files:
            continue
        detach = _run(["losetup", "--detach", device["name"]], 60)
        detached = detach is not None and detach.returncode == 0
        (report.loop_devices if detached else left).append(device["name"])
    return left


def _mounts_under(root: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4]
        for escape, character in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n")):
            target = target.replace(escape, character)
        path = Path(target.replace("\\134", "\\"))
        if path == root or path.is_relative_to(root):
            found.append(str(path))
    return sorted(found, key=len, reverse=True)


def _unmount(root: Path, report: DownReport) -> list[str]:
    for target in _mounts_under(root):
        result = _run(["umount", target], 60)
        if result is None or result.returncode != 0:
            _run(["umount", "--lazy", target], 60)
        report.unmounted.append(target)
    return _mounts_under(root)


def _stop_ceph(root: Path, state: LabState | None) -> str | None:
    workdir = Path(state.ceph["workdir"]) if state and state.ceph else root / "ceph"
    if not workdir.exists():
        return None
    try:
        module: Any = importlib.import_module(CEPH_MODULE)
    except ImportError:
        return f"{workdir} holds a Ceph cluster but {CEPH_MODULE} is missing to stop it"
    module.stop_cluster(workdir)
    return None


def _release_claims(root: Path, state: LabState | None) -> None:
    for address in state.claims if state else []:
        claims.release(address, root)
    if claims.CLAIMS_DIR.is_dir():
        for path in claims.CLAIMS_DIR.iterdir():
            claims.release(path.name, root)


def down(root: Path) -> DownReport:
    """Stop the lab at ``root`` and remove it; a missing lab is already down."""
    root = Path(os.path.abspath(root))
    report = DownReport(dir=str(root), found=root.exists())
    if not root.exists():
        return report
    try:
        state: LabState | None = load(root)
    except NotFound:
        state = None
        leftovers = {path.name for path in root.iterdir()} - {STATE_FILE + ".tmp"}
        if leftovers:
            raise InvalidInput(
                f"{root} is not a lab dir (no {STATE_FILE}); refusing to remove it",
                code="lab.not_a_lab",
            ) from None
    problems = []
    hosts = _find_hosts(root, state)
    stuck = _stop_processes(hosts, report)
    if stuck:
        problems.append(f"processes still running: {[process.pid for process in stuck]}")
    ceph_problem = _stop_ceph(root, state)
    if ceph_problem:
        problems.append(ceph_problem)
    loops_left = _detach_loop_devices(root, report)
    if loops_left:
        problems.append(f"loop devices still attached: {loops_left}")
    mounts_left = _unmount(root, report)
    if mounts_left:
        problems.append(f"still mounted: {mounts_left}")
    _release_claims(root, state)
    if problems:
        raise OperationFailed(
            f"the lab at {root} is not fully down ({'; '.join(problems)}); its dir is kept "
            "for another `scripts/lab down`",
            code="lab.down_incomplete",
        )
    for host in hosts:
        capabilities.keep(host.layout.libvirt_dir("cache"))
    shutil.rmtree(root)
    report.removed = True
    return report
