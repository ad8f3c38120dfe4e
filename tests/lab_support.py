"""The lab for tests: one lab of simulated hosts per test session, and ways to drive its hosts.

``lab`` (session-scoped) brings a two-host lab up with ``scripts/lab up`` on a free address
block (``--base-address auto``, so a user's lab on this machine is never touched) and down at
the end. The modules in :data:`LAB_MODULES` run on one pytest-xdist worker (tests/conftest.py),
so a session starts one lab. A host is driven as a user would: its ``blockplane`` CLI inside its
namespace (``LabHost.cli``/``ok``/``json``), its libvirtd with ``virsh`` (``LabHost.virsh``),
its agent's API over TLS with its token (``LabHost.http``).

Agents need ``agent start --tls-cert`` and ``peer add``; where this tree lacks them the lab
starts without agents and the API helpers skip the test with the reason.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from blockplane.lab import host_command, load
from blockplane.lab.bringup import agents_supported

# Test modules that use the lab: they run on one xdist worker, one after another.
LAB_MODULES = (
    "tests/integration/test_lab.py",
    "tests/integration/test_pull_backup_lab.py",
    "tests/integration/test_lab_ceph.py",
    "tests/integration/test_migrat",
    "tests/faults/test_migrat",
    "tests/e2e/test_migrat",
)
LAB = [sys.executable, "-m", "blockplane.lab"]


@dataclass(frozen=True)
class LabHost:
    lab_dir: Path
    name: str
    address: str
    home_dir: Path  # the host's BLOCKPLANE_HOME as seen from the test (root namespace)
    libvirt_uri: str
    api: str | None
    token_file: Path | None
    ca: Path | None
    ns_pid: int

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``argv`` inside this host (its namespace and environment), no shell."""
        command, environment = host_command(load(self.lab_dir), self.name, list(argv))
        return subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=timeout,
            check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "blockplane", *args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 300) -> str:
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, f"{self.name} {args}: {result.returncode}: {result.stderr}"
        return result.stdout

    def json(self, *args: str, timeout: float = 300) -> Any:
        return json.loads(self.ok(*args, "--json", timeout=timeout))

    def virsh(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``virsh`` against this host's libvirtd, from the test's own namespace."""
        return subprocess.run(
            ["virsh", "-c", self.libvirt_uri, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def virsh_ok(self, *args: str, timeout: float = 300) -> str:
        result = self.virsh(*args, timeout=timeout)
        assert result.returncode == 0, f"{self.name}: virsh {args}: {result.stderr}"
        return result.stdout

    def restart(self, daemon: str) -> None:
        """Start this host's ``libvirtd`` or ``agent`` again (e.g. after a test killed it)."""
        result = lab_command("restart", "--dir", str(self.lab_dir), self.name, daemon)
        assert result.returncode == 0, f"lab restart {self.name} {daemon}: {result.stderr}"

    @property
    def token(self) -> str:
        if self.token_file is None:
            pytest.skip("this lab has no agents (no `agent start --tls-cert` / `peer` here)")
        return self.token_file.read_text().strip()

    def tls_context(self, ca: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca or self.ca))

    def http(self, token: str | None = "valid", ca: Path | None = None) -> httpx.Client:
        """The agent's API over HTTPS, verified against the lab CA (or ``ca``)."""
        if self.api is None:
            pytest.skip("this lab has no agents (no `agent start --tls-cert` / `peer` here)")
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'valid' else token}"
        return httpx.Client(
            base_url=self.api, headers=headers, verify=self.tls_context(ca), timeout=120
        )


@dataclass(frozen=True)
class Lab:
    dir: Path
    ca: Path | None
    shared_dir: Path  # the shared directory as seen from the test
    shared: Path  # ... and as every host sees it
    hosts: tuple[LabHost, ...]
    ceph: dict[str, Any] | None
    view: dict[str, Any]  # what `scripts/lab up` printed

    def shown(self) -> dict[str, Any]:
        """What ``scripts/lab show`` says now (a fault test may have restarted a daemon since
        ``up``: its PID is no longer the one in ``view``)."""
        result = lab_command("show", "--dir", str(self.dir))
        assert result.returncode == 0, result.stderr
        shown: dict[str, Any] = json.loads(result.stdout)
        return shown

    def lab_log_files(self) -> list[tuple[str, list[Path]]]:
        """Each host's agent, libvirtd, QEMU and guest logs (kept by tests/failure_logs.py)."""
        sources = []
        for host in self.hosts:
            libvirt_logs = host.home_dir.parent / "log"  # the host's /var/log/libvirt
            files = [host.home_dir / "agent.log", libvirt_logs / "libvirtd.log"]
            files += sorted((libvirt_logs / "qemu").glob("*.log"))
            files += sorted((host.home_dir / "guest-logs").glob("*.log"))
            sources.append((f"{self.dir.name}-{host.name}", files))
        return sources

    def __getitem__(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def from_view(view: dict[str, Any]) -> Lab:
    ca = Path(view["ca"]) if view["ca"] else None
    hosts = tuple(
        LabHost(
            lab_dir=Path(view["dir"]),
            name=host["name"],
            address=host["address"],
            home_dir=Path(host["home_dir"]),
            libvirt_uri=host["libvirt_uri"],
            api=host["api"],
            token_file=Path(host["token_file"]) if host["token_file"] else None,
            ca=ca,
            ns_pid=int(host["ns_pid"]),
        )
        for host in view["hosts"]
    )
    return Lab(
        dir=Path(view["dir"]), ca=ca, shared_dir=Path(view["shared_dir"]),
        shared=Path(view["shared"]), hosts=hosts, ceph=view["ceph"], view=view,
    )  # fmt: skip


def lab_command(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``scripts/lab ARGS`` (with this test's Python)."""
    return subprocess.run(
        [*LAB, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def start_lab(
    root: Path, hosts: int = 2, *, agents: bool | None = None, ceph: bool = False
) -> Lab:
    """``scripts/lab up`` at ``root`` on a free address block; agents when this tree has them."""
    if agents is None:
        agents = agents_supported() is None
    args = ["up", "--dir", str(root), "--hosts", str(hosts), "--base-address", "auto"]
    args += [] if agents else ["--no-agents"]
    args += ["--ceph"] if ceph else []
    result = lab_command(*args, timeout=600)
    assert result.returncode == 0, f"lab up: {result.returncode}: {result.stderr}"
    return from_view(json.loads(result.stdout))


def stop_lab(root: Path) -> dict[str, Any]:
    result = lab_command("down", "--dir", str(root), timeout=600)
    assert result.returncode == 0, f"lab down: {result.returncode}: {result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def lab_dir() -> Path:
    # Short, under /tmp: libvirt's socket path must stay under 108 bytes.
    return Path(tempfile.mkdtemp(prefix="bp-lab-", dir="/tmp"))


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    root = lab_dir()
    try:
        started = start_lab(root)
    except BaseException:
        stop_lab(root)
        raise
    try:
        yield started
    finally:
        stop_lab(root)


@pytest.fixture(scope="session")
def ceph_lab() -> Iterator[Lab]:
    """A second two-host lab, with ``--ceph``: its one-node cluster and the rbd pool ``shared``
    on both hosts (one per session: the lab's cluster is one per machine)."""
    from tests.ceph_support import CEPH_MISSING, SKIP_REASON

    if CEPH_MISSING:
        pytest.skip(SKIP_REASON)
    root = lab_dir()
    try:
        started = start_lab(root, ceph=True)
    except BaseException:
        stop_lab(root)
        raise
    try:
        yield started
    finally:
        stop_lab(root)
