"""Copies into a thin loop pool on real libvirt, QEMU and loop devices (no-OS VM).

The VM has two disks of 1 GiB on a dir pool, each with 40 MiB written. A no-OS VM cannot write,
so QEMU writes for it: HMP ``qemu-io`` on the device, which goes through the copy's mirror as a
guest's write does (``tests.thin_copy_helpers``), run while the agent is stopped. The copy's own
writes into the destination (the mirror copying the source, then what was written meanwhile)
cross the destination's thresholds with the agent running. A raw reference file gets every write
and ``qemu-img compare`` checks the disk and the copies against it, with the VM stopped so that
QEMU has flushed its qcow2 metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blockplane.storage.commands import SubprocessRunner
from blockplane.storage.fill_size import fill_size
from blockplane.storage.images import image_end_offset, measure_copy
from blockplane.storage.qcow2 import qcow2_max_physical
from tests.chain_helpers import Reference, chain_paths, check_clean, qemu_io_write, same_content
from tests.chain_helpers import wait_phase as wait_job_phase
from tests.harness import AgentUnderTest
from tests.thin_copy_helpers import events, guest_like_write, qemu_jobs, thin_row

pytestmark = pytest.mark.integration

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 16 * MIB
VM = "tcopy"


@dataclass
class Disks:
    refs: dict[str, Reference]

    def write(self, agent: AgentUnderTest, target: str, offset: int, length: int,
              pattern: int) -> None:
        """QEMU writes into the running VM's disk; the agent is stopped meanwhile."""
        agent.ok("agent", "stop")
        try:
            guest_like_write(agent, VM, target, offset, length, pattern)
        finally:
            agent.ok("agent", "start")
        self.refs[target].write(offset, length, pattern)

    def matches(self, agent: AgentUnderTest, target: str, image: str | None = None) -> bool:
        """``image`` (default: the disk's top) reads back as the reference, QEMU stopped."""
        agent.ok("vm", "destroy", VM)
        try:
            return same_content(self.refs[target].path,
                                image or chain_paths(agent, VM, target)[0])
        finally:
            agent.ok("vm", "start", VM)


