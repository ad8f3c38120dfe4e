"""Faults under a real Linux guest writing to a thin disk: the agent SIGKILLed in the middle of
a thin extend (at both of its steps), then QEMU itself SIGKILLed under a running copy job.

Every write is a slice of one random seed that the guest hashes first; after each fault the
guest reads its disk back (``iflag=direct``) and the host reads the qcow2 on the loop device,
and both must match the seed. Between faults: no pending intent, store and live XML agree,
``qemu-img check`` is clean, and the monitor's count of extends matches the volume's growth
(never extended twice for one crossing).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.faults.consistency import (
    agent_dead,
    api_get,
    assert_consistent,
    events_of,
    image_check,
    restart_with_failpoints,
    store_rows,
    wait_for,
)
from tests.harness import AgentUnderTest, requires_guest

pytestmark = [pytest.mark.faults, requires_guest]

MIB = 1 << 20
CHUNK = 16 * MIB  # small chunks keep the data, and the guest's hashing under TCG, small
VM = "fault-guest"
SEED_MIB = 26


@pytest.fixture(scope="module")
def guest(agent: AgentUnderTest) -> dict[str, Any]:
    agent.ok("pool", "create", "gp", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    agent.ok("pool", "create", "gd", "--type", "dir")
    agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux",
             "--start")
    sh(agent, f"dd if=/dev/urandom of=/tmp/seed bs=1M count={SEED_MIB} 2>/dev/null")
    disk: dict[str, Any] = agent.json("disk", "attach", VM, "--pool", "gp", "--size", "1G",
                                      "--thin")
    device = f"/dev/{disk['target']}"
    wait_for(lambda: "yes" in sh(agent, f"test -b {device} && echo yes || true"),
             f"{device} in the guest", 30)
    return disk


def sh(agent: AgentUnderTest, script: str, timeout: float = 120) -> str:
    return agent.ok("guest", "exec", VM, "--timeout", str(timeout), "--", "/bin/sh", "-c",
                    script, timeout=timeout + 30)


def seed_slice(agent: AgentUnderTest, offset_mib: int, count_mib: int) -> str:
    """The guest's sha256 of ``seed[offset : offset + count]`` (MiB)."""
    return sh(agent, f"dd if=/tmp/seed bs=1M skip={offset_mib} count={count_mib} 2>/dev/null "
              "| sha256sum").split()[0]


def start_write(agent: AgentUnderTest, device: str, offset_mib: int, count_mib: int) -> None:
    """In the background: seed[offset:offset+count] to the disk at the same offset, flushed."""
    script = (f"dd if=/tmp/seed of={device} bs=1M skip={offset_mib} seek={offset_mib} "
              f"count={count_mib} oflag=direct conv=notrunc,fsync 2>/tmp/dd.err; "
              "echo $? >/tmp/dd.rc")
    sh(agent, f"rm -f /tmp/dd.rc; ( {script} ) >/dev/null 2>&1 &")


def wait_written(agent: AgentUnderTest) -> None:
    def done() -> bool:
        result = agent.cli("guest", "exec", VM, "--", "/bin/sh", "-c",
                           "cat /tmp/dd.rc 2>/dev/null || true")
        return result.returncode == 0 and result.stdout.strip() != ""

    wait_for(done, "the guest's write to finish", 120)
    assert sh(agent, "cat /tmp/dd.rc").strip() == "0", sh(agent, "cat /tmp/dd.err")


def guest_reads(agent: AgentUnderTest, device: str, offset_mib: int, count_mib: int) -> str:
    return sh(agent, f"dd if={device} bs=1M skip={offset_mib} count={count_mib} iflag=direct "
              "2>/dev/null | sha256sum").split()[0]


