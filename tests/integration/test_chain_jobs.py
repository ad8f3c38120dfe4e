"""Backing chains on real images: snapshots, every block job, abort, pivot, speed, job.busy,
SIGKILL of the agent mid-job, backups with a restore check, and clean images at the end.

A no-OS VM cannot write, so data reaches the chain's layers while the VM is stopped: offline
snapshots, then ``qemu-io`` into the new top. A raw reference file gets the same writes, and
``qemu-img compare`` checks every disk against it after each step. vda lives on a dir pool;
vdb is a thin volume on a loop pool (qcow2 on block devices, thin overlays).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import (
    Reference,
    chain_paths,
    check_clean,
    last_json_line,
    qemu_io_write,
    restore,
    same_content,
    wait_phase,
)
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration

MIB = 1 << 20
VM = "cj"


@dataclass
class Setup:
    refs: dict[str, Reference]
    pools: dict[str, str]
    seen: set[str] = field(default_factory=set)

    def top(self, agent: AgentUnderTest, target: str) -> str:
        paths = chain_paths(agent, VM, target)
        self.seen.update(paths)
        return paths[0]

    def matches(self, agent: AgentUnderTest, target: str) -> bool:
        """The disk's chain reads back as the reference does, as written on the host.

        A running QEMU keeps qcow2 metadata (L2 tables) cached until it flushes, so a host-side
        read of a live image may see stale metadata: the VM is powered off (QEMU flushes as it
        exits) for the comparison, and started again.
        """
        top = self.top(agent, target)
        running = agent.json("vm", "show", VM)["state"] == "running"
        if running:
            agent.ok("vm", "destroy", VM)
        try:
            return same_content(self.refs[target].path, top)
        finally:
            if running:
                agent.ok("vm", "start", VM)

    def write(self, agent: AgentUnderTest, target: str, offset: int, length: int,
              pattern: int) -> None:
        """Write into the top of a stopped VM's disk, and into the reference."""
        qemu_io_write(self.top(agent, target), offset, length, pattern)
        self.refs[target].write(offset, length, pattern)


def offline_layer(agent: AgentUnderTest, setup: Setup, name: str,
                  writes: dict[str, tuple[int, int, int]]) -> None:
    """Snapshot the stopped VM's disks in ``writes``, then write into the new overlays."""
    disks = [arg for target in writes for arg in ("--disk", target)]
    agent.json("snapshot", "create", VM, "--name", name, *disks)
    for target, (offset, length, pattern) in writes.items():
        setup.write(agent, target, offset, length, pattern)


def job_cli(agent: AgentUnderTest, *args: str) -> dict[str, Any]:
    """Run a job command with --wait; its last JSON line is the job as it ended."""
    job: dict[str, Any] = last_json_line(agent.ok(*args, "--wait"))
    return job


def gone(path: str) -> bool:
    return not os.path.exists(path)


