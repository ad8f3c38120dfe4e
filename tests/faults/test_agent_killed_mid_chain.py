"""The agent SIGKILLed at each step of a snapshot and in every phase of a block job, restarted.

A copy job with ``--pivot`` passes through every phase a block job has (PREPARING, RUNNING,
READY, PIVOTING, CLEANUP, DONE; ABORTING with ``job abort``); a failpoint kills the agent at
the step where each phase is recorded but its action not yet taken (or taken but not yet
recorded). RUNNING and READY last until something happens, so a plain SIGKILL lands in them.
The restarted agent must finish or undo it: the job ends in an honest outcome (never ``done``
for a job whose effect is not in the chain), a snapshot is on top or gone entirely, no volume
leaks, the store agrees with the live XML, every image checks clean, and the disk reads back
what was written into it before (``qemu-img compare`` with a raw reference).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import Reference, qemu_io_write, same_content
from tests.faults.consistency import (
    agent_dead,
    api_get,
    assert_consistent,
    events_of,
    restart_with_failpoints,
    run_until_killed,
    store_rows,
    wait_for,
)
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.faults

MIB = 1 << 20
VM = "fault-chain"


@pytest.fixture(scope="module")
def reference(agent: AgentUnderTest) -> Reference:
    """vda on a dir pool, holding two written patterns, and the raw file it must equal."""
    agent.ok("pool", "create", "cp", "--type", "dir")
    agent.ok("vm", "create", VM, "--memory", "128M")
    disk = agent.json("disk", "attach", VM, "--pool", "cp", "--size", "64M")
    ref = Reference(agent.home / "reference.raw", 64 * MIB)
    for offset, length, pattern in ((0, 4 * MIB, 0x11), (40 * MIB, 2 * MIB, 0x22)):
        qemu_io_write(disk["source"], offset, length, pattern)
        ref.write(offset, length, pattern)
    agent.ok("vm", "start", VM)
    return ref


def top(agent: AgentUnderTest) -> str:
    elements = api_get(agent, f"/vms/{VM}/disks/vda/chain")["elements"]
    return str(elements[0]["path"])


def assert_intact(agent: AgentUnderTest, reference: Reference) -> None:
    """Consistent, and the disk (whatever its chain now is) reads back the reference."""
    assert_consistent(agent, VM)
    assert same_content(reference.path, top(agent))
    assert store_rows(agent, "SELECT id FROM chain_jobs WHERE phase NOT IN "
                             "('done', 'failed', 'aborted')") == []


def job_of(agent: AgentUnderTest) -> dict[str, Any]:
    """The newest job of the VM."""
    jobs: list[dict[str, Any]] = api_get(agent, "/jobs", vm=VM)
    return max(jobs, key=lambda job: job["created_at"])


def lost_by_libvirt(agent: AgentUnderTest, job_id: str) -> bool:
    """The agent found libvirt's record of this backup stale (``chain.jobs.reconcile``)."""
    return (f"backup job {job_id} of {VM} running but none of its disks"
            in (agent.home / "agent.log").read_text())


def wait_job(agent: AgentUnderTest, job_id: str, *phases: str) -> dict[str, Any]:
    wait_for(lambda: api_get(agent, f"/jobs/{job_id}")["phase"] in phases,
             f"job {job_id} to reach {phases}", 60)
    job: dict[str, Any] = api_get(agent, f"/jobs/{job_id}")
    return job


def test_killed_before_the_snapshot_is_taken(agent: AgentUnderTest,
                                              reference: Reference) -> None:
    before = top(agent)
    env = restart_with_failpoints(agent, "snapshot.after_overlays")
    run_until_killed(agent, env, "snapshot", "create", VM, "--name", "early")
    agent.ok("agent", "start")  # the start-up reconcile undoes the half-made snapshot
    assert top(agent) == before
    assert "early" not in {s["name"] for s in api_get(agent, f"/vms/{VM}/snapshots")}
    assert_intact(agent, reference)


