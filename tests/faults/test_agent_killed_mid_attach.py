"""The agent SIGKILLed at each step of a disk hotplug or detach, then restarted.

Whatever step it died at, the restarted agent either completes the change or rolls it back:
the store agrees with the live XML, no IOThread is left serving nothing, no volume leaks, and
every remaining image checks clean.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.harness import AgentUnderTest

pytestmark = pytest.mark.faults

VM = "fault-vm"


@pytest.fixture(scope="module")
def fault_vm(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "fp", "--type", "loop")
    agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "256M", "--start")
    agent.json(
        "disk", "attach", VM, "--pool", "fp", "--size", "64M", "--queues", "2", "--io-threads", "1"
    )
    return VM


def attach_with_failpoint(agent: AgentUnderTest, failpoint: str, *extra: str) -> None:
    agent.ok("agent", "stop")
    env = {**agent.env, "BLOCKPLANE_FAILPOINTS": failpoint}
    subprocess.run([*agent.command, "agent", "start"], env=env, check=True, capture_output=True)
    died = subprocess.run(
        [
            *agent.command,
            "--no-autostart",
            "disk",
            "attach",
            VM,
            "--pool",
            "fp",
            "--size",
            "64M",
            "--queues",
            "2",
            "--io-threads",
            "2",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert died.returncode in (1, 3), died.stderr  # the agent died mid-request
    agent.ok("agent", "start")  # a clean agent: recovery runs before it serves


def assert_consistent(agent: AgentUnderTest) -> dict[str, Any]:
    report: dict[str, Any] = agent.json("iothreads", VM)
    assert report["disagreements"] == []
    for thread in report["iothreads"]:
        assert thread["serves"], f"IOThread {thread['id']} serves nothing"
    live = {disk["target"] for disk in report["disks"]}
    recorded = {disk["target"] for disk in agent.json("disk", "list", VM) if disk["managed"]}
    assert live == recorded
    volumes = {disk["volume"] for disk in agent.json("disk", "list", VM)}
    pool = agent.json("pool", "show", "fp")
    assert pool["volumes"] == len(volumes)
    files = {path.stem for path in (agent.home / "pools" / "fp").glob("*.img")}
    assert files == volumes
    for disk in agent.json("disk", "list", VM):
        check = subprocess.run(
            ["qemu-img", "check", "-U", "--output=json", disk["source"]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0 and json.loads(check.stdout).get("corruptions", 0) == 0
    return report


@pytest.mark.parametrize(
    ("failpoint", "completes"),
    [
        ("attach.after_volume", False),
        ("attach.after_iothreads", False),
        ("attach.after_device", True),
    ],
)
def test_killed_during_virtio_hotplug(
    agent: AgentUnderTest, fault_vm: str, failpoint: str, completes: bool
) -> None:
    before = {disk["target"] for disk in agent.json("disk", "list", VM)}
    attach_with_failpoint(agent, failpoint)
    after = {disk["target"] for disk in agent.json("disk", "list", VM)}
    assert (after != before) is completes
    assert_consistent(agent)
    events = agent.json("events", "--type", "disk.recovered", "--vm", VM)
    assert events[-1]["outcome"] == ("completed" if completes else "rolled back")


def test_killed_after_scsi_controller_attach(agent: AgentUnderTest, fault_vm: str) -> None:
    # A no-OS guest cannot acknowledge a live PCI unplug, so this runs on the stopped VM,
    # where the controller lives in the persistent definition only.
    agent.ok("vm", "destroy", VM)
    attach_with_failpoint(agent, "attach.after_controller", "--bus", "scsi")
    assert "virtio-scsi" not in agent.ok("vm", "show", VM, "--xml")
    assert_consistent(agent)


def test_killed_during_detach(agent: AgentUnderTest, fault_vm: str) -> None:
    # A no-OS guest cannot release a disk live, so detach from the stopped VM.
    assert agent.json("vm", "show", VM)["state"] == "shutoff"
    target = agent.json("disk", "list", VM)[-1]["target"]
    agent.ok("agent", "stop")
    env = {**agent.env, "BLOCKPLANE_FAILPOINTS": "detach.after_device"}
    subprocess.run([*agent.command, "agent", "start"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*agent.command, "--no-autostart", "disk", "detach", VM, target],
        env=env,
        capture_output=True,
        check=False,
    )
    agent.ok("agent", "start")
    assert target not in {disk["target"] for disk in agent.json("disk", "list", VM)}
    agent.ok("vm", "start", VM)
    assert_consistent(agent)
