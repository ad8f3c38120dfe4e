"""``lab up``: check everything, then start the hosts, their agents, their peers and Ceph.

Bad input and missing tools are refused before anything is made (exit 2). From the first
directory on, every step is recorded in the state file before or as it happens, so ``down``
can undo a half-done ``up``; an ``up`` that fails tears down what it started itself. The
failpoints ``lab.after_mounts``, ``lab.after_libvirtd`` (first host) and ``lab.after_agents``
let a test SIGKILL ``up`` half-way (``BLOCKPLANE_FAILPOINTS``, see blockplane.failpoints).
Owns the order of the steps; the steps themselves live in :mod:`blockplane.lab.hostsetup`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from blockplane.errors import BlockplaneError, CapabilityMissing, Conflict, InvalidInput
from blockplane.failpoints import failpoint
from blockplane.lab import claims, hostsetup
from blockplane.lab.ceph_pools import create_shared_pools
from blockplane.lab.execution import blockplane_argv
from blockplane.lab.layout import (
    AUTO_BASES,
    DEFAULT_BASE_ADDRESS,
    MAX_HOSTS,
    LabLayout,
    check_base_address,
    check_lab_dir,
    host_address,
    host_name,
    migration_ports,
)
from blockplane.lab.state import HostState, LabState
from blockplane.lab.tls import CertificateFiles, make_ca, make_host_certificate

TOOLS = ("unshare", "nsenter", "setsid", "taskset", "mount", "libvirtd", "virsh", "losetup")
CEPH_MODULE = "blockplane.lab.ceph"
CEPH_CLAIM = "ceph"


def default_images() -> Path:
    return Path(os.environ.get("BLOCKPLANE_IMAGES") or "/var/lib/blockplane/images").resolve()


def agents_supported() -> str | None:
    """None when this blockplane has what lab agents need, else what is missing."""
    start = subprocess.run(
        blockplane_argv("agent", "start", "--help"),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if "--tls-cert" not in start.stdout:
        return "`blockplane agent start --tls-cert/--tls-key`"
    peer = subprocess.run(
        blockplane_argv("peer", "add", "--help"),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if peer.returncode != 0 or "--ca-file" not in peer.stdout:
        return "`blockplane peer add ... --ca-file`"
    return None


def _check_request(root: Path, hosts: int, agents: bool, ceph: bool) -> None:
    if not 1 <= hosts <= MAX_HOSTS:
        raise InvalidInput(f"--hosts {hosts}: a lab has 1..{MAX_HOSTS} hosts")
    check_lab_dir(root, hosts)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        state_file = LabLayout(root).state_file
        if state_file.exists():
            raise Conflict(
                f"a lab is already at {root}: `scripts/lab show --dir {root}`, or "
                f"`scripts/lab down --dir {root}` first",
                code="lab.exists",
            )
        raise InvalidInput(f"--dir {root} exists and is not empty", code="lab.dir_not_empty")
    if os.geteuid() != 0:
        raise InvalidInput("the lab needs root (mount namespaces, libvirtd)", code="lab.root")
    needed = [*TOOLS, *(("openssl",) if agents else ())]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise CapabilityMissing(
            f"the lab needs {', '.join(missing)} on PATH: run `make setup`",
            code="lab.tool_missing",
        )
    if agents:
        lacking = agents_supported()
        if lacking is not None:
            raise CapabilityMissing(
                f"this blockplane has no {lacking} yet, which the lab's agents need; "
                "run `scripts/lab up --no-agents` for hosts without agents",
                code="lab.agents_unsupported",
            )
    if ceph and importlib.util.find_spec(CEPH_MODULE) is None:
        raise CapabilityMissing(
            f"--ceph needs {CEPH_MODULE}, which this tree does not have",
            code="lab.ceph_unsupported",
        )


def _claim_addresses(state: LabState, hosts: int, base: str) -> None:
    bases = AUTO_BASES if base == "auto" else (base,)
    last_error: Conflict | None = None
    for candidate in bases:
        check_base_address(candidate, hosts)
        try:
            for index in range(1, hosts + 1):
                address = host_address(candidate, index)
                state.claims.append(address)
                state.save()
                claims.claim(address, state.root, check_port=state.agents)
        except Conflict as error:
            last_error = error
            for address in state.claims:
                claims.release(address, state.root)
            state.claims.clear()
            state.save()
            continue
        state.base_address = candidate
        return
    assert last_error is not None
    if base == "auto":
        raise Conflict(f"no free address block for {hosts} hosts: {last_error.message}",
                       code="lab.address_in_use")
    raise last_error


def _start_ceph(state: LabState) -> Any:
    workdir = state.layout.ceph_dir
    state.ceph = {"workdir": str(workdir), "conf": None, "admin_keyring": None, "pids": []}
    state.save()
    module: Any = importlib.import_module(CEPH_MODULE)
    cluster = module.start_cluster(workdir)
    pids = cluster.pids
    state.ceph.update(
        conf=str(cluster.conf),
        admin_keyring=str(cluster.admin_keyring),
        pids={str(k): int(v) for k, v in pids.items()} if isinstance(pids, dict)
        else [int(pid) for pid in pids],
    )
    state.save()
    return cluster


def _each_host(state: LabState, step: Callable[[HostState], None]) -> None:
    with ThreadPoolExecutor(max_workers=len(state.hosts)) as pool:
        for done in [pool.submit(step, host) for host in state.hosts]:
            done.result()


def up(
    root: Path,
    hosts: int = 2,
    *,
    base_address: str = DEFAULT_BASE_ADDRESS,
    agents: bool = True,
    ceph: bool = False,
    images: Path | None = None,
) -> LabState:
    """Start a lab of ``hosts`` hosts at ``root`` and return its state (see ``show``)."""
    root = Path(os.path.abspath(root))
    _check_request(root, hosts, agents, ceph)
    if base_address != "auto":
        check_base_address(base_address, hosts)
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    state = LabState(root=root, base_address=base_address, agents=agents,
                     images=images or default_images())
    state.save()
    try:
        _bring_up(state, hosts, base_address, ceph)
    except BaseException as failure:
        state.status = "failed"
        state.save()
        from blockplane.lab.teardown import down

        try:
            down(root)
        except BlockplaneError as error:
            failure.add_note(f"and `down` could not clean up: {error.message}")
        raise
    return state


def _bring_up(state: LabState, hosts: int, base_address: str, ceph: bool) -> None:
    _claim_addresses(state, hosts, base_address)
    if ceph:  # the one-node cluster listens on fixed ports of 127.0.0.1: one per machine
        state.claims.append(CEPH_CLAIM)
        state.save()
        claims.claim(CEPH_CLAIM, state.root, check_port=False)
    state.layout.shared.mkdir(mode=0o711)
    for index in range(1, hosts + 1):
        address = host_address(state.base_address, index)
        state.hosts.append(
            HostState(
                name=host_name(index), index=index, address=address,
                root=state.layout.host(host_name(index)).root,
                host_uuid=str(uuid.uuid4()), migration_ports=migration_ports(address),
            )
        )  # fmt: skip
    state.save()
    if state.agents:
        ca = make_ca(state.layout.ca_dir)
        state.ca = ca.certificate
        state.save()
    for host in state.hosts:
        hostsetup.prepare_directories(state, host)
        hostsetup.start_holder(state, host)
        hostsetup.bind_mounts(state, host)
        failpoint("lab.after_mounts")
        hostsetup.start_libvirtd(state, host)
        failpoint("lab.after_libvirtd")
    if state.agents:
        # Each agent start and peer registration is mostly Python starting up: in parallel.
        def start_agent(host: HostState) -> None:
            issued = make_host_certificate(ca, host.layout.tls_dir, host.name, host.address)
            hostsetup.start_agent(state, host, issued)

        _each_host(state, start_agent)
        failpoint("lab.after_agents")
        _each_host(state, lambda host: hostsetup.add_peers(state, host))
    if ceph:
        cluster = _start_ceph(state)
        if state.agents:  # every host gets the rbd pool `shared` on it
            assert state.ceph is not None
            state.ceph["shared_pool"] = create_shared_pools(state, cluster)
            state.save()
    state.status = "up"
    state.save()


def restart(root: Path, name: str, daemon: str) -> LabState:
    """Stop ``name``'s libvirtd or agent if it still runs (a test may have killed it), start a
    new one in the same namespace, and record it."""
    from blockplane.lab.processes import terminate
    from blockplane.lab.state import load

    state = load(Path(os.path.abspath(root)))
    host = state.host(name)
    if daemon == "libvirtd":
        terminate([host.libvirtd] if host.libvirtd else [], 10.0)
        host.libvirtd = None
        state.save()
        hostsetup.start_libvirtd(state, host)
    elif daemon == "agent":
        if not state.agents:
            raise InvalidInput(f"the lab at {root} has no agents", code="lab.no_agents")
        terminate([host.agent] if host.agent else [], 15.0)
        host.agent = None
        state.save()
        tls = host.layout.tls_dir
        hostsetup.start_agent(state, host, CertificateFiles(tls / "agent.pem", tls / "agent.key"))
    else:
        raise InvalidInput(f"restart {daemon!r}: libvirtd or agent")
    return state