@pytest.fixture(scope="module")
def disks(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Disks:
    scratch = tmp_path_factory.mktemp("thin-copy")
    agent.ok("pool", "create", "src", "--type", "dir")
    agent.ok("pool", "create", "tl", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    agent.json("vm", "create", VM, "--vcpus", "1", "--memory", "256M")
    refs = {}
    for target in ("vda", "vdb"):
        disk = agent.json("disk", "attach", VM, "--pool", "src", "--size", "1G")
        assert disk["target"] == target
        refs[target] = Reference(scratch / f"{target}.raw", GIB)
        qemu_io_write(disk["source"], 0, 40 * MIB, 0x11)
        refs[target].write(0, 40 * MIB, 0x11)
    agent.ok("vm", "start", VM)
    return Disks(refs)


@pytest.fixture(autouse=True)
def no_job_left(agent: AgentUnderTest, disks: Disks) -> Iterator[None]:
    """A test that failed midway must not leave the next one a block job on the VM's disks:
    its live jobs are aborted, and a VM whose libvirt still shows a mirror is restarted."""
    yield
    for job in agent.json("job", "list"):
        if job["vm"] == VM and job["phase"] in ("running", "ready"):
            agent.cli("job", "abort", job["id"])
    for job in agent.json("job", "list"):
        if job["vm"] == VM and job["phase"] not in ("done", "failed", "aborted"):
            wait_job_phase(agent, job["id"], ("done", "failed", "aborted"), timeout=120)
    if any(agent.json("chain", VM, target).get("mirror") for target in disks.refs):
        agent.ok("vm", "destroy", VM)
        agent.ok("vm", "start", VM)


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def destination_of(job: dict[str, Any]) -> dict[str, str]:
    destination: dict[str, str] = job["spec"]["destination"]
    return destination


def test_a_copy_starts_small_grows_through_the_mirror_and_stays_watched_after_the_pivot(
    agent: AgentUnderTest, disks: Disks,
) -> None:
    source = chain_paths(agent, VM, "vdb")[0]
    expected = fill_size(measure_copy(source), chunk_bytes=CHUNK,
                         ceiling_bytes=qcow2_max_physical(GIB))
    job = agent.json("copy", VM, "vdb", "--pool", "tl", "--bandwidth", "1M")
    volume = destination_of(job)["volume"]
    row = thin_row(agent, VM, volume)
    assert row is not None and row["physical"] == expected < GIB // 8
    mirror = agent.json("chain", VM, "vdb")["mirror"]
    assert mirror["path"] == destination_of(job)["path"]
    assert (row["state"], row["index"], row["disk"]) == (
        "set", mirror["libvirt_index"], f"vdb[{mirror['libvirt_index']}]")
    [armed] = events(agent, VM, "thin.armed", volume=volume)
    assert armed["index"] == mirror["libvirt_index"]

    # 32 MiB more, dirty in the mirror's bitmap: the mirror's writes pass the thresholds (at
    # 4 MiB/s the reserve of half a chunk lasts 2 s: each extend lands long before the end).
    disks.write(agent, "vdb", 512 * MIB, 32 * MIB, 0x21)
    agent.json("job", "speed", job["id"], "4M")
    wait_until(lambda: bool(events(agent, VM, "thin.extended", volume=volume, cause="event")),
               "an extend of the destination on a threshold event")
    during = agent.json("job", "show", job["id"])
    assert during["phase"] in ("running", "ready")
    grown = thin_row(agent, VM, volume)
    assert grown is not None and grown["extends"] >= 1 and grown["physical"] > expected
    assert grown["index"] == mirror["libvirt_index"]

    wait_job_phase(agent, job["id"], ("ready",))
    agent.json("job", "pivot", job["id"])
    done = wait_job_phase(agent, job["id"], ("done", "failed", "aborted"))
    assert (done["phase"], done["restarts"]) == ("done", 0)
    assert chain_paths(agent, VM, "vdb") == [destination_of(job)["path"]]
    after = thin_row(agent, VM, volume)
    assert after is not None and after["extends"] >= grown["extends"]
    assert (after["state"], after["index"]) == ("set", mirror["libvirt_index"])
    assert after["threshold"] == after["armed_threshold"]  # QEMU kept it over the pivot
    assert disks.matches(agent, "vdb")

    # The copy is the disk now: writes past its threshold grow it like any thin disk. The VM
    # was restarted to compare it: the thin reconcile arms it again on its next pass.
    wait_until(lambda: (thin_row(agent, VM, volume) or {}).get("state") == "set",
               "the copy to be armed again on the restarted VM")
    row = thin_row(agent, VM, volume)
    assert row is not None and row["state"] == "set"
    # QEMU's allocation restarts at 0 with the VM: the image's own end says how full it is.
    room = row["physical"] - image_end_offset(destination_of(job)["path"], SubprocessRunner())
    assert room > CHUNK // 2  # the threshold sits half a chunk below the end
    disks.write(agent, "vdb", 700 * MIB, room - 4 * MIB, 0x22)
    later = thin_row(agent, VM, volume)
    assert later is not None and later["extends"] > row["extends"]
    assert later["physical"] > row["physical"] and later["state"] == "set"
    assert agent.json("vm", "show", VM)["state"] == "running"
    assert disks.matches(agent, "vdb")


def test_abort_ends_the_monitor_of_the_deleted_or_kept_copy(
    agent: AgentUnderTest, disks: Disks,
) -> None:
    early = agent.json("copy", VM, "vda", "--pool", "tl", "--bandwidth", "1M")
    assert thin_row(agent, VM, destination_of(early)["volume"]) is not None
    agent.json("job", "abort", early["id"])
    ended = wait_job_phase(agent, early["id"], ("aborted", "failed", "done"))
    assert ended["phase"] == "aborted" and ended["point_in_time_copy"] is False
    assert thin_row(agent, VM, destination_of(early)["volume"]) is None
    names = {volume["name"] for volume in agent.json("volume", "list", "tl")}
    assert destination_of(early)["volume"] not in names  # before READY: deleted

    job = agent.json("copy", VM, "vda", "--pool", "tl")
    volume = destination_of(job)["volume"]
    wait_job_phase(agent, job["id"], ("ready",))
    assert thin_row(agent, VM, volume) is not None
    agent.json("job", "abort", job["id"])
    ended = wait_job_phase(agent, job["id"], ("aborted", "failed", "done"))
    assert ended["phase"] == "aborted" and ended["point_in_time_copy"] is True
    assert thin_row(agent, VM, volume) is None
    kept = {v["name"]: v for v in agent.json("volume", "list", "tl")}
    assert kept[volume]["physical_bytes"] < GIB // 8
    assert disks.matches(agent, "vda", destination_of(job)["path"])
    agent.ok("volume", "delete", "tl", volume)


def test_a_full_pool_mid_copy_fails_the_job_and_the_vm_runs_on(
    agent: AgentUnderTest, disks: Disks,
) -> None:
    source = chain_paths(agent, VM, "vda")[0]
    initial = fill_size(measure_copy(source), chunk_bytes=CHUNK,
                        ceiling_bytes=qcow2_max_physical(GIB))
    agent.ok("pool", "create", "tf", "--type", "loop", "--chunk", "16M", "--utilization", "50",
             "--capacity", str(initial + 4 * MIB))
    job = agent.json("copy", VM, "vda", "--pool", "tf", "--bandwidth", "1M", "--pivot")
    volume = destination_of(job)["volume"]
    disks.write(agent, "vda", 800 * MIB, 40 * MIB, 0x41)
    agent.json("job", "speed", job["id"], "0")
    ended = wait_job_phase(agent, job["id"], ("done", "failed", "aborted"), timeout=120)
    assert ended["phase"] == "failed" and "cannot grow" in ended["error"], ended
    refused = events(agent, VM, "thin.extend_refused", volume=volume)
    assert refused and {event["code"] for event in refused} == {"pool.full"}
    assert ended["restarts"] == 1
    assert agent.json("vm", "show", VM)["state"] == "running"
    assert chain_paths(agent, VM, "vda") == [source]
    assert thin_row(agent, VM, volume) is None
    assert agent.json("volume", "list", "tf") == []
    assert agent.json("pool", "show", "tf")["used_bytes"] == 0
    assert events(agent, VM, "thin.paused") == []
    assert disks.matches(agent, "vda")


def test_a_destination_that_ran_out_of_room_is_grown_and_copied_again(
    agent: AgentUnderTest, disks: Disks,
) -> None:
    job = agent.json("copy", VM, "vda", "--pool", "tl")
    volume = destination_of(job)["volume"]
    wait_job_phase(agent, job["id"], ("ready",))
    agent.ok("agent", "stop")
    try:
        # Far more than the one chunk of room, mirrored at once with nobody to extend it.
        guest_like_write(agent, VM, "vda", 600 * MIB, 48 * MIB, 0x31)
        # Each probe is a libvirt of its own on the VM: one that finds the mirror concluded
        # also ends it in libvirt (and waits until it has), so "gone" counts as stopped too.
        wait_until(lambda: all(j["status"] == "concluded" for j in qemu_jobs(agent, VM)),
                   "QEMU's mirror to stop on the full destination")
    finally:
        agent.ok("agent", "start")
    disks.refs["vda"].write(600 * MIB, 48 * MIB, 0x31)
    wait_until(lambda: agent.json("job", "show", job["id"])["restarts"] == 1,
               "the copy to be started again")
    agent.json("job", "pivot", job["id"])
    done = wait_job_phase(agent, job["id"], ("done", "failed", "aborted"), timeout=120)
    assert (done["phase"], done["restarts"]) == ("done", 1), done
    [restarted] = events(agent, VM, "job.copy_restarted", job=job["id"])
    assert "needs" in restarted["reason"]
    assert chain_paths(agent, VM, "vda") == [destination_of(job)["path"]]
    row = thin_row(agent, VM, volume)
    assert row is not None and row["state"] == "set"
    assert events(agent, VM, "thin.paused") == []
    assert agent.json("vm", "show", VM)["state"] == "running"
    assert disks.matches(agent, "vda")


def test_a_shallow_copy_is_sized_by_its_top_layer(agent: AgentUnderTest, disks: Disks) -> None:
    agent.json("snapshot", "create", VM, "--name", "top", "--disk", "vda")
    disks.write(agent, "vda", 900 * MIB, 8 * MIB, 0x51)
    before = chain_paths(agent, VM, "vda")
    expected = fill_size(measure_copy(before[0], shallow=True), chunk_bytes=CHUNK,
                         ceiling_bytes=qcow2_max_physical(GIB))
    job = agent.json("copy", VM, "vda", "--pool", "tl", "--shallow", "--pivot")
    row = thin_row(agent, VM, destination_of(job)["volume"])
    assert row is not None and row["physical"] == expected < 2 * CHUNK
    done = wait_job_phase(agent, job["id"], ("done", "failed", "aborted"))
    assert done["phase"] == "done"
    assert chain_paths(agent, VM, "vda") == [destination_of(job)["path"], *before[1:]]
    assert disks.matches(agent, "vda")


def test_every_image_checks_clean(agent: AgentUnderTest, disks: Disks) -> None:
    agent.ok("vm", "destroy", VM)
    images = [path for target in ("vda", "vdb") for path in chain_paths(agent, VM, target)]
    for path in images:
        check_clean(path)
    assert Path(images[0]).exists()