def test_killed_after_the_snapshot_is_taken(agent: AgentUnderTest,
                                             reference: Reference) -> None:
    before = top(agent)
    env = restart_with_failpoints(agent, "snapshot.after_snapshot")
    run_until_killed(agent, env, "snapshot", "create", VM, "--name", "late")
    agent.ok("agent", "start")  # ... and finishes one libvirt took
    [late] = [s for s in api_get(agent, f"/vms/{VM}/snapshots") if s["name"] == "late"]
    assert late["state"] == "done" and late["disks"][0]["status"] == "in_chain"
    assert top(agent) == late["disks"][0]["path"] != before
    assert_intact(agent, reference)


def test_a_snapshot_outlives_the_reconciles_while_it_is_taken(agent: AgentUnderTest,
                                                               reference: Reference) -> None:
    """Every reconcile pass finishes or undoes the snapshots a dead agent left ``creating``; one
    being taken now is ``creating`` too, with its overlays made but not yet on top. With the
    taking held for longer than two passes, no pass may undo it."""
    before = top(agent)
    restart_with_failpoints(agent, "snapshot.after_overlays=sleep:5")
    try:
        taken = agent.json("snapshot", "create", VM, "--name", "slow")
    finally:
        agent.ok("agent", "stop")
        agent.ok("agent", "start")
    assert "failpoint snapshot.after_overlays: sleeping" in (agent.home / "agent.log").read_text()
    [disk] = taken["disks"]
    assert taken["state"] == "done" and disk["status"] == "in_chain"
    assert top(agent) == disk["path"] != before
    deleted = events_of(agent, "chain.volume_deleted")
    assert [event for event in deleted if event["volume"] == disk["volume"]] == []
    assert_intact(agent, reference)


