"""A push backup that libvirt lost track of while the agent (with its embedded libvirt) was dead.

libvirt dismisses a finished backup's block job in QEMU and only then saves that the backup
ended. Killed in between, the restarted libvirt finds in its saved state a backup whose block
job QEMU no longer has: it drops the block job but keeps reporting the backup running, for good
(CI met this once, every later job on the disk then refused as busy). Here the window is made
certain: the agent dies as the backup starts, and the test does libvirt's dismissal itself over
QEMU's monitor socket, free while no libvirt holds it. The restarted agent must end the job
honestly (its outcome cannot be verified), abort libvirt's stale record and so free the disk.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import qemu_io_write
from tests.faults.consistency import (
    agent_dead,
    api_get,
    assert_consistent,
    restart_with_failpoints,
    wait_for,
)
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.faults

MIB = 1 << 20
VM = "fault-lost-backup"
DISK_MIB = 1024  # filled: QEMU copies it for seconds after the agent died


class RawQmp:
    """QEMU's monitor, spoken to directly: only while no libvirt is connected to it."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX)
        self._socket.settimeout(30)
        self._socket.connect(str(path))
        self._reader = self._socket.makefile("r")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(self._reader.readline())
            if "event" not in message:
                return message

    def execute(self, command: str, **arguments: Any) -> Any:
        self._socket.sendall(json.dumps({"execute": command, "arguments": arguments}).encode())
        reply = self._read()
        assert "return" in reply, reply
        return reply["return"]

    def close(self) -> None:
        self._reader.close()
        self._socket.close()


def monitor_socket(agent: AgentUnderTest) -> Path:
    [path] = [p for p in agent.home.rglob("monitor.sock") if p.parent.name.endswith(f"-{VM}")]
    return path


def dismiss_the_finished_backup(agent: AgentUnderTest) -> None:
    qmp = RawQmp(monitor_socket(agent))
    try:
        deadline = time.monotonic() + 120
        while True:
            jobs = [job for job in qmp.execute("query-jobs") if job["type"] == "backup"]
            assert jobs, "the backup ended before the agent died: no window to reproduce"
            if all(job["status"] == "concluded" for job in jobs):
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(0.2)
        for job in jobs:
            assert "error" not in job, job
            qmp.execute("job-dismiss", id=job["id"])
    finally:
        qmp.close()


def test_a_backup_libvirt_lost_ends_and_frees_the_disk(agent: AgentUnderTest) -> None:
    agent.ok("pool", "create", "lbp", "--type", "dir")
    agent.ok("vm", "create", VM, "--memory", "128M")
    disk = agent.json("disk", "attach", VM, "--pool", "lbp", "--size", f"{DISK_MIB}M")
    qemu_io_write(disk["source"], 0, DISK_MIB * MIB, 0x5A)
    agent.ok("vm", "start", VM)
    destination = Path(api_get(agent, "/pools/lbp")["path"]) / "backup-lost"
    env = restart_with_failpoints(agent, "job.after_libvirt_start")
    started = subprocess.run([*agent.command, "--no-autostart", "backup", VM,
                              "--dest", str(destination)],
                             env=env, capture_output=True, text=True, check=False, timeout=120)
    wait_for(lambda: agent_dead(agent), "the agent to die at job.after_libvirt_start", 60)
    assert started.returncode in (0, 1, 3), started.stderr
    dismiss_the_finished_backup(agent)

    agent.ok("agent", "start")
    [job] = api_get(agent, "/jobs", vm=VM)
    wait_for(lambda: api_get(agent, f"/jobs/{job['id']}")["phase"] in ("done", "failed"),
             "the lost backup to be judged", 90)
    ended = api_get(agent, f"/jobs/{job['id']}")
    assert (ended["phase"], ended["outcome"]) == ("failed", "failed"), ended
    assert "could not be verified" in ended["error"], ended
    assert "libvirt lost track of it" in (agent.home / "agent.log").read_text()

    # libvirt's stale record is gone: the disk takes the next job, which runs to its end.
    again = agent.json("backup", VM, "--dest", str(destination.with_name("backup-again")))
    wait_for(lambda: api_get(agent, f"/jobs/{again['id']}")["phase"] in ("done", "failed"),
             "the next backup to end", 90)
    assert api_get(agent, f"/jobs/{again['id']}")["outcome"] == "succeeded"
    assert_consistent(agent, VM)
