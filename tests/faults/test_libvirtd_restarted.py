"""The libvirt daemon killed and started again while the agent (on ``qemu:///system``) is in the
middle of a throttle group update, then of a disk hotplug.

A ``sleep`` failpoint holds each operation half-way (after the live group update; after the
IOThreads of the hotplug were added) while the test SIGKILLs libvirtd and starts it again. The
agent must notice on its own (libvirt's close callback), reconnect with backoff, and then
finish or undo what the outage broke: the group change is completed in the persistent
definition too, the half-done hotplug is rolled back (no IOThread left serving nothing, no
volume leaked). Afterwards every API call works again and the store agrees with the live XML.

Starts ``virtlogd`` and ``libvirtd`` if they are not running, and stops what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.consistency import (
    assert_consistent,
    failpoint_env,
    restart_with_failpoints,
    wait_for,
)
from tests.harness import AgentUnderTest, cleanup_agent
from tests.system_daemon import (
    SystemAgent,
    requires_system_daemon,
    start_daemon,
    stop_daemon,
)
from tests.system_daemon import daemons as daemons  # the module's system daemon

pytestmark = [pytest.mark.faults, requires_system_daemon]

VM = f"bpfault{os.getpid()}"
HOLD_S = 15  # a restart of libvirtd took 8 s on a loaded 2-CPU host


@pytest.fixture(scope="module")
def system_agent(daemons: None) -> Iterator[SystemAgent]:
    home = Path(tempfile.mkdtemp(prefix="bp-sys-", dir="/tmp"))
    agent = SystemAgent(home)
    agent.ok("agent", "start")
    try:
        agent.ok("pool", "create", "sp", "--type", "loop")
        agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "128M", "--start")
        agent.ok("throttle", "set", VM, "gold", "--total-iops-sec", "1000")
        agent.json("disk", "attach", VM, "--pool", "sp", "--size", "64M",
                   "--throttle-groups", "gold")
        yield agent
    finally:
        cleanup_agent(agent)


def events(agent: AgentUnderTest, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = agent.json("events", "--type", kind)
    return found


def restart_libvirtd_while_held(
    agent: SystemAgent, failpoint: str, *request: str
) -> subprocess.CompletedProcess[str]:
    """Run ``request``; once it is held at ``failpoint``, SIGKILL libvirtd and start it again."""
    log = agent.home / "agent.log"
    seen = log.read_text().count(f"failpoint {failpoint}: sleeping")
    reconnects = len(events(agent, "hypervisor.reconnected"))
    env = failpoint_env(agent, f"{failpoint}=sleep:{HOLD_S}")
    client = subprocess.Popen(
        [*agent.command, "--no-autostart", *request],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(lambda: log.read_text().count(f"failpoint {failpoint}: sleeping") > seen,
             f"the request to reach {failpoint}", 60)
    started = time.monotonic()
    stop_daemon("libvirtd", signal.SIGKILL)
    start_daemon("libvirtd")
    assert time.monotonic() - started < HOLD_S, "libvirtd took longer to restart than the hold"
    stdout, stderr = client.communicate(timeout=120)
    wait_for(lambda: len(events(agent, "hypervisor.reconnected")) > reconnects,
             "the agent to reconnect", 60)
    return subprocess.CompletedProcess(client.args, client.returncode, stdout, stderr)


def test_restart_during_a_throttle_update(system_agent: SystemAgent) -> None:
    agent = system_agent
    restart_with_failpoints(
        agent,
        f"throttle.set.after_live=sleep:{HOLD_S},attach.after_iothreads=sleep:{HOLD_S}",
    )
    result = restart_libvirtd_while_held(
        agent, "throttle.set.after_live", "throttle", "set", VM, "gold", "--total-iops-sec", "2000"
    )
    # The live update landed before the outage; the persistent one met a dead connection.
    assert result.returncode == 1, result.stderr
    assert "connection to libvirt was lost" in " ".join(result.stderr.split())
    lost = events(agent, "hypervisor.disconnected")[-1]
    assert lost["reason"] == "end of file"
    wait_for(lambda: bool(events(agent, "throttle.recovered")), "the change to be finished", 30)
    recovered = events(agent, "throttle.recovered")[-1]
    assert (recovered["group"], recovered["outcome"]) == ("gold", "completed")
    info = agent.json("throttle", "info", VM, "gold")
    assert info["limits"] == {"total_iops_sec": 2000}
    assert "differs" not in info, info["differs"]
    assert_consistent(agent, VM)


def test_restart_during_a_hotplug(system_agent: SystemAgent) -> None:
    agent = system_agent
    before = {disk["target"] for disk in agent.json("disk", "list", VM)}
    result = restart_libvirtd_while_held(
        agent, "attach.after_iothreads", "disk", "attach", VM, "--pool", "sp", "--size", "64M",
        "--queues", "2", "--io-threads", "2",
    )
    assert result.returncode == 1, result.stderr
    assert "connection to libvirt was lost" in " ".join(result.stderr.split())
    wait_for(lambda: bool(events(agent, "disk.recovered")), "the hotplug to be undone", 30)
    recovered = events(agent, "disk.recovered")[-1]
    assert recovered["outcome"] == "rolled back", recovered
    assert {disk["target"] for disk in agent.json("disk", "list", VM)} == before
    report = agent.json("iothreads", VM)
    assert report["disagreements"] == []
    for thread in report["iothreads"]:
        assert thread["serves"], f"IOThread {thread['id']} serves nothing"
    assert_consistent(agent, VM)


def test_later_calls_work(system_agent: SystemAgent) -> None:
    agent = system_agent
    agent.ok("agent", "stop")  # and the agent started without failpoints also finds it all
    agent.ok("agent", "start")
    disk = agent.json("disk", "attach", VM, "--pool", "sp", "--size", "64M", "--queues", "2",
                      "--io-threads", "2")
    assert agent.json("throttle", "set", VM, "gold", "--total-iops-sec", "3000")["limits"] == {
        "total_iops_sec": 3000}
    assert agent.json("vm", "show", VM)["state"] == "running"
    agent.ok("vm", "destroy", VM)
    agent.ok("vm", "start", VM)
    assert disk["target"] in {d["target"] for d in agent.json("disk", "list", VM)}
    assert_consistent(agent, VM)
