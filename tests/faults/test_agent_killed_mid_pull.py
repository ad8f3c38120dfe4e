"""The agent SIGKILLed while a pull backup's export is open, and at each step of starting one.

With the export open: QEMU holds the NBD server, so the socket is still served while the agent
is dead (a backup client's read goes on, and reads the point in time); the restarted agent's
embedded libvirt reconnects to QEMU and takes the backup job back from its status file (libvirt
keeps a running backup job across its own restart), so the job is still tracked: ``backup
show``, the thin monitor on the scratch, ``backup stop`` (then ``done``, the scratch deleted and
the socket's directory removed). Starting: killed once the scratch images exist but before
libvirt was asked (the job ``failed``, its scratch deleted), and once libvirt began the export
but before it was recorded (tracked and stopped like any other). Every time: the VM runs on,
no scratch volume or socket is left, the store agrees with libvirt and the pools.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import Reference, qemu_io_write
from tests.faults.consistency import (
    api_get,
    assert_consistent,
    restart_with_failpoints,
    run_until_killed,
    wait_for,
)
from tests.harness import AgentUnderTest
from tests.pull_helpers import convert_from_nbd, same_raw

pytestmark = pytest.mark.faults

MIB = 1 << 20
VM = "fault-pull"


@pytest.fixture(scope="module")
def reference(agent: AgentUnderTest) -> Reference:
    agent.ok("pool", "create", "fpd", "--type", "dir")
    agent.ok("pool", "create", "fpl", "--type", "loop", "--chunk", "16M")
    agent.ok("vm", "create", VM, "--memory", "128M")
    disk = agent.json("disk", "attach", VM, "--pool", "fpd", "--size", "64M")
    ref = Reference(agent.home / "reference.raw", 64 * MIB)
    qemu_io_write(disk["source"], 0, 24 * MIB, 0x5A)
    ref.write(0, 24 * MIB, 0x5A)
    agent.ok("vm", "start", VM)
    return ref


def nothing_left(agent: AgentUnderTest) -> None:
    """No scratch volume in any pool, no socket directory, no live job; VM running."""
    pools = {p["name"]: p["path"] for p in agent.json("pool", "list")}
    assert [v["name"] for pool in pools for v in agent.json("volume", "list", pool)
            if "scratch" in v["name"]] == []
    assert not any("scratch" in name for name in os.listdir(pools["fpd"]))
    wait_for(lambda: not any((agent.home / "nbd").glob("*")), "socket directories to go", 20)
    assert [j for j in api_get(agent, "/jobs", vm=VM)
            if j["phase"] not in ("done", "failed", "aborted")] == []
    assert agent.json("vm", "show", VM)["state"] == "running"
    assert_consistent(agent, VM)


def ended(agent: AgentUnderTest, job: str) -> dict[str, Any]:
    wait_for(lambda: api_get(agent, f"/jobs/{job}")["phase"] in ("done", "failed", "aborted"),
             f"job {job} to end", 60)
    shown: dict[str, Any] = api_get(agent, f"/jobs/{job}")
    return shown


def test_killed_with_an_export_open(agent: AgentUnderTest, reference: Reference,
                                    tmp_path: Path) -> None:
    answer = agent.json("backup", VM, "--pull", "--scratch-pool", "fpl")
    [disk] = answer["disks"]
    agent.kill_9()
    assert subprocess.run(["nbdinfo", "--size", disk["url"]], capture_output=True, text=True,
                          check=True).stdout.strip() == str(64 * MIB)
    out = tmp_path / "read-while-dead.raw"
    reader = convert_from_nbd(disk["url"], out)
    _, errors = reader.communicate(timeout=120)
    assert reader.returncode == 0, errors
    assert same_raw(reference.path, out)

    agent.ok("agent", "start")
    shown = agent.json("backup", "show", answer["job"])
    assert (shown["phase"], shown["disks"][0]["url"]) == ("running", disk["url"])
    assert shown["scratch"]["total"] == 64 * MIB
    [row] = [r for r in agent.json("thin", "status", VM) if r["volume"] == disk["scratch_volume"]]
    assert row["state"] == "set"
    agent.ok("backup", "stop", answer["job"])
    assert ended(agent, answer["job"])["phase"] == "done"
    assert not Path(answer["socket"]).exists()
    nothing_left(agent)


@pytest.mark.usefixtures("reference")
def test_killed_after_the_scratch_is_made(agent: AgentUnderTest) -> None:
    env = restart_with_failpoints(agent, "backup.pull.after_scratch")
    run_until_killed(agent, env, "backup", VM, "--pull", "--scratch-pool", "fpl")
    agent.ok("agent", "start")
    [job] = [j for j in api_get(agent, "/jobs", vm=VM) if j["spec"]["mode"] == "pull"][-1:]
    assert ended(agent, job["id"])["phase"] == "failed"
    nothing_left(agent)


@pytest.mark.usefixtures("reference")
def test_killed_after_libvirt_began_the_export(agent: AgentUnderTest) -> None:
    env = restart_with_failpoints(agent, "backup.pull.after_begin")
    run_until_killed(agent, env, "backup", VM, "--pull", "--scratch-pool", "fpl")
    agent.ok("agent", "start")
    [job] = [j for j in api_get(agent, "/jobs", vm=VM) if j["spec"]["mode"] == "pull"][-1:]
    deadline = time.monotonic() + 30
    while api_get(agent, f"/jobs/{job['id']}")["phase"] == "preparing":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert api_get(agent, f"/jobs/{job['id']}")["phase"] == "running"
    shown = agent.json("backup", "show", job["id"])
    [disk] = shown["disks"]
    wait_for(lambda: any(r["volume"] == disk["scratch_volume"] and r["state"] == "set"
                         for r in agent.json("thin", "status", VM)),
             "the thin monitor to take the scratch", 20)
    assert Path(shown["socket"]).stat().st_mode & 0o777 == 0o600
    agent.ok("backup", "stop", job["id"])
    assert ended(agent, job["id"])["phase"] == "done"
    nothing_left(agent)