def host_reads(agent: AgentUnderTest, source: str, offset_mib: int, count_mib: int) -> str:
    """sha256 of the qcow2's guest-visible bytes there, read by the host (QEMU may hold it)."""
    raw = agent.home / "host-read.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", source, str(raw)], check=True,
                   timeout=120)
    try:
        with raw.open("rb") as image:
            image.seek(offset_mib * MIB)
            return hashlib.sha256(image.read(count_mib * MIB)).hexdigest()
    finally:
        raw.unlink()


def verify(agent: AgentUnderTest, disk: dict[str, Any], offset_mib: int, count_mib: int) -> None:
    expected = seed_slice(agent, offset_mib, count_mib)
    assert guest_reads(agent, f"/dev/{disk['target']}", offset_mib, count_mib) == expected
    assert host_reads(agent, disk["source"], offset_mib, count_mib) == expected


def thin_row(agent: AgentUnderTest, target: str) -> dict[str, Any]:
    [row] = [r for r in api_get(agent, "/thin", vm=VM) if r["target"] == target]
    return dict(row)


def loop_size(disk: dict[str, Any]) -> int:
    return int(subprocess.run(["blockdev", "--getsize64", disk["source"]], check=True,
                              capture_output=True, text=True).stdout)


@pytest.mark.parametrize(
    ("failpoint", "offset_mib", "physical_after"),
    [("thin.extend.after_grow", 0, 2 * CHUNK), ("thin.extend.after_record", 10, 3 * CHUNK)],
    ids=["after-grow", "after-record"],
)
def test_agent_killed_mid_thin_extend(
    agent: AgentUnderTest, guest: dict[str, Any], failpoint: str, offset_mib: int,
    physical_after: int,
) -> None:
    target = guest["target"]
    before = thin_row(agent, target)
    assert before["state"] == "set" and before["physical"] == physical_after - CHUNK
    restart_with_failpoints(agent, failpoint)
    # Up to 10 MiB (26 at the second step) crosses the threshold at 8 MiB (24) and stays
    # inside the chunk the extend adds: the guest never has to pause.
    count = 10 if offset_mib == 0 else 16
    start_write(agent, f"/dev/{target}", offset_mib, count)
    wait_for(lambda: agent_dead(agent), f"the agent to die at {failpoint}", 60)
    assert loop_size(guest) == physical_after  # it grew before the agent died
    agent.ok("agent", "start")  # the start-up reconcile finishes the extend

    row = thin_row(agent, target)
    assert row["physical"] == physical_after, row
    assert (row["state"], row["paused"]) == ("set", False), row
    assert row["extends"] == physical_after // CHUNK - 1, row  # one extend per crossing
    assert row["threshold"] == physical_after - CHUNK // 2, row
    assert loop_size(guest) == physical_after  # not extended twice
    [(pending,)] = store_rows(
        agent, "SELECT pending_physical_bytes FROM thin_monitor WHERE volume = ?", guest["volume"])
    assert pending is None
    [(recorded,)] = store_rows(agent, "SELECT physical_bytes FROM volumes WHERE name = ?",
                               guest["volume"])
    assert recorded == physical_after
    wait_written(agent)
    verify(agent, guest, offset_mib, count)
    assert_consistent(agent, VM)


