"""Guest-visible I/O limits: fio in the Linux test guest under a 2-filter throttle chain.

Each disk has a per-disk limit of 300 IOPS (its generated group, first filter) and shares the
VM group ``vm-agg`` of 400 IOPS (second filter). fio does direct 4k random reads; the first
second of each run is ramp-up and not counted.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.harness import AgentUnderTest, requires_guest

pytestmark = [pytest.mark.e2e, requires_guest]

VM = "qosg"
TOLERANCE = 0.10
RUNTIME_S = 6


@pytest.fixture(scope="module")
def disks(agent: AgentUnderTest) -> list[str]:
    agent.ok("pool", "create", "qp", "--type", "dir")
    agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux", "--start")
    agent.ok("throttle", "set", VM, "vm-agg", "--total-iops-sec", "400")
    targets = []
    for _ in range(2):
        disk = agent.json(
            "disk", "attach", VM, "--pool", "qp", "--size", "256M",
            "--total-iops-sec", "300", "--throttle-groups", "vm-agg",
        )
        targets.append(disk["target"])
    deadline = time.monotonic() + 20
    while not all(guest_has(agent, target) for target in targets):
        assert time.monotonic() < deadline, f"{targets} never appeared in the guest"
        time.sleep(0.5)
    return targets


def guest_has(agent: AgentUnderTest, target: str) -> bool:
    script = f"test -b /dev/{target} && echo present || true"
    return "present" in agent.ok("guest", "exec", VM, "--", "/bin/sh", "-c", script)


def fio_iops(agent: AgentUnderTest, targets: list[str]) -> list[float]:
    """Read IOPS of one concurrent fio job per disk."""
    argv = [
        "fio", "--direct=1", "--rw=randread", "--bs=4k", "--ioengine=libaio", "--iodepth=16",
        f"--runtime={RUNTIME_S}", "--time_based", "--ramp_time=1", "--output-format=json",
    ]
    for target in targets:
        argv += [f"--name={target}", f"--filename=/dev/{target}"]
    report: dict[str, Any] = json.loads(agent.ok("guest", "exec", VM, "--", *argv))
    return [float(job["read"]["iops"]) for job in report["jobs"]]


def near(measured: float, expected: float) -> bool:
    return abs(measured - expected) <= TOLERANCE * expected


def test_one_disk_runs_at_its_own_limit(agent: AgentUnderTest, disks: list[str]) -> None:
    (iops,) = fio_iops(agent, disks[:1])
    print(f"one disk: {iops:.1f} IOPS (per-disk 300, VM group 400)")
    assert near(iops, 300), iops


def test_two_disks_share_the_vm_group(agent: AgentUnderTest, disks: list[str]) -> None:
    both = fio_iops(agent, disks)
    print(f"two disks: {both[0]:.1f} + {both[1]:.1f} = {sum(both):.1f} IOPS (VM group 400)")
    assert near(sum(both), 400), both
    assert all(iops <= 300 * (1 + TOLERANCE) for iops in both), both


def test_a_live_update_takes_effect_without_detaching(
    agent: AgentUnderTest, disks: list[str]
) -> None:
    before = {d["target"]: d["source"] for d in agent.json("disk", "list", VM)}
    agent.ok("throttle", "set", VM, "vm-agg", "--total-iops-sec", "200")
    (iops,) = fio_iops(agent, disks[:1])
    print(f"one disk after the VM group went to 200: {iops:.1f} IOPS")
    assert near(iops, 200), iops
    assert {d["target"]: d["source"] for d in agent.json("disk", "list", VM)} == before
    info = agent.json("throttle", "info", VM, "vm-agg")
    assert [use["target"] for use in info["disks"]] == disks
