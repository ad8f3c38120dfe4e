"""BLOCKPLANE_HOME on a 16 MiB loop-mounted ext4 filesystem, filled to the last block.

Everything the agent keeps lives there, as on a real host: ``state.db``, the embedded libvirt
root (domain definitions and status), logs. Only the pool lives elsewhere, so that the fault
is the state directory's, not the pool's. With the filesystem full:
- every mutation is refused up front with 503 problem+json ``state.disk_full`` (CLI: exit 1),
  and nothing is half-written: the store's rows, libvirt's domains and live XML and the pool's
  files are exactly what they were, and the VM keeps running;
- reads keep working; a done action whose event cannot be stored is not reported as failed;
- the agent refuses to *start* on a full home (its embedded libvirt would power the running
  VMs off), and the VM keeps running;
- once space returns, mutations work again and everything is consistent.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.faults.consistency import assert_consistent, store_rows
from tests.harness import AgentUnderTest, cleanup_agent

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("mkfs.ext4") is None,
        reason="needs root and mkfs.ext4 to loop-mount a small filesystem",
    ),
]

VM = "fault-full"
FILLER = "filler"


@pytest.fixture(scope="module")
def full_agent() -> Iterator[AgentUnderTest]:
    work = Path(tempfile.mkdtemp(prefix="bp-full-", dir="/tmp"))
    work.chmod(0o711)  # QEMU runs as its own user and must reach the home and the pool
    image, home, pools = work / "home.ext4", work / "h", work / "pools"
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True)
    home.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(home)], check=True)
    home.chmod(0o711)
    agent = AgentUnderTest(home)
    try:
        agent.ok("agent", "start")
        agent.ok("pool", "create", "fp", "--type", "loop", "--path", str(pools / "fp"),
                 "--chunk", "64M")
        agent.ok("vm", "create", VM, "--memory", "128M", "--start")
        agent.json("disk", "attach", VM, "--pool", "fp", "--size", "1G", "--thin")
        agent.ok("throttle", "set", VM, "gold", "--total-iops-sec", "1000")
        yield agent
    finally:
        (home / FILLER).unlink(missing_ok=True)
        cleanup_agent(agent)  # empties the home; the pool's loop devices are detached below
        listing = subprocess.run(["losetup", "-a", "-O", "NAME,BACK-FILE", "-n"],
                                 capture_output=True, text=True, check=False).stdout
        for line in listing.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[1].strip().startswith(str(pools)):
                subprocess.run(["losetup", "-d", parts[0]], check=False)
        for _ in range(50):  # the last QEMU may still be letting go of its log files
            if subprocess.run(["umount", str(home)], check=False).returncode == 0:
                break
            time.sleep(0.2)
        shutil.rmtree(work, ignore_errors=True)


def fill(directory: Path) -> int:
    """Write zeros into ``directory/filler`` until the filesystem refuses (ENOSPC)."""
    written = 0
    descriptor = os.open(directory / FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            block = bytes(size)
            try:
                while True:
                    written += os.write(descriptor, block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return written


def without_aliases(domain_xml: str) -> str:
    """The live XML without device aliases: libvirt drops some (the USB controller's) when it
    reconnects to a running VM, which changes nothing blockplane keeps."""
    root = etree.fromstring(domain_xml.encode())
    for alias in root.findall(".//alias"):
        parent = alias.getparent()
        assert parent is not None
        parent.remove(alias)
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        element.tail = None
    return etree.tostring(root, encoding="unicode")


def snapshot(agent: AgentUnderTest) -> dict[str, Any]:
    """What a half-written change would alter: store rows, libvirt's view, the pool's files."""
    return {
        "rows": {
            table: store_rows(agent, f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("pools", "vms", "volumes", "disks", "pending_ops", "disk_qos")
        },
        "domains": sorted((vm["name"], vm["state"]) for vm in agent.json("vm", "list")),
        "xml": without_aliases(agent.ok("vm", "show", VM, "--xml")),
        "throttle": agent.json("throttle", "list", VM),
        "pool_files": sorted(p.name for p in Path(agent.json("pool", "show", "fp")["path"])
                             .iterdir()),
    }


MUTATIONS = [
    ("pool", "create", "fp2", "--type", "dir"),
    ("vm", "create", "fault-full2", "--memory", "128M"),
    ("disk", "attach", VM, "--pool", "fp", "--size", "1G", "--thin"),
    ("throttle", "set", VM, "gold", "--total-iops-sec", "2000"),
    ("throttle", "set", VM, "silver", "--total-iops-sec", "50"),
    ("disk", "detach", VM, "vda"),
    ("snapshot", "create", VM, "--name", "s1"),
    ("vm", "destroy", VM),
]


def test_full_state_directory_refuses_every_change(full_agent: AgentUnderTest) -> None:
    agent = full_agent
    before = snapshot(agent)
    assert fill(agent.home) > 0
    for request in MUTATIONS:
        refused = agent.cli(*request)
        assert refused.returncode == 1, (request, refused.stdout, refused.stderr)
        assert "bytes free" in " ".join(refused.stderr.split()), (request, refused.stderr)
    with agent.http() as client:
        response = client.post("/v1/vms", json={"name": "fault-full3", "memory": "128M"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["status"]) == ("state.disk_full", 503)
    assert "nothing was changed" in problem["detail"]
    assert snapshot(agent) == before  # nothing half-written, the VM still runs
    assert agent.json("thin", "status", VM)[0]["state"] == "set"  # reads still answer


def qemu_pid(agent: AgentUnderTest) -> int:
    return int((agent.home / "libvirt" / "run" / "qemu" / f"{VM}.pid").read_text())


def test_no_restart_on_a_full_state_directory(full_agent: AgentUnderTest) -> None:
    """Opening the embedded root on a full home would power the VM off: the agent refuses."""
    agent = full_agent
    before = snapshot(agent)
    pid = qemu_pid(agent)
    agent.ok("agent", "stop")
    refused = agent.cli("agent", "start")
    assert refused.returncode == 1
    assert "will not start" in " ".join(refused.stderr.split()), refused.stderr
    autostart = agent.cli("vm", "list")  # a command that would start the agent is refused too
    assert autostart.returncode == 1 and "bytes free" in autostart.stderr
    assert Path(f"/proc/{pid}").exists(), "the VM's QEMU was stopped"
    (agent.home / FILLER).unlink()
    agent.ok("agent", "start")
    assert qemu_pid(agent) == pid
    assert snapshot(agent) == before
    fill(agent.home)


def test_changes_work_again_once_space_returns(full_agent: AgentUnderTest) -> None:
    agent = full_agent
    (agent.home / FILLER).unlink()
    disk = agent.json(*MUTATIONS[2])
    assert agent.json(*MUTATIONS[3])["limits"] == {"total_iops_sec": 2000}
    agent.ok("vm", "create", "fault-full2", "--memory", "128M")
    agent.ok("vm", "delete", "fault-full2")
    assert disk["target"] in {d["target"] for d in agent.json("disk", "list", VM)}
    assert_consistent(agent, VM)
