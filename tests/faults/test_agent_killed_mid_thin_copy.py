"""The agent SIGKILLed while a copy runs into a thin loop pool, restarted.

The destination is a thin volume that only the thin monitor grows; while the agent is dead
nobody does. The restarted agent must find the mirror's own node (libvirt's ``<mirror>`` index)
in the bulk stats, arm it (or extend it, if its threshold fired while the agent was dead), and the
copy must complete with the disk reading back what was written (``qemu-img compare`` with a raw
reference) and the store consistent. vda and vdb are 1 GiB on a dir pool with 40 MiB written
each; QEMU writes for the no-OS VM through the device (HMP ``qemu-io``) while the agent is down.
"""

from __future__ import annotations

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
    wait_for,
)
from tests.harness import AgentUnderTest
from tests.thin_copy_helpers import guest_like_write, qemu_jobs

pytestmark = pytest.mark.faults

MIB = 1 << 20
GIB = 1 << 30
VM = "fault-thin-copy"


@pytest.fixture(scope="module")
def references(agent: AgentUnderTest) -> dict[str, Reference]:
    """vda and vdb, one per test: a disk copied into a thin pool is thin afterwards, and a
    later test's writes while the agent is dead must not fill its source."""
    agent.ok("pool", "create", "fs", "--type", "dir")
    agent.ok("pool", "create", "ft", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    agent.ok("vm", "create", VM, "--memory", "128M")
    refs = {}
    for target in ("vda", "vdb"):
        disk = agent.json("disk", "attach", VM, "--pool", "fs", "--size", "1G")
        refs[target] = Reference(agent.home / f"{target}.raw", GIB)
        qemu_io_write(disk["source"], 0, 40 * MIB, 0x11)
        refs[target].write(0, 40 * MIB, 0x11)
    agent.ok("vm", "start", VM)
    return refs


def newest_job(agent: AgentUnderTest) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = api_get(agent, "/jobs", vm=VM)
    return max(jobs, key=lambda job: job["created_at"])


def destination_row(agent: AgentUnderTest, job: dict[str, Any]) -> dict[str, Any]:
    volume = job["spec"]["destination"]["volume"]
    [row] = [r for r in api_get(agent, "/thin", vm=VM) if r["volume"] == volume]
    return dict(row)


def finish(agent: AgentUnderTest, reference: Reference, job: dict[str, Any]) -> dict[str, Any]:
    """Let the copy run at full speed and pivot; it must be done and the disk intact."""
    sped = agent.cli("job", "speed", job["id"], "0")
    assert sped.returncode == 0 or "has ended" in sped.stderr, sped.stderr
    wait_for(lambda: api_get(agent, f"/jobs/{job['id']}")["phase"] in ("done", "failed",
                                                                       "aborted"),
             "the copy to end", 120)
    ended: dict[str, Any] = api_get(agent, f"/jobs/{job['id']}")
    assert ended["phase"] == "done", ended
    chain = api_get(agent, f"/vms/{VM}/disks/{job['target']}/chain")
    assert chain["elements"][0]["path"] == job["spec"]["destination"]["path"]
    assert destination_row(agent, job)["state"] == "set"
    agent.ok("vm", "destroy", VM)  # QEMU flushes its qcow2 metadata as it exits
    assert same_content(reference.path, ended["spec"]["destination"]["path"])
    agent.ok("vm", "start", VM)
    assert_consistent(agent, VM)
    return ended


def test_killed_before_the_mirror_target_was_armed(agent: AgentUnderTest,
                                                   references: dict[str, Reference]) -> None:
    env = restart_with_failpoints(agent, "job.copy.after_mirror_start")
    run_until_killed(agent, env, "copy", VM, "vda", "--pool", "ft", "--bandwidth", "1M",
                     "--pivot")
    agent.ok("agent", "start")
    job = newest_job(agent)
    mirror = api_get(agent, f"/vms/{VM}/disks/vda/chain")["mirror"]
    assert mirror is not None and mirror["path"] == job["spec"]["destination"]["path"]
    row = destination_row(agent, job)  # the start-up reconcile has armed it
    assert (row["state"], row["index"]) == ("set", mirror["libvirt_index"])
    assert row["threshold"] == row["armed_threshold"] > 0
    volume = job["spec"]["destination"]["volume"]
    assert [e for e in events_of(agent, "thin.armed", VM) if e["volume"] == volume]
    finish(agent, references["vda"], job)


def test_killed_while_the_mirror_fills_its_target(agent: AgentUnderTest,
                                                  references: dict[str, Reference]) -> None:
    """The target's threshold fires while the agent is dead: the restarted agent extends it
    (a missed event) and arms it again on the mirror's index, before the mirror reaches its
    end. A pool of 64 MiB chunks at 50%: the threshold sits 32 MiB below the end."""
    agent.ok("pool", "create", "fb", "--type", "loop", "--chunk", "64M", "--utilization", "50")
    job = agent.json("copy", VM, "vdb", "--pool", "fb", "--bandwidth", "4M", "--pivot")
    before = destination_row(agent, job)
    mirror = api_get(agent, f"/vms/{VM}/disks/vdb/chain")["mirror"]
    assert before["state"] == "set" and before["index"] == mirror["libvirt_index"]
    agent.kill_9()
    wait_for(lambda: agent_dead(agent), "the agent to die", 10)
    # 40 MiB more to copy, 80 in all: the threshold (about 75 MiB) is crossed at 4 MiB/s some
    # 8 s before the end (about 107 MiB) would be.
    guest_like_write(agent, VM, "vdb", 512 * MIB, 40 * MIB, 0x21)
    references["vdb"].write(512 * MIB, 40 * MIB, 0x21)
    crossed = before["armed_threshold"] + 3 * MIB
    wait_for(lambda: copied(agent) >= crossed, "the mirror to pass the threshold", 60)
    agent.ok("agent", "start")
    row = destination_row(agent, job)  # the start-up reconcile has extended it
    assert row["extends"] >= 1 and row["physical"] > before["physical"], row
    assert row["index"] == mirror["libvirt_index"]  # the mirror's node, or the top it became
    assert row["state"] == "set" and row["threshold"] == row["armed_threshold"]
    volume = job["spec"]["destination"]["volume"]
    extended = [e for e in events_of(agent, "thin.extended", VM) if e["volume"] == volume]
    assert (extended[0]["cause"], extended[0]["missed_event"]) == ("reconcile", True)
    ended = finish(agent, references["vdb"], job)
    assert ended["restarts"] == 0


def copied(agent: AgentUnderTest) -> int:
    """Bytes QEMU's mirror has copied so far (the agent must be down)."""
    jobs = qemu_jobs(agent, VM)
    return int(jobs[0]["current-progress"]) if jobs else 0
