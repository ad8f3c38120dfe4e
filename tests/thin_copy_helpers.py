"""Helpers for tests of copies into thin pools with a no-OS VM: QEMU itself writes into a disk
(HMP ``qemu-io`` on the device, so the write passes the copy's mirror like a guest's would),
QEMU's own view of its jobs, and the thin monitor's row of one volume.

A probe needs the embedded libvirt root, which the agent holds: the agent must be stopped (or
dead) while one runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.harness import AgentUnderTest


def probe(agent: AgentUnderTest, vm: str, *commands: dict[str, Any]) -> list[Any]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.qmp_probe", str(agent.home / "libvirt"), vm,
         json.dumps(list(commands))],
        capture_output=True, text=True, timeout=60, check=False, env=agent.env,
    )
    assert result.returncode == 0, result.stderr
    replies: list[Any] = [reply.get("return") for reply in json.loads(result.stdout)]
    return replies


def guest_like_write(agent: AgentUnderTest, vm: str, target: str, offset: int, length: int,
                     pattern: int) -> None:
    """QEMU writes ``pattern`` into the disk through its device, then flushes."""
    device = f"/machine/peripheral/ua-bp-{target}/virtio-backend"
    commands = (f"write -P {pattern} {offset} {length}", "flush")
    probe(agent, vm, *({"execute": "human-monitor-command",
                        "arguments": {"command-line": f'qemu-io -d {device} "{command}"'}}
                       for command in commands))


def qemu_jobs(agent: AgentUnderTest, vm: str) -> list[dict[str, Any]]:
    """QMP ``query-jobs``: QEMU's jobs with their status and error, as libvirt left them."""
    [jobs] = probe(agent, vm, {"execute": "query-jobs"})
    return list(jobs)


def thin_row(agent: AgentUnderTest, vm: str, volume: str) -> dict[str, Any] | None:
    rows = [row for row in agent.json("thin", "status", vm) if row["volume"] == volume]
    return rows[0] if rows else None


def events(agent: AgentUnderTest, vm: str, kind: str, **match: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = agent.json("events", "--vm", vm, "--type", kind)
    return [event for event in found if all(event.get(k) == v for k, v in match.items())]
