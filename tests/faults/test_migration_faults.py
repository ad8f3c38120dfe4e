"""SIGKILL of the source agent or of the destination agent in each phase of a migration
(check, prepare, migrating, finishing, cleanup), and the destination's libvirtd killed during
the copy. After the agents come back, every case ends the same way: the job ended (``done``
only if the VM runs on the destination), the VM runs on exactly one host, that host's store,
live XML and IOThread plan agree and its thin volume is armed, the other host has nothing of
the VM left (no domain, records, volumes, intents), and the disk reads back what was written
(``qemu-img compare`` with a reference). A migration that lands while its source agent is down
is picked up by both agents when they are back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockplane.lab import host_command, load
from tests.lab_support import Lab, LabHost, lab_command
from tests.migration_support import Reference as RawReference
from tests.migration_support import (
    agent_alive,
    agent_pid,
    agents_as_they_were,
    assert_gone,
    assert_holds,
    destroy_everywhere,
    disk_path,
    ensure_pools,
    job_of,
    jobs_of,
    make_vm,
    migrate,
    restart_agent,
    rows,
    running_vms,
    same_content,
    unique,
    wait_ended,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

#: Enough data that the copy lasts a moment at this bandwidth, little enough to stay quick.
DATA_MIB = 24
BANDWIDTH = "12M"


@dataclass
class Case:
    lab: Lab
    one: LabHost
    two: LabHost
    vm: str
    reference: RawReference
    volumes: set[str]

    def migrate_in_background(self, *args: str) -> subprocess.Popen[str]:
        argv = ["vm", "migrate", self.vm, "--to", self.two.name, "--json", "--wait", *args]
        command, environment = host_command(load(self.lab.dir), self.one.name,
                                            [sys.executable, "-m", "blockplane",
                                             "--no-autostart", *argv])
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def job_id(self) -> str:
        jobs = jobs_of(self.one, self.vm)
        assert jobs, "no migration job was recorded"
        return str(jobs[-1]["id"])

    def settle(self, expected: str) -> None:
        """Both agents up: the job ends ``expected``; the VM is on exactly one host."""
        for host in (self.one, self.two):
            if not agent_alive(self.lab, host):
                restart_agent(self.lab, host)
        ended = wait_ended(self.one, self.job_id())
        assert ended["phase"] == expected, ended
        holder, other = (self.two, self.one) if expected == "done" else (self.one, self.two)
        wait_for(lambda: not rows(other, "SELECT id FROM migrations WHERE phase NOT IN "
                                  "('done', 'failed', 'aborted', 'rolled_back')")
                 and not rows(holder, "SELECT id FROM migrations WHERE phase NOT IN "
                              "('done', 'failed', 'aborted', 'rolled_back')"),
                 "both hosts to settle the migration", 60)
        assert self.vm in running_vms(holder) and self.vm not in running_vms(other)
        assert_holds(self.lab, holder, self.vm)
        assert_gone(self.lab, other, self.vm, self.volumes)
        assert same_content(self.reference.path, disk_path(self.lab, holder, self.vm, "vda"))


@pytest.fixture(scope="module")
def hosts(lab: Lab) -> tuple[LabHost, LabHost]:
    ensure_pools(lab)
    return lab.hosts[0], lab.hosts[1]


@pytest.fixture
def case(lab: Lab, hosts: tuple[LabHost, LabHost], tmp_path: Path) -> Iterator[Case]:
    one, two = hosts
    vm = unique("mf")
    reference = make_vm(one, vm, thin_mib=128, data_mib=DATA_MIB,
                        reference=tmp_path / "vda.raw")
    assert reference is not None
    volumes = {name for (name,) in rows(one, "SELECT volume FROM disks WHERE vm = ?", vm)}
    try:
        yield Case(lab, one, two, vm, reference, volumes)
    finally:
        agents_as_they_were(lab)  # without failpoints, whatever the test left
        destroy_everywhere(lab, vm)


def copying(case: Case) -> bool:
    jobs = jobs_of(case.one, case.vm)
    if not jobs:
        return False
    job = job_of(case.one, jobs[-1]["id"])
    return bool(job["phase"] == "migrating" and (job.get("progress") or {}).get(
        "disk_processed", 0) > 0)


@pytest.mark.parametrize(("failpoint", "expected"), [
    ("migrate.check", "failed"),
    ("migrate.prepare.answered", "failed"),
    ("migrate.migrating", "failed"),
    ("migrate.copying", "done"),
    ("migrate.finishing", "done"),
    ("migrate.cleanup", "done"),
])
def test_the_source_agent_killed(case: Case, failpoint: str, expected: str) -> None:
    restart_agent(case.lab, case.one, failpoint)
    result = migrate(case.one, case.vm, case.two.name, "--bandwidth", BANDWIDTH)
    assert result.returncode in (1, 3), (result.stdout, result.stderr)
    wait_for(lambda: not agent_alive(case.lab, case.one), "the source agent to die", 30)
    if failpoint == "migrate.copying":
        # libvirt goes on without the agent: the VM lands, and the destination takes it
        wait_for(lambda: case.vm in running_vms(case.two)
                 and case.vm not in running_vms(case.one), "the VM to land", 120)
        wait_for(lambda: bool(rows(case.two, "SELECT id FROM migrations WHERE phase = 'done'"
                                   " AND vm = ?", case.vm)),
                 "the destination to finish it on its own", 60)
    restart_agent(case.lab, case.one)
    case.settle(expected)


def test_the_destination_agent_killed_in_the_check(case: Case) -> None:
    restart_agent(case.lab, case.two, "migrate.destination.plan")
    result = migrate(case.one, case.vm, case.two.name)
    assert result.returncode == 3 and "peer.unreachable" in result.stderr, result.stderr
    assert jobs_of(case.one, case.vm) == []  # refused: it never started
    restart_agent(case.lab, case.two)
    assert_holds(case.lab, case.one, case.vm)
    assert_gone(case.lab, case.two, case.vm, case.volumes)


@pytest.mark.parametrize(("failpoint", "expected"), [
    ("migrate.destination.prepare", "failed"),
    ("migrate.destination.prepared", "failed"),
    ("migrate.destination.finish", "done"),
])
def test_the_destination_agent_killed(case: Case, failpoint: str, expected: str) -> None:
    restart_agent(case.lab, case.two, failpoint)
    waiting = case.migrate_in_background()
    wait_for(lambda: not agent_alive(case.lab, case.two), "the destination agent to die", 120)
    restart_agent(case.lab, case.two)
    waiting.communicate(timeout=300)
    case.settle(expected)


def test_the_destination_agent_killed_during_the_copy(case: Case) -> None:
    waiting = case.migrate_in_background("--bandwidth", BANDWIDTH)
    wait_for(lambda: copying(case), "the copy to start")
    os.kill(agent_pid(case.lab, case.two), signal.SIGKILL)
    # the copy goes on between the two libvirtds; the source waits for the destination
    wait_for(lambda: case.vm in running_vms(case.two), "the VM to land", 120)
    wait_for(lambda: job_of(case.one, case.job_id())["phase"] == "finishing",
             "the source to wait for the destination to finish", 60)
    restart_agent(case.lab, case.two)
    waiting.communicate(timeout=300)
    case.settle("done")


def test_the_destination_agent_killed_during_the_cleanup(case: Case) -> None:
    restart_agent(case.lab, case.one, "migrate.cleanup=sleep:8")
    waiting = case.migrate_in_background()
    wait_for(lambda: bool(jobs_of(case.one, case.vm))
             and job_of(case.one, case.job_id())["phase"] == "cleanup", "the cleanup", 120)
    os.kill(agent_pid(case.lab, case.two), signal.SIGKILL)
    waiting.communicate(timeout=300)
    restart_agent(case.lab, case.two)
    case.settle("done")


def test_the_destination_libvirtd_killed_during_the_copy(case: Case) -> None:
    waiting = case.migrate_in_background("--bandwidth", BANDWIDTH)
    wait_for(lambda: copying(case), "the copy to start")
    shown = lab_command("show", "--dir", str(case.lab.dir))
    libvirtd = int(json.loads(shown.stdout)["hosts"][1]["libvirtd_pid"])
    os.kill(libvirtd, signal.SIGKILL)
    restarted = lab_command("restart", "--dir", str(case.lab.dir), case.two.name, "libvirtd")
    assert restarted.returncode == 0, restarted.stderr
    waiting.communicate(timeout=300)
    case.settle("failed")
    assert "libvirt" in (job_of(case.one, case.job_id())["error"] or "")
