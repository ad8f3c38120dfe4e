"""Bringing up one lab host: its directories, namespace, libvirtd, agent and peers.

A host is a mount namespace kept alive by a holder process (``sleep infinity`` under
``unshare --mount``), so libvirtd can be restarted in it. Inside it the daemon's fixed paths,
BLOCKPLANE_HOME (:data:`HOST_DATA_PATH`) and the shared directory are bind mounts of the host's
own directories in the lab dir. Every process is recorded in the state file as soon as it runs.
Owns the daemon's configuration; must not stop anything (:mod:`blockplane.lab.teardown` does).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from blockplane.errors import OperationFailed
from blockplane.lab import capabilities
from blockplane.lab.execution import (
    blockplane_argv,
    host_environment,
    namespace_argv,
    run_in_host,
)
from blockplane.lab.layout import (
    AGENT_PORT,
    HOST_DATA_PATH,
    LIBVIRT_PATHS,
    SHARED_PATH,
)
from blockplane.lab.processes import Recorded, from_pid_file, mount_namespace
from blockplane.lab.state import HostState, LabState
from blockplane.lab.tls import CertificateFiles

START_TIMEOUT_S = 60.0
# What a copy of the host's /etc/libvirt must not bring along: the host's own domains,
# networks (an autostarted default network would collide between hosts), pools and secrets.
ETC_SKIPPED = {"qemu", "storage", "secrets", "nodedev", "nwfilter-bindings"}


def _set_keys(path: Path, settings: dict[str, str], comment: str) -> None:
    """Drop ``path``'s own settings of ``settings``' keys (a list may span lines), then append
    ``settings``."""
    text = path.read_text() if path.exists() else ""
    keys = "|".join(re.escape(key) for key in settings)
    kept, in_list = [], False
    for line in text.splitlines():
        if in_list:
            in_list = "]" not in line
            continue
        if re.match(rf"\s*({keys})\s*=", line):
            in_list = "[" in line and "]" not in line
            continue
        kept.append(line)
    added = [f"{key} = {value}" for key, value in settings.items()]
    path.write_text("\n".join([*kept, "", f"# {comment}", *added]) + "\n")


def _copy_skeleton(source: Path, target: Path) -> None:
    """``source``'s directories (modes and owners), none of its files."""
    for directory, subdirectories, _files in os.walk(source):
        relative = Path(directory).relative_to(source)
        made = target / relative
        made.mkdir(exist_ok=True)
        info = os.stat(directory)
        os.chown(made, info.st_uid, info.st_gid)
        os.chmod(made, info.st_mode & 0o7777)
        subdirectories[:] = [name for name in subdirectories
                             if not os.path.islink(os.path.join(directory, name))]


def _etc_ignored(directory: str, names: list[str]) -> set[str]:
    return ETC_SKIPPED if directory == "/etc/libvirt" else set()


def prepare_directories(state: LabState, host: HostState) -> None:
    layout = host.layout
    layout.root.mkdir(mode=0o711)
    layout.home.mkdir(mode=0o711)
    for path, name in LIBVIRT_PATHS:
        private = layout.libvirt_dir(name)
        if name == "etc":
            shutil.copytree(path, private, symlinks=True, ignore=_etc_ignored)
        elif name == "run" or not path.is_dir():
            private.mkdir(mode=0o755)
        else:
            _copy_skeleton(path, private)
    capabilities.seed(layout.libvirt_dir("cache"))
    etc = layout.libvirt_dir("etc")
    _set_keys(
        etc / "libvirtd.conf",
        {
            # libvirt refuses a migration between two daemons with the same host UUID.
            "host_uuid": f'"{host.host_uuid}"',
            "auth_unix_ro": '"none"',
            "auth_unix_rw": '"none"',
            "unix_sock_rw_perms": '"0700"',
            "log_outputs": '"3:file:/var/log/libvirt/libvirtd.log"',
        },
        f"blockplane lab: {host.name}",
    )
    low, high = host.migration_ports
    _set_keys(
        etc / "qemu.conf",
        {
            "stdio_handler": '"file"',  # no virtlogd per host
            "migration_address": f'"{host.address}"',
            "migration_host": f'"{host.address}"',
            "migration_port_min": str(low),
            "migration_port_max": str(high),
            # All hosts share one cgroup tree: a VM with the same name and domain id on two
            # daemons (as during a migration) would share a cgroup and its device list.
            "cgroup_controllers": "[ ]",
            # The shared dir is the lab's stand-in for NFS: a VM on it migrates without a copy.
            "shared_filesystems": f'[ "{SHARED_PATH}" ]',
        },
        f"blockplane lab: {host.name}",
    )


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise OperationFailed(f"{what} within {timeout_s:.0f} s", code="lab.start_failed")