@pytest.mark.parametrize(
    ("failpoint", "outcome"),
    [
        ("job.copy.after_destination", "failed"),  # PREPARING: nothing started in libvirt
        ("job.after_libvirt_start", "succeeded"),  # libvirt runs it, recorded PREPARING
        ("job.pivot.after_persist", "succeeded"),  # PIVOTING recorded, pivot not asked
        ("job.pivot.after_issue", "succeeded"),  # pivot asked, not seen
        ("job.cleanup.before", "succeeded"),  # outcome recorded, cleanup not run
    ],
)
def test_killed_in_a_copy_job(agent: AgentUnderTest, reference: Reference, failpoint: str,
                              outcome: str) -> None:
    before = top(agent)
    env = restart_with_failpoints(agent, failpoint)
    started = subprocess.run(
        [*agent.command, "--no-autostart", "copy", VM, "vda", "--pool", "cp", "--pivot"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )
    # Killed in the request itself, or later on the READY event: either way it dies.
    wait_for(lambda: agent_dead(agent), f"the agent to die at {failpoint}", 60)
    assert started.returncode in (0, 1, 3), started.stderr
    agent.ok("agent", "start")
    job = wait_job(agent, job_of(agent)["id"], "done", "failed", "aborted")
    assert job["outcome"] == outcome, job
    assert (top(agent) != before) is (outcome == "succeeded")
    assert_intact(agent, reference)


def chain_depth(agent: AgentUnderTest) -> int:
    return len(api_get(agent, f"/vms/{VM}/disks/vda/chain")["elements"])


@pytest.mark.parametrize("kind", ["pull", "active commit", "backup"])
@pytest.mark.parametrize(
    ("failpoint", "outcome"),
    [
        ("job.after_prepare", "failed"),  # PREPARING: libvirt not called
        ("job.after_libvirt_start", "succeeded"),  # libvirt runs it, recorded PREPARING
        ("job.cleanup.before", "succeeded"),  # outcome recorded, cleanup not run
    ],
)
def test_killed_in_a_pull_commit_or_backup(agent: AgentUnderTest, reference: Reference,
                                           kind: str, failpoint: str, outcome: str) -> None:
    if kind != "backup":
        agent.json("snapshot", "create", VM)  # something to merge
    elif "cpb" not in {pool["name"] for pool in api_get(agent, "/pools")}:
        agent.ok("pool", "create", "cpb", "--type", "dir")  # backups go inside a pool
    depth = chain_depth(agent)
    destination = (Path(api_get(agent, "/pools/cpb")["path"]) / f"backup-{failpoint}"
                   if kind == "backup" else Path())
    command = {"pull": ("pull", VM, "vda"),
               "active commit": ("commit", VM, "vda", "--pivot"),
               "backup": ("backup", VM, "--dest", str(destination))}[kind]
    env = restart_with_failpoints(agent, failpoint)
    started = subprocess.run([*agent.command, "--no-autostart", *command], env=env,
                             capture_output=True, text=True, check=False, timeout=120)
    wait_for(lambda: agent_dead(agent), f"the agent to die at {failpoint}", 60)
    assert started.returncode in (0, 1, 3), started.stderr
    agent.ok("agent", "start")
    job = wait_job(agent, job_of(agent)["id"], "done", "failed", "aborted")
    if kind == "backup" and lost_by_libvirt(agent, job["id"]):
        outcome = "failed"  # killed in libvirt's own window: test_backup_lost_by_libvirt
    assert job["outcome"] == outcome, job
    merged = kind != "backup" and outcome == "succeeded"
    assert chain_depth(agent) == (1 if merged else depth)  # merged all the way down
    if kind == "backup" and outcome == "succeeded":
        [backup_file] = job["spec"]["backup_files"].values()
        assert same_content(reference.path, backup_file)
    # A stream leaves the qcow2 metadata it wrote in QEMU's cache, where ``qemu-img -U``
    # cannot see it; stopping QEMU (SIGTERM: it flushes) makes the file tell the whole truth.
    agent.ok("vm", "destroy", VM)
    agent.ok("vm", "start", VM)
    assert_intact(agent, reference)


def test_killed_while_running_then_ready(agent: AgentUnderTest, reference: Reference) -> None:
    """RUNNING and READY need no failpoint: the job sits there until told otherwise."""
    before = top(agent)
    job = agent.json("copy", VM, "vda", "--pool", "cp", "--bandwidth", str(MIB))
    wait_job(agent, job["id"], "running")
    agent.kill_9()
    agent.ok("agent", "start")
    assert api_get(agent, f"/jobs/{job['id']}")["phase"] in ("running", "ready")
    agent.ok("job", "speed", job["id"], "0")  # unlimited
    wait_job(agent, job["id"], "ready")
    agent.kill_9()
    agent.ok("agent", "start")
    assert api_get(agent, f"/jobs/{job['id']}")["phase"] == "ready"  # still tracked
    agent.ok("job", "pivot", job["id"])
    ended = wait_job(agent, job["id"], "done", "failed", "aborted")
    assert (ended["phase"], ended["outcome"]) == ("done", "succeeded"), ended
    assert top(agent) != before
    assert_intact(agent, reference)


def test_killed_while_aborting(agent: AgentUnderTest, reference: Reference) -> None:
    before = top(agent)
    env = restart_with_failpoints(agent, "job.abort.after_persist")
    job = agent.json("copy", VM, "vda", "--pool", "cp")
    wait_job(agent, job["id"], "ready")
    run_until_killed(agent, env, "job", "abort", job["id"])
    agent.ok("agent", "start")  # ABORTING recorded: the reconcile aborts it again
    ended = wait_job(agent, job["id"], "done", "failed", "aborted")
    assert (ended["phase"], ended["outcome"]) == ("aborted", "aborted"), ended
    assert top(agent) == before
    assert_intact(agent, reference)


def test_a_point_in_time_copy_outlives_the_reconciles_during_its_cleanup(
        agent: AgentUnderTest, reference: Reference) -> None:
    """Every reconcile pass collects the volumes a job left ``creating``; an aborted copy's
    destination is one until its cleanup keeps it apart. With the cleanup held for longer than
    two passes, no pass may take it."""
    before = top(agent)
    restart_with_failpoints(agent, "job.cleanup.before=sleep:6")
    try:
        job = agent.json("copy", VM, "vda", "--pool", "cp")
        wait_job(agent, job["id"], "ready")
        agent.json("job", "abort", job["id"])
        ended = wait_job(agent, job["id"], "done", "failed", "aborted")
    finally:
        agent.ok("agent", "stop")
        agent.ok("agent", "start")
    assert "failpoint job.cleanup.before: sleeping" in (agent.home / "agent.log").read_text()
    assert (ended["phase"], ended["point_in_time_copy"]) == ("aborted", True), ended
    copy = ended["spec"]["destination"]
    deleted = events_of(agent, "chain.volume_deleted")
    assert [event for event in deleted if event["volume"] == copy["volume"]] == []
    assert same_content(reference.path, copy["path"])
    assert top(agent) == before
    agent.ok("volume", "delete", "cp", copy["volume"])
    assert_intact(agent, reference)


def persistent_definition(agent: AgentUnderTest, replacement: str | None = None) -> str:
    """The VM's persistent XML, read (or replaced) with the agent down."""
    extra = [] if replacement is None else [replacement]
    probe = subprocess.run([sys.executable, "-m", "tests.persistent_definition",
                            str(agent.home / "libvirt"), VM, *extra], capture_output=True,
                           text=True, timeout=60, check=False, env=agent.env)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout


def test_a_config_libvirt_did_not_save_before_the_kill_is_brought_in_step(
        agent: AgentUnderTest, reference: Reference) -> None:
    """libvirt announces a job's end before it saves the persistent definition: a kill in
    between leaves the next cold start on the pre-job chain, here an overlay the active commit
    merged away. The restarted agent writes the live chain into it before any cleanup."""
    agent.json("snapshot", "create", VM)
    overlay = top(agent)
    agent.ok("agent", "stop")
    before_commit = persistent_definition(agent)
    assert overlay in before_commit
    env = restart_with_failpoints(agent, "job.cleanup.before")
    started = subprocess.run([*agent.command, "--no-autostart", "commit", VM, "vda", "--pivot"],
                             env=env, capture_output=True, text=True, check=False, timeout=120)
    wait_for(lambda: agent_dead(agent), "the agent to die at job.cleanup.before", 60)
    assert started.returncode in (0, 1, 3), started.stderr
    stale = agent.home / "stale-definition.xml"
    stale.write_text(before_commit)
    persistent_definition(agent, str(stale))  # as if libvirt had died before saving it
    agent.ok("agent", "start")
    job = wait_job(agent, job_of(agent)["id"], "done", "failed", "aborted")
    assert job["outcome"] == "succeeded", job
    [repaired] = [e for e in events_of(agent, "chain.persistent_repaired", VM)
                  if overlay in e["was"]]
    assert repaired["now"] == [top(agent)]
    wait_for(lambda: not Path(overlay).exists(), "the merged overlay to be deleted", 30)
    agent.ok("agent", "stop")
    assert overlay not in persistent_definition(agent)
    agent.ok("agent", "start")
    agent.ok("vm", "destroy", VM)
    agent.ok("vm", "start", VM)  # the cold start opens the live chain
    assert_intact(agent, reference)


def test_every_image_in_the_pool_checks_clean(agent: AgentUnderTest,
                                              reference: Reference) -> None:
    pool = Path(api_get(agent, "/pools/cp")["path"])
    images = sorted(pool.iterdir())
    assert images
    for image in images:
        result = subprocess.run(["qemu-img", "check", "-U", str(image)], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, (image, result.stdout, result.stderr)