def test_pool_out_of_space_pauses_then_resumes(agent: AgentUnderTest,
                                               guest: dict[str, Any]) -> None:
    """The thin monitor's own case (tests/integration/test_thin_monitor.py) writes zeros; this
    one checks the data and the image too."""
    agent.ok("pool", "create", "gt", "--type", "loop", "--chunk", "16M", "--utilization", "50",
             "--capacity", "32M")
    disk: dict[str, Any] = agent.json("disk", "attach", VM, "--pool", "gt", "--size", "1G",
                                      "--thin")
    device = f"/dev/{disk['target']}"
    wait_for(lambda: "yes" in sh(agent, f"test -b {device} && echo yes || true"),
             f"{device} in the guest", 30)
    sh(agent, "dd if=/dev/urandom of=/tmp/seed bs=1M seek=40 count=40 conv=notrunc 2>/dev/null")
    start_write(agent, device, 40, 40)  # past the 32 MiB the pool may give
    wait_for(lambda: api_get(agent, f"/vms/{VM}")["state"] == "paused", "the ENOSPC pause", 60)
    # libvirt may show the pause before the monitor has recorded the refused extend, and the
    # monitor records the pause itself only once it has polled the VM paused: allow for both.
    wait_for(lambda: all(thin_row(agent, disk["target"])[flag] for flag in ("refused", "paused")),
             "the refusal and the pause recorded", 15)
    row = thin_row(agent, disk["target"])
    assert (row["refused"], row["paused"], row["physical"]) == (True, True, 2 * CHUNK), row
    assert events_of(agent, "thin.extend_refused", VM)[-1]["code"] == "pool.full"
    assert api_get(agent, f"/vms/{VM}")["state"] == "paused"  # paused, not crashed

    agent.ok("pool", "set", "gt", "--capacity", "128M")
    wait_for(lambda: api_get(agent, f"/vms/{VM}")["state"] == "running", "the resume", 30)
    wait_written(agent)
    row = thin_row(agent, disk["target"])
    assert (row["refused"], row["paused"]) == (False, False), row
    verify(agent, disk, 40, 40)
    image_check(disk["source"])
    assert_consistent(agent, VM)


def job_phase(agent: AgentUnderTest, job_id: str) -> str:
    return str(api_get(agent, f"/jobs/{job_id}")["phase"])


def test_qemu_killed_under_a_running_vm_and_job(
    agent: AgentUnderTest, guest: dict[str, Any]
) -> None:
    target = guest["target"]
    device = f"/dev/{target}"
    sh(agent, "dd if=/dev/urandom of=/tmp/seed bs=1M seek=30 count=8 conv=notrunc 2>/dev/null")
    start_write(agent, device, 30, 8)
    wait_written(agent)  # flushed (fsync) before the kill
    expected = {(0, SEED_MIB): seed_slice(agent, 0, SEED_MIB), (30, 8): seed_slice(agent, 30, 8)}
    job = agent.json("copy", VM, target, "--pool", "gd", "--bandwidth", str(MIB))
    wait_for(lambda: job_phase(agent, job["id"]) == "running", "the copy to run", 30)
    pid = int((agent.home / "libvirt" / "run" / "qemu" / f"{VM}.pid").read_text())
    assert f"guest={VM}," in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    subprocess.run(["kill", "-9", str(pid)], check=True)

    wait_for(lambda: api_get(agent, f"/vms/{VM}")["state"] != "running", "the VM to stop", 30)
    shown = agent.json("vm", "show", VM)
    assert shown["state"] == "crashed", shown
    lifecycle = events_of(agent, "vm.lifecycle", VM)
    assert lifecycle[-1]["event"] == "stopped" and lifecycle[-1]["detail"] == 5  # FAILED
    wait_for(lambda: job_phase(agent, job["id"]) in ("failed", "aborted", "done"),
             "the job to end", 30)
    ended = agent.json("job", "show", job["id"])
    assert (ended["phase"], ended["outcome"]) == ("failed", "failed"), ended
    wait_for(lambda: thin_row(agent, target)["state"] == "unset", "the monitor to disarm", 30)
    row = thin_row(agent, target)
    assert (row["paused"], row["running"]) == (False, False), row
    assert row["physical"] == loop_size(guest), row
    image_check(guest["source"])
    assert_consistent(agent, VM)

    agent.ok("vm", "start", VM)  # a fresh boot: the seed in the old guest's RAM is gone
    wait_for(lambda: thin_row(agent, target)["state"] == "set", "the monitor to re-arm", 30)
    for (offset, count), digest in expected.items():
        assert guest_reads(agent, device, offset, count) == digest
        assert host_reads(agent, guest["source"], offset, count) == digest
    assert_consistent(agent, VM)