def start_holder(state: LabState, host: HostState) -> None:
    """The process that keeps ``host``'s mount namespace alive; it writes its own pid file, so
    a crash of ``up`` right after starting it still leaves its PID behind for ``down``."""
    pid_file = host.layout.holder_pid_file
    # setsid -f: the holder is nobody's child, so it never lingers as a zombie of ours.
    subprocess.run(
        [
            "setsid", "-f", "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'echo $$ > "$1" && exec sleep infinity', "blockplane-lab-holder",
            str(pid_file),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        check=True, timeout=30,
    )  # fmt: skip
    holder: list[Recorded] = []

    def written() -> bool:
        process = from_pid_file(pid_file)
        if process is not None:
            holder.append(process)
        return process is not None

    _wait_for(written, f"{host.name}: the namespace holder did not start")
    host.holder = holder[0]
    host.namespace = mount_namespace(host.holder.pid)
    state.save()
    if host.namespace is None or host.namespace == mount_namespace(os.getpid()):
        raise OperationFailed(f"{host.name}: the holder is not in a namespace of its own",
                              code="lab.start_failed")


def _bind(state: LabState, host: HostState, source: Path, target: Path, *flags: str) -> None:
    host.mounts.append(str(target))
    state.save()
    run_in_host(state, host, ["mount", *flags, str(source), str(target)],
                what=f"mount {source} on {target}", timeout=30)


def bind_mounts(state: LabState, host: HostState) -> None:
    layout = host.layout
    if state.images.is_dir() and state.images.is_relative_to(HOST_DATA_PATH):
        # Bound into the host's own data dir before that covers the host's images.
        inside = layout.home / state.images.relative_to(HOST_DATA_PATH)
        inside.mkdir(parents=True, exist_ok=True)
        _bind(state, host, state.images, inside, "--bind")
    for path in (HOST_DATA_PATH, SHARED_PATH, *(path for path, _ in LIBVIRT_PATHS)):
        path.mkdir(parents=True, exist_ok=True)  # a mount point in the root namespace
    _bind(state, host, layout.home, HOST_DATA_PATH, "--rbind")
    _bind(state, host, state.layout.shared, SHARED_PATH, "--bind")
    for path, name in LIBVIRT_PATHS:
        _bind(state, host, layout.libvirt_dir(name), path, "--bind")


def _virsh_answers(uri: str) -> bool:
    result = subprocess.run(
        ["virsh", "-c", uri, "uri"], capture_output=True, check=False, timeout=30
    )
    return result.returncode == 0


def start_libvirtd(state: LabState, host: HostState) -> None:
    layout = host.layout
    output = layout.root / "libvirtd.out"
    # Pinned to one CPU: libvirt re-probes QEMU (seconds) when the host CPUID it reads differs
    # from its cache's, and on some virtual CPUs it differs from one CPU to the next (x2APIC id
    # in leaf 0x1f). libvirt gives each QEMU all host CPUs again, so guests are not pinned.
    with open(output, "ab") as log:
        result = subprocess.run(
            namespace_argv(host, [
                "taskset", "--cpu-list", "0", "libvirtd", "-d", "-p", "/run/libvirt/libvirtd.pid",
                "-f", "/etc/libvirt/libvirtd.conf",
            ], Path("/")),
            env=host_environment(state), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, check=False, timeout=START_TIMEOUT_S,
        )  # fmt: skip
    found: list[Recorded] = []

    def recorded() -> bool:
        process = from_pid_file(layout.libvirtd_pid_file)
        if process is not None and mount_namespace(process.pid) == host.namespace:
            found.append(process)
            return True
        return False

    if result.returncode != 0 and not recorded():
        raise OperationFailed(
            f"{host.name}: libvirtd exited {result.returncode}: {_tail(output)}",
            code="lab.start_failed",
        )
    _wait_for(recorded, f"{host.name}: libvirtd wrote no pid file")
    host.libvirtd = found[-1]
    state.save()
    _wait_for(lambda: _virsh_answers(layout.libvirt_uri),
              f"{host.name}: libvirtd did not answer on {layout.libvirt_socket}")


def start_agent(state: LabState, host: HostState, certificate: CertificateFiles) -> None:
    stdout = run_in_host(
        state, host,
        blockplane_argv(
            "--home", str(HOST_DATA_PATH), "--libvirt-uri", "qemu:///system",
            "agent", "start", "--listen", f"{host.address}:{AGENT_PORT}",
            "--tls-cert", str(certificate.certificate), "--tls-key", str(certificate.key),
            # The other hosts' libvirtd reach this one's on its socket in the lab dir.
            "--migration-uri", host.layout.libvirt_uri, "--json",
        ),
        what="agent start", timeout=120,
    )  # fmt: skip
    process = from_pid_file(host.layout.agent_pid_file)
    if process is None:
        raise OperationFailed(
            f"{host.name}: no agent runs after `agent start` said {stdout.strip()!r}; see "
            f"{host.layout.home / 'agent.log'}",
            code="lab.start_failed",
        )
    host.agent = process
    state.save()


def add_peers(state: LabState, host: HostState) -> None:
    assert state.ca is not None
    for other in state.hosts:
        if other.name == host.name or other.name in host.peers:
            continue
        run_in_host(
            state, host,
            blockplane_argv(
                "peer", "add", other.name, "--api", f"https://{other.address}:{AGENT_PORT}",
                "--token-file", str(other.layout.token_file), "--ca-file", str(state.ca),
            ),
            what=f"peer add {other.name}", timeout=120,
        )  # fmt: skip
        host.peers.append(other.name)
        state.save()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