@pytest.fixture(scope="module")
def setup(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    scratch = tmp_path_factory.mktemp("chain")
    agent.ok("pool", "create", "cf", "--type", "dir")
    agent.ok("pool", "create", "cl", "--type", "loop", "--chunk", "16M")
    agent.ok("pool", "create", "cb", "--type", "dir")
    pools = {p["name"]: p["path"] for p in agent.json("pool", "list")}
    agent.json("vm", "create", VM, "--vcpus", "1", "--memory", "256M")
    assert agent.json("disk", "attach", VM, "--pool", "cf", "--size", "64M")["target"] == "vda"
    thin = agent.json("disk", "attach", VM, "--pool", "cl", "--size", "64M", "--thin")
    assert thin["target"] == "vdb"
    refs = {t: Reference(scratch / f"{t}.raw", 64 * MIB) for t in ("vda", "vdb")}
    state = Setup(refs, pools)
    state.write(agent, "vda", 0, 24 * MIB, 0x11)
    state.write(agent, "vdb", 0, 6 * MIB, 0x21)
    offline_layer(agent, state, "s1", {"vda": (4 * MIB, 4 * MIB, 0x12),
                                       "vdb": (2 * MIB, 2 * MIB, 0x22)})
    offline_layer(agent, state, "s2", {"vda": (6 * MIB, 4 * MIB, 0x13),
                                       "vdb": (3 * MIB, 2 * MIB, 0x23)})
    agent.ok("vm", "start", VM)
    return state


def test_chain_lists_every_element_and_live_snapshot(agent: AgentUnderTest,
                                                     setup: Setup) -> None:
    chain = agent.json("chain", VM, "vda")
    names = [e["name"] for e in chain["elements"]]
    assert names == ["vda", "vda[1]", "vda[2]"] and chain["complete"] and chain["running"]
    indexes = [e["libvirt_index"] for e in chain["elements"]]
    assert None not in indexes and len(set(indexes)) == 3
    assert [e["backing_format"] for e in chain["elements"]] == ["qcow2", "qcow2", None]
    assert all(e["virtual_bytes"] == 64 * MIB for e in chain["elements"])
    assert chain["elements"][2]["allocation_bytes"] >= 24 * MIB
    thin = agent.json("chain", VM, "vdb")
    assert {e["source_kind"] for e in thin["elements"]} == {"block"}
    assert setup.matches(agent, "vda") and setup.matches(agent, "vdb")

    # No guest agent in a no-OS VM: --quiesce fails clearly and changes nothing.
    refused = agent.cli("snapshot", "create", VM, "--quiesce", "--name", "q")
    assert refused.returncode == 2 and "guest agent" in refused.stderr
    assert len(agent.json("chain", VM, "vda")["elements"]) == 3

    live = agent.json("snapshot", "create", VM, "--name", "s3", "--disk", "vda")
    assert live["state"] == "done" and live["disks"][0]["status"] == "in_chain"
    assert chain_paths(agent, VM, "vda")[0] == live["disks"][0]["path"]
    assert [s["name"] for s in agent.json("snapshot", "list", VM)] == ["s1", "s2", "s3"]
    assert setup.matches(agent, "vda")


def test_intermediate_commit(agent: AgentUnderTest, setup: Setup) -> None:
    before = chain_paths(agent, VM, "vda")  # s3, s2, s1, base
    job = job_cli(agent, "commit", VM, "vda", "--top", "vda[2]", "--base", "vda[3]")
    assert (job["kind"], job["phase"], job["outcome"]) == ("commit", "done", "succeeded")
    assert chain_paths(agent, VM, "vda") == [before[0], before[1], before[3]]
    assert gone(before[2])
    assert setup.matches(agent, "vda")
    s1 = next(s for s in agent.json("snapshot", "list", VM) if s["name"] == "s1")
    assert {d["target"]: d["status"] for d in s1["disks"]}["vda"] == "merged"


def test_busy_speed_and_abort_after_ready(agent: AgentUnderTest, setup: Setup) -> None:
    job = agent.json("copy", VM, "vda", "--pool", "cf", "--bandwidth", "1M")
    assert job["phase"] == "running"
    second = agent.cli("pull", VM, "vda")
    assert second.returncode == 2 and "busy" in second.stderr
    with agent.http() as http:
        refused = http.post(f"/v1/vms/{VM}/disks/vda/pull", json={})
        assert refused.status_code == 409 and refused.json()["code"] == "job.busy"
        snapshot = http.post(f"/v1/vms/{VM}/snapshots", json={"disks": ["vda"]})
        assert snapshot.status_code == 409 and snapshot.json()["code"] == "job.busy"
    disks_before = agent.json("disk", "list", VM)
    detach = agent.cli("disk", "detach", VM, "vda")
    delete = agent.cli("vm", "delete", VM)
    assert detach.returncode == 2 and "busy" in detach.stderr
    assert delete.returncode == 2
    assert agent.json("disk", "list", VM) == disks_before
    assert agent.json("job", "show", job["id"])["phase"] == "running"

    sped = agent.json("job", "speed", job["id"], "0")
    assert sped["spec"]["bandwidth"] == 0
    ready = wait_phase(agent, job["id"], ("ready",))
    assert ready["ready"] and ready["progress"]["cur"] == ready["progress"]["end"]

    aborted = agent.json("job", "abort", job["id"])
    assert aborted["phase"] in ("aborting", "cleanup", "aborted")
    ended = wait_phase(agent, job["id"], ("aborted", "failed", "done"))
    assert ended["phase"] == "aborted" and ended["point_in_time_copy"] is True
    copy = ended["spec"]["destination"]["path"]
    assert os.path.exists(copy) and copy not in chain_paths(agent, VM, "vda")
    assert same_content(setup.refs["vda"].path, copy)
    setup.seen.add(copy)


def test_abort_before_ready_deletes_the_copy(agent: AgentUnderTest, setup: Setup) -> None:
    before = chain_paths(agent, VM, "vda")
    job = agent.json("copy", VM, "vda", "--pool", "cf", "--bandwidth", "512K")
    agent.json("job", "abort", job["id"])
    ended = wait_phase(agent, job["id"], ("aborted", "failed", "done"))
    assert ended["phase"] == "aborted" and ended["point_in_time_copy"] is False
    assert gone(ended["spec"]["destination"]["path"])
    assert chain_paths(agent, VM, "vda") == before
    assert setup.matches(agent, "vda")


def test_active_commit_with_pivot(agent: AgentUnderTest, setup: Setup) -> None:
    before = chain_paths(agent, VM, "vda")  # s3, s2, base
    job = job_cli(agent, "commit", VM, "vda", "--pivot")
    assert (job["kind"], job["phase"]) == ("active_commit", "done")
    assert chain_paths(agent, VM, "vda") == [before[-1]]
    assert gone(before[0]) and gone(before[1])
    disk = next(d for d in agent.json("disk", "list", VM) if d["target"] == "vda")
    assert disk["source"] == before[-1] and disk["volume"] == f"{VM}-vda"
    assert setup.matches(agent, "vda")


def test_pull_with_base_then_all(agent: AgentUnderTest, setup: Setup) -> None:
    agent.ok("vm", "destroy", VM)
    offline_layer(agent, setup, "s4", {"vda": (12 * MIB, 2 * MIB, 0x14)})
    offline_layer(agent, setup, "s5", {"vda": (13 * MIB, 2 * MIB, 0x15)})
    agent.ok("vm", "start", VM)
    before = chain_paths(agent, VM, "vda")  # s5, s4, base
    job = job_cli(agent, "pull", VM, "vda", "--base", "vda[2]")
    assert (job["kind"], job["phase"]) == ("pull", "done")
    assert chain_paths(agent, VM, "vda") == [before[0], before[2]] and gone(before[1])
    assert setup.matches(agent, "vda")
    job_cli(agent, "pull", VM, "vda")
    assert chain_paths(agent, VM, "vda") == [before[0]] and gone(before[2])
    assert setup.matches(agent, "vda")


def test_copy_with_pivot_then_shallow_copy_to_a_path(agent: AgentUnderTest,
                                                     setup: Setup) -> None:
    before = chain_paths(agent, VM, "vda")
    job = job_cli(agent, "copy", VM, "vda", "--pool", "cf", "--pivot")
    destination = job["spec"]["destination"]["path"]
    assert job["phase"] == "done" and chain_paths(agent, VM, "vda") == [destination]
    assert gone(before[0]) and setup.matches(agent, "vda")

    agent.json("snapshot", "create", VM, "--name", "s6", "--disk", "vda")
    overlay = chain_paths(agent, VM, "vda")[0]
    target = os.path.join(setup.pools["cf"], "cj-shallow")
    outside = agent.cli("copy", VM, "vda", "--dest", "/tmp/elsewhere.qcow2")
    assert outside.returncode == 2
    job = job_cli(agent, "copy", VM, "vda", "--dest", target, "--shallow", "--sync-writes",
                  "--pivot")
    assert job["phase"] == "done" and job["spec"]["shallow"] is True
    assert chain_paths(agent, VM, "vda") == [target, destination]
    assert gone(overlay) and setup.matches(agent, "vda")


def test_thin_active_commit_pre_extends_the_base(agent: AgentUnderTest, setup: Setup) -> None:
    before = chain_paths(agent, VM, "vdb")  # s2, s1, base: thin volumes on loop devices
    status = {row["volume"]: row for row in agent.json("thin", "status", VM)}
    base_volume = f"{VM}-vdb"
    assert {f"{VM}-vdb-s1", f"{VM}-vdb-s2", base_volume} <= set(status)
    physical_before = status[base_volume]["physical"]
    job = job_cli(agent, "commit", VM, "vdb", "--pivot")
    assert job["phase"] == "done"
    assert chain_paths(agent, VM, "vdb") == [before[-1]]
    status = {row["volume"]: row for row in agent.json("thin", "status", VM)}
    assert set(status) == {base_volume}
    assert status[base_volume]["physical"] > physical_before
    assert setup.matches(agent, "vdb")


def test_sigkill_mid_copy_then_restart_keeps_tracking(agent: AgentUnderTest,
                                                      setup: Setup) -> None:
    job = agent.json("copy", VM, "vda", "--pool", "cf", "--bandwidth", "1M", "--pivot")
    time.sleep(1.5)
    agent.kill_9()
    agent.ok("agent", "start")
    tracked = agent.json("job", "show", job["id"])
    assert tracked["phase"] == "running" and tracked["progress"]["cur"] > 0
    agent.json("job", "speed", job["id"], "0")
    ended = wait_phase(agent, job["id"], ("done", "failed", "aborted"))
    assert ended["phase"] == "done"
    assert chain_paths(agent, VM, "vda")[0] == ended["spec"]["destination"]["path"]
    assert setup.matches(agent, "vda")


def test_sigkill_then_jobs_finish_while_down(agent: AgentUnderTest, setup: Setup) -> None:
    agent.ok("vm", "destroy", VM)
    offline_layer(agent, setup, "s7", {"vda": (30 * MIB, 8 * MIB, 0x17)})
    offline_layer(agent, setup, "s8", {"vda": (31 * MIB, 1 * MIB, 0x18)})
    agent.ok("vm", "start", VM)
    before = chain_paths(agent, VM, "vda")  # s8, s7, copy
    commit = agent.json("commit", VM, "vda", "--top", "vda[1]", "--base", "vda[2]",
                        "--bandwidth", "4M")
    agent.kill_9()
    time.sleep(5)
    agent.ok("agent", "start")
    ended = wait_phase(agent, commit["id"], ("done", "failed", "aborted"))
    assert ended["phase"] == "done" and ended["outcome"] == "succeeded"
    assert chain_paths(agent, VM, "vda") == [before[0], before[2]] and gone(before[1])
    assert setup.matches(agent, "vda")

    # READY while the agent was down, with a pivot requested: the restarted agent pivots.
    copy = agent.json("copy", VM, "vda", "--pool", "cf", "--bandwidth", "8M", "--pivot")
    agent.kill_9()
    time.sleep(7)
    agent.ok("agent", "start")
    ended = wait_phase(agent, copy["id"], ("done", "failed", "aborted"))
    assert ended["phase"] == "done"
    assert chain_paths(agent, VM, "vda") == [ended["spec"]["destination"]["path"]]
    assert setup.matches(agent, "vda")


def test_backup_full_and_incremental_restore_to_the_source(agent: AgentUnderTest,
                                                           setup: Setup,
                                                           tmp_path: Path) -> None:
    root = Path(setup.pools["cb"])
    full = job_cli(agent, "backup", VM, "--dest", str(root / "full"))
    assert (full["kind"], full["phase"]) == ("backup", "done")
    checkpoint = full["spec"]["checkpoint"]
    full_vda = full["spec"]["backup_files"]["vda"]
    assert same_content(setup.refs["vda"].path, full_vda)

    agent.ok("vm", "destroy", VM)  # qemu-io's writes land in the checkpoint's dirty bitmap
    setup.write(agent, "vda", 20 * MIB, 2 * MIB, 0x16)
    agent.ok("vm", "start", VM)
    missing = agent.cli("backup", VM, "--dest", str(root / "x"), "--incremental", "nope")
    assert missing.returncode == 2
    incremental = job_cli(agent, "backup", VM, "--dest", str(root / "inc1"), "--disk", "vda",
                          "--incremental", checkpoint)
    assert incremental["phase"] == "done"
    inc_vda = incremental["spec"]["backup_files"]["vda"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", inc_vda],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["actual-size"] < 8 * MIB  # only what changed since the checkpoint
    assert not same_content(setup.refs["vda"].path, full_vda)
    restored = restore(full_vda, [inc_vda], tmp_path / "restore")
    assert same_content(setup.refs["vda"].path, restored)
    setup.seen.update({full_vda, inc_vda, full["spec"]["backup_files"]["vdb"]})


def test_jobs_report_outcomes_and_every_image_checks_clean(agent: AgentUnderTest,
                                                           setup: Setup) -> None:
    jobs = agent.json("job", "list", VM)
    assert {j["phase"] for j in jobs} <= {"done", "aborted", "failed"}
    assert [j["phase"] for j in jobs].count("aborted") == 2
    assert agent.cli("job", "show", "nonexistent").returncode == 2
    live = {path for target in ("vda", "vdb") for path in chain_paths(agent, VM, target)}
    # Files kept (point-in-time copy, backups) and every image still in a chain; loop
    # devices of deleted volumes are detached and may already serve another volume.
    kept = {path for path in setup.seen if not path.startswith("/dev/") and os.path.exists(path)}
    agent.ok("vm", "destroy", VM)
    for path in sorted(live | kept):
        check_clean(path)
    assert len(live | kept) >= 5
