"""Helpers for pull-backup tests: guest-like writes into a running no-OS VM, the NBD side as
backup software sees it (``nbdinfo --map``, ``qemu-img convert`` from the URL, the reference
pull client), and probes that act on the embedded libvirt root while the agent is stopped.

A no-OS VM cannot write, so QEMU writes for it: ``qemu-io`` through the HMP monitor on the
disk's device (``/machine/peripheral/ua-bp-vda/virtio-backend``), which goes through the same
block graph as the guest's writes, copy-before-write filter included. Only one process may hold
an embedded libvirt root, so the agent is stopped meanwhile (its VMs and their NBD exports keep
running: QEMU serves them).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import AgentUnderTest

REPO = Path(__file__).resolve().parent.parent
Write = tuple[int, int, int]  # offset, length, pattern byte


def hmp_writes(target: str, writes: list[Write]) -> list[dict[str, Any]]:
    device = f"/machine/peripheral/ua-bp-{target}/virtio-backend"
    commands = [f"write -P {pattern} {offset} {length}" for offset, length, pattern in writes]
    return [{"execute": "human-monitor-command",
             "arguments": {"command-line": f'qemu-io -d {device} "{command}"'}}
            for command in [*commands, "flush"]]


def probe(agent: AgentUnderTest, module: str, *args: str) -> str:
    """``python -m MODULE ROOT ARGS`` against the embed root; the agent must be stopped."""
    result = subprocess.run(
        [sys.executable, "-m", module, str(agent.home / "libvirt"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=agent.env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def write_while_running(agent: AgentUnderTest, vm: str, target: str, writes: list[Write],
                        *, restart: bool = True) -> None:
    """QEMU writes into the running VM's disk as its guest would (agent stopped meanwhile)."""
    agent.ok("agent", "stop")
    try:
        probe(agent, "tests.qmp_probe", vm, json.dumps(hmp_writes(target, writes)))
    finally:
        if restart:
            agent.ok("agent", "start")


def pull_backup(agent: AgentUnderTest, vm: str, *args: str) -> dict[str, Any]:
    answer: dict[str, Any] = agent.json("backup", vm, "--pull", *args)
    return answer


def dirty_extents(url: str, context: str) -> list[tuple[int, int]]:
    """``nbdinfo --map=CONTEXT``: the extents the bitmap marks dirty, adjacent ones merged."""
    listed = json.loads(subprocess.run(["nbdinfo", f"--map={context}", "--json", url],
                                       capture_output=True, text=True, check=True,
                                       timeout=60).stdout)
    merged: list[tuple[int, int]] = []
    for extent in listed:
        if not int(extent["type"]) & 1:
            continue
        offset, length = int(extent["offset"]), int(extent["length"])
        if merged and sum(merged[-1]) == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((offset, length))
    return merged


def convert_from_nbd(url: str, out: Path, *, rate: str | None = None) -> subprocess.Popen[str]:
    """``qemu-img convert`` of the export to a raw file (``rate``: qemu-img's -r limit)."""
    command = ["qemu-img", "convert", "-f", "raw", "-O", "raw"]
    command += ["-r", rate] if rate else []
    return subprocess.Popen([*command, url, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def pull_client(answer: dict[str, Any], out: Path) -> dict[str, Any]:
    """The reference pull client (scripts/nbd-pull-backup), fed the agent's answer."""
    result = subprocess.run([str(REPO / "scripts/nbd-pull-backup"), "--answer", "-", "--out",
                             str(out)], input=json.dumps(answer), capture_output=True, text=True,
                            timeout=600, check=False,
                            env={"BLOCKPLANE_PYTHON": sys.executable,
                                 "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def raw_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def same_raw(left: Path | str, right: Path | str) -> bool:
    result = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(left),
                             str(right)], capture_output=True, text=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def qemu_pid(agent: AgentUnderTest, vm: str) -> int:
    return int((agent.home / "libvirt" / "run" / "qemu" / f"{vm}.pid").read_text())
