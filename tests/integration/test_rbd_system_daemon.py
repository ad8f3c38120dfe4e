"""An rbd pool and disk on the system daemon (``qemu:///system``), where QEMU runs as
libvirt-qemu and cannot read root's keyring: it gets the key from the libvirt secret the pool
defined there. The secret is private (libvirt will not give its value back) and goes with the
pool. Starts ``virtlogd`` and ``libvirtd`` if they are not running, and stops what it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockplane.xml.disk import parse_disks
from tests.ceph_support import ceph_cluster, requires_ceph
from tests.harness import cleanup_agent
from tests.rbd_support import RadosPool, create_rbd_pool, module_rados_pool
from tests.system_daemon import SystemAgent
from tests.system_daemon import daemons as daemons  # the module's system daemon

__all__ = ["ceph_cluster", "module_rados_pool"]

pytestmark = [
    pytest.mark.integration,
    requires_ceph,
    pytest.mark.skipif(shutil.which("libvirtd") is None or os.geteuid() != 0,
                       reason="needs libvirtd (the system daemon) and root"),
]

VM = f"bprbdsys{os.getpid()}"


@pytest.fixture(scope="module")
def system_agent(daemons: None) -> Iterator[SystemAgent]:
    home = Path(tempfile.mkdtemp(prefix="bp-rsys-", dir="/tmp"))
    agent = SystemAgent(home)
    agent.ok("agent", "start")
    try:
        yield agent
    finally:
        cleanup_agent(agent)


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                          text=True, timeout=30, check=False)


def test_an_rbd_disk_runs_on_the_system_daemon_with_the_key_from_its_secret(
    system_agent: SystemAgent, module_rados_pool: RadosPool,
) -> None:
    created = create_rbd_pool(system_agent, "sysceph", module_rados_pool)
    secret = created["rbd"]["secret_uuid"]
    try:
        assert secret in virsh("secret-list").stdout
        value = virsh("secret-get-value", secret)
        assert value.returncode != 0  # private: libvirt never hands the key back
        system_agent.json("vm", "create", VM, "--vcpus", "1", "--memory", "128M", "--start")
        attached = system_agent.json("disk", "attach", VM, "--pool", "sysceph", "--size", "16M")
        xml = system_agent.ok("vm", "show", VM, "--xml")
        disk = next(d for d in parse_disks(xml) if d.target == attached["target"])
        assert disk.network is not None and disk.network.secret_uuid == secret
        assert attached["volume"] in module_rados_pool.images()
        system_agent.ok("vm", "destroy", VM)
        system_agent.ok("vm", "start", VM)  # a cold start reads the key again
        system_agent.ok("vm", "destroy", VM)
        system_agent.json("vm", "delete", VM)
        assert attached["volume"] not in module_rados_pool.images()
    finally:
        system_agent.cli("pool", "delete", "sysceph")
    assert secret not in virsh("secret-list").stdout
