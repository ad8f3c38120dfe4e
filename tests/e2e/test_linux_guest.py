"""The bundled Linux guest through the agent: boot, hotplug, checksums, hot-unplug, stop."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import AgentUnderTest, requires_guest

pytestmark = [pytest.mark.e2e, requires_guest]

PATTERN_MIB = 32


@pytest.fixture(scope="module")
def guest(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "gp", "--type", "loop")
    started = time.monotonic()
    vm = agent.json(
        "vm", "create", "lin", "--vcpus", "2", "--memory", "512M", "--guest", "linux", "--start"
    )
    print(f"Linux guest create-to-agent-ready: {time.monotonic() - started:.2f} s")
    assert vm["state"] == "running"
    return "lin"


def guest_sh(agent: AgentUnderTest, vm: str, script: str) -> str:
    return agent.ok("guest", "exec", vm, "--", "/bin/sh", "-c", script)


def test_guest_exec_returns_status_and_output(agent: AgentUnderTest, guest: str) -> None:
    result = agent.cli(
        "guest", "exec", guest, "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert guest_sh(agent, guest, "fio --version").startswith("fio-")


def test_hotplugged_disk_keeps_a_checksum(agent: AgentUnderTest, guest: str) -> None:
    disk = agent.json("disk", "attach", guest, "--pool", "gp", "--size", "256M")
    device = f"/dev/{disk['target']}"
    deadline = time.monotonic() + 20
    while "present" not in guest_sh(agent, guest, f"test -b {device} && echo present || true"):
        assert time.monotonic() < deadline, f"{device} never appeared in the guest"
        time.sleep(0.5)
    written, read_back = guest_sh(
        agent,
        guest,
        f"dd if=/dev/urandom of=/tmp/pattern bs=1M count={PATTERN_MIB} 2>/dev/null && "
        f"dd if=/tmp/pattern of={device} bs=1M oflag=direct conv=fsync 2>/dev/null && "
        "sha256sum /tmp/pattern | cut -d' ' -f1 && echo 3 > /proc/sys/vm/drop_caches && "
        f"dd if={device} bs=1M count={PATTERN_MIB} iflag=direct 2>/dev/null | sha256sum "
        "| cut -d' ' -f1",
    ).split()
    assert written == read_back

    # The bytes really are in the qcow2 on the loop device: read them on the host too.
    host_copy = agent.home / "host-copy.raw"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "raw", disk["source"], str(host_copy)], check=True
    )
    with host_copy.open("rb") as handle:
        host_sum = hashlib.sha256(handle.read(PATTERN_MIB * 2**20)).hexdigest()
    host_copy.unlink()
    assert host_sum == written

    detached = agent.json("disk", "detach", guest, disk["target"])
    assert detached["detached"] is True
    assert "gone" in guest_sh(agent, guest, f"test -b {device} || echo gone")
    assert not Path(disk["source"]).exists() or disk["source"].startswith("/dev/loop")


def test_guest_sees_the_requested_queues(agent: AgentUnderTest, guest: str) -> None:
    # Linux uses at most one queue per vCPU, and this guest has 2 vCPUs.
    disk = agent.json(
        "disk",
        "attach",
        guest,
        "--pool",
        "gp",
        "--size",
        "64M",
        "--queues",
        "2",
        "--io-threads",
        "2",
    )
    report = agent.json("iothreads", guest)
    mapped = next(d for d in report["disks"] if d["target"] == disk["target"])
    assert mapped["mode"] == "mapped" and mapped["queues"] == 2
    assert [thread for thread, _queues in mapped["mapping"]] == [101, 102]
    deadline = time.monotonic() + 20
    queues = ""
    while time.monotonic() < deadline:
        queues = guest_sh(agent, guest, f"ls /sys/block/{disk['target']}/mq 2>/dev/null | wc -l")
        if queues.strip() == "2":
            break
        time.sleep(0.5)
    assert queues.strip() == "2"
    assert agent.json("disk", "detach", guest, disk["target"])["iothreads_removed"] == [101, 102]


def test_stop_through_the_guest_agent(agent: AgentUnderTest, guest: str) -> None:
    assert agent.json("vm", "stop", guest)["state"] == "shutoff"
