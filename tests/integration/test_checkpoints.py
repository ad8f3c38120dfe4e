"""Backup checkpoints on real images: list, delete (bitmaps merge into the parent), refusals, and
incrementals that still restore to exactly the source after a snapshot + commit and a snapshot
+ pull moved the checkpoint's bitmaps between images.

As in test_chain_jobs, a no-OS VM cannot write: data reaches the disk while the VM is stopped,
through ``qemu-io``, which also marks the persistent dirty bitmaps in the image; a raw reference
file gets the same writes. An incremental is checked by laying it over the full backup
(``restore``) and comparing with the reference.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import (
    Reference,
    chain_paths,
    last_json_line,
    qemu_io_write,
    restore,
    same_content,
    wait_phase,
)
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration

MIB = 1 << 20
VM = "ck"


@dataclass
class Setup:
    ref: Reference
    backups: Path
    full_vda: str
    first: str  # the full backup's checkpoint

    def write(self, agent: AgentUnderTest, offset: int, length: int, pattern: int) -> None:
        """Into the top of vda, with the VM stopped for the write, then running again."""
        agent.ok("vm", "destroy", VM)
        qemu_io_write(chain_paths(agent, VM, "vda")[0], offset, length, pattern)
        self.ref.write(offset, length, pattern)
        agent.ok("vm", "start", VM)


def job_cli(agent: AgentUnderTest, *args: str) -> dict[str, Any]:
    job: dict[str, Any] = last_json_line(agent.ok(*args, "--wait"))
    return job


def backup(agent: AgentUnderTest, setup: Setup, name: str,
           incremental: str | None = None) -> dict[str, Any]:
    extra = ["--incremental", incremental] if incremental else []
    job = job_cli(agent, "backup", VM, "--dest", str(setup.backups / name), *extra)
    assert (job["kind"], job["phase"]) == ("backup", "done"), job
    return job


def restores_the_source(setup: Setup, incremental: dict[str, Any], scratch: Path) -> bool:
    restored = restore(setup.full_vda, [incremental["spec"]["backup_files"]["vda"]], scratch)
    return same_content(setup.ref.path, restored)


def allocated(path: str) -> int:
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", path],
                                     capture_output=True, text=True, check=True).stdout)
    return int(info["actual-size"])


def names(agent: AgentUnderTest) -> list[str]:
    return [c["name"] for c in agent.json("checkpoint", "list", VM)]


@pytest.fixture(scope="module")
def setup(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    scratch = tmp_path_factory.mktemp("checkpoints")
    agent.ok("pool", "create", "kf", "--type", "dir")
    agent.ok("pool", "create", "kb", "--type", "dir")
    pools = {p["name"]: p["path"] for p in agent.json("pool", "list")}
    agent.json("vm", "create", VM, "--vcpus", "1", "--memory", "256M")
    agent.json("disk", "attach", VM, "--pool", "kf", "--size", "64M")
    ref = Reference(scratch / "vda.raw", 64 * MIB)
    qemu_io_write(chain_paths(agent, VM, "vda")[0], 0, 16 * MIB, 0x11)
    ref.write(0, 16 * MIB, 0x11)
    agent.ok("vm", "start", VM)
    backups = Path(pools["kb"])
    full = job_cli(agent, "backup", VM, "--dest", str(backups / "full"))
    assert full["phase"] == "done"
    assert same_content(ref.path, full["spec"]["backup_files"]["vda"])
    return Setup(ref, backups, full["spec"]["backup_files"]["vda"], full["spec"]["checkpoint"])


def test_list_shows_the_full_backups_checkpoint(agent: AgentUnderTest, setup: Setup) -> None:
    [checkpoint] = agent.json("checkpoint", "list", VM)
    assert checkpoint["name"] == setup.first and checkpoint["parent"] is None
    assert checkpoint["used_by_job"] is None and checkpoint["created_at"] > 0
    [disk] = checkpoint["disks"]
    assert disk["target"] == "vda" and disk["bitmap"] == setup.first
    assert disk["dirty_bytes"] == 0  # nothing written since the backup
    human = agent.ok("checkpoint", "list", VM)
    assert setup.first in human


def test_unknown_checkpoint_or_vm_is_refused(agent: AgentUnderTest, setup: Setup) -> None:
    refused = agent.cli("checkpoint", "delete", VM, "nope")
    assert refused.returncode == 2 and "no checkpoint 'nope'" in refused.stderr
    assert agent.cli("checkpoint", "list", "no-such-vm").returncode == 2
    with agent.http() as http:
        missing = http.delete(f"/v1/vms/{VM}/checkpoints/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.json()["code"] == "checkpoint.not_found"
        assert http.get("/v1/vms/no-such-vm/checkpoints").json()["code"] == "vm.not_found"
        listed = http.get(f"/v1/vms/{VM}/checkpoints")
        assert listed.status_code == 200 and listed.json()[0]["name"] == setup.first
    assert names(agent) == [setup.first]


def test_incremental_after_snapshot_and_active_commit_restores_the_source(
        agent: AgentUnderTest, setup: Setup, tmp_path: Path) -> None:
    setup.write(agent, 20 * MIB, 2 * MIB, 0x21)  # into the base, after the checkpoint
    base = chain_paths(agent, VM, "vda")[0]
    agent.json("snapshot", "create", VM, "--name", "s1")
    setup.write(agent, 24 * MIB, 2 * MIB, 0x22)  # into the overlay
    job = job_cli(agent, "commit", VM, "vda", "--pivot")
    assert job["phase"] == "done" and chain_paths(agent, VM, "vda") == [base]
    setup.write(agent, 28 * MIB, 1 * MIB, 0x23)

    incremental = backup(agent, setup, "after-commit", incremental=setup.first)
    assert allocated(incremental["spec"]["backup_files"]["vda"]) < 12 * MIB
    assert restores_the_source(setup, incremental, tmp_path / "restore")


def test_incremental_after_snapshot_and_pull_restores_the_source(
        agent: AgentUnderTest, setup: Setup, tmp_path: Path) -> None:
    setup.write(agent, 32 * MIB, 2 * MIB, 0x31)
    agent.json("snapshot", "create", VM, "--name", "s2")
    top = chain_paths(agent, VM, "vda")[0]
    setup.write(agent, 36 * MIB, 2 * MIB, 0x32)
    job = job_cli(agent, "pull", VM, "vda")
    assert job["phase"] == "done" and chain_paths(agent, VM, "vda") == [top]
    setup.write(agent, 40 * MIB, 1 * MIB, 0x33)

    incremental = backup(agent, setup, "after-pull", incremental=setup.first)
    assert allocated(incremental["spec"]["backup_files"]["vda"]) < 16 * MIB
    assert restores_the_source(setup, incremental, tmp_path / "restore")


def test_delete_merges_into_the_parent(agent: AgentUnderTest, setup: Setup,
                                       tmp_path: Path) -> None:
    before = names(agent)  # the full's, then one per incremental above
    assert before[0] == setup.first and len(before) == 3
    latest = before[-1]
    setup.write(agent, 44 * MIB, 1 * MIB, 0x41)  # only in the latest checkpoint's bitmap
    deleted = agent.json("checkpoint", "delete", VM, latest)
    assert deleted == {"vm": VM, "name": latest, "deleted": True, "merged_into": before[1]}
    assert names(agent) == before[:-1]
    refused = agent.cli("backup", VM, "--dest", str(setup.backups / "x"),
                        "--incremental", latest)
    assert refused.returncode == 2

    middle = before[1]
    with agent.http() as http:
        response = http.delete(f"/v1/vms/{VM}/checkpoints/{middle}")
        assert response.status_code == 200 and response.json()["merged_into"] == setup.first
    assert names(agent) == [setup.first]
    setup.write(agent, 46 * MIB, 1 * MIB, 0x42)

    incremental = backup(agent, setup, "after-delete", incremental=setup.first)
    assert restores_the_source(setup, incremental, tmp_path / "restore")


def test_refused_while_a_job_holds_the_disk_or_the_vm_is_off(agent: AgentUnderTest,
                                                             setup: Setup) -> None:
    checkpoints = names(agent)
    copy = agent.json("copy", VM, "vda", "--pool", "kf", "--bandwidth", "1M")
    try:
        listed = agent.json("checkpoint", "list", VM)
        assert {c["used_by_job"] for c in listed} == {copy["id"]}
        busy = agent.cli("checkpoint", "delete", VM, checkpoints[0])
        assert busy.returncode == 2 and "busy" in busy.stderr
        with agent.http() as http:
            refused = http.delete(f"/v1/vms/{VM}/checkpoints/{checkpoints[0]}")
            assert refused.status_code == 409 and refused.json()["code"] == "job.busy"
    finally:
        agent.json("job", "abort", copy["id"])
        wait_phase(agent, copy["id"], ("aborted", "failed", "done"))
    agent.ok("vm", "destroy", VM)
    try:
        stopped = agent.cli("checkpoint", "delete", VM, checkpoints[0])
        assert stopped.returncode == 2 and "not running" in stopped.stderr
        assert names(agent) == checkpoints  # listed while stopped too
    finally:
        agent.ok("vm", "start", VM)
    assert names(agent) == checkpoints


def test_a_running_backup_holds_the_checkpoint_it_creates_and_the_one_it_starts_from(
        agent: AgentUnderTest, setup: Setup) -> None:
    """1 GiB of changed data keeps each backup running for about 3 s here, while the deletes and
    the listing right after the start take milliseconds."""
    vm, size = "ckheld", 1024 * MIB
    agent.json("vm", "create", vm, "--vcpus", "1", "--memory", "256M")
    try:
        agent.json("disk", "attach", vm, "--pool", "kf", "--size", "1G")
        qemu_io_write(chain_paths(agent, vm, "vda")[0], 0, size, 0x21)
        agent.ok("vm", "start", vm)
        with agent.http() as http:
            def start_backup(name: str, incremental: str | None = None) -> dict[str, Any]:
                started = http.post(f"/v1/vms/{vm}/backup",
                                    json={"dest": str(setup.backups / name),
                                          "incremental": incremental})
                assert started.status_code == 202, started.text
                job: dict[str, Any] = started.json()
                return job

            def refused_as_busy(name: str) -> bool:
                response = http.delete(f"/v1/vms/{vm}/checkpoints/{name}")
                return response.status_code == 409 and response.json()["code"] == "job.busy"

            def holders() -> dict[str, str | None]:
                listed = http.get(f"/v1/vms/{vm}/checkpoints").json()
                return {c["name"]: c["used_by_job"] for c in listed}

            full = start_backup("held-full")
            created = full["spec"]["checkpoint"]
            assert refused_as_busy(created)
            assert holders() == {created: full["id"]}
            assert wait_phase(agent, full["id"], ("done", "failed"))["phase"] == "done"
            assert holders() == {created: None}

            agent.ok("vm", "destroy", vm)
            qemu_io_write(chain_paths(agent, vm, "vda")[0], 0, size, 0x22)
            agent.ok("vm", "start", vm)
            incremental = start_backup("held-incremental", incremental=created)
            second = incremental["spec"]["checkpoint"]
            assert refused_as_busy(created) and refused_as_busy(second)
            assert holders() == {created: incremental["id"], second: incremental["id"]}
            ended = wait_phase(agent, incremental["id"], ("done", "failed"))
            assert ended["phase"] == "done", ended
            assert holders() == {created: None, second: None}
            assert http.delete(f"/v1/vms/{vm}/checkpoints/{created}").status_code == 200
            assert list(holders()) == [second]
    finally:
        agent.cli("vm", "destroy", vm)
        agent.ok("vm", "delete", vm)
