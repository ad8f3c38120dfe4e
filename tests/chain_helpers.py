"""Helpers for chain tests: a raw reference image kept in step with the writes, qemu-img compare
and check, job waiting, the agent SIGKILLed mid-job, and the restore check of a full backup plus
incrementals."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.harness import AgentUnderTest


class Reference:
    """A sparse raw file holding what a disk must read back, written alongside the disk."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        with path.open("wb") as handle:
            handle.truncate(size)

    def write(self, offset: int, length: int, pattern: int) -> None:
        with self.path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(bytes([pattern]) * length)


def qemu_io_write(image: str, offset: int, length: int, pattern: int) -> None:
    """Write into an image no QEMU has open (the VM is stopped)."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} {length}", image],
        check=True, capture_output=True, text=True,
    )


def same_content(reference: Path | str, image: str, image_format: str = "qcow2") -> bool:
    """``qemu-img compare`` of a raw reference with an image (and its backing chain)."""
    result = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "raw", "-F", image_format, str(reference), image],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def check_clean(image: str) -> dict[str, Any]:
    """``qemu-img check``: no corruption, no leaked clusters, no errors."""
    result = subprocess.run(["qemu-img", "check", "--output=json", image],
                            capture_output=True, text=True, check=False)
    report: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    assert result.returncode == 0, f"qemu-img check {image}: {result.stderr} {report}"
    for key in ("corruptions", "leaks", "check-errors"):
        assert not report.get(key), f"{image}: {key} in {report}"
    return report


def last_json_line(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


def chain_paths(agent: AgentUnderTest, vm: str, target: str) -> list[str]:
    return [e["path"] for e in agent.json("chain", vm, target)["elements"]]


def wait_phase(agent: AgentUnderTest, job_id: str, phases: tuple[str, ...],
               timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = agent.json("job", "show", job_id)
        if job["phase"] in phases:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job['phase']}: {job}"
        time.sleep(0.3)


#: Seeds every random SIGKILL delay; set it to replay a failed run's delays.
KILL_SEED = int(os.environ.get("BLOCKPLANE_KILL_SEED") or random.SystemRandom().randrange(1 << 32))


def kill_delay(label: str, low: float, high: float) -> float:
    """A random delay in [low, high] for the SIGKILL called ``label``, printed (pytest shows it
    with a failure) with the seed that gives it again."""
    delay = random.Random(f"{KILL_SEED}:{label}").uniform(low, high)
    print(f"{label}: SIGKILL after {delay:.2f} s (BLOCKPLANE_KILL_SEED={KILL_SEED})")
    return delay


def stored_phase(agent: AgentUnderTest, job_id: str) -> str:
    """The job's phase in the agent's store (read-only: no CLI start-up, no agent call)."""
    uri = f"file:{agent.home / 'state.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        row = connection.execute("SELECT phase FROM chain_jobs WHERE id = ?",
                                 (job_id,)).fetchone()
    return str(row[0]) if row else "?"


def kill_agent(agent: AgentUnderTest, job_id: str, delay: float) -> None:
    """SIGKILL the agent ``delay`` seconds from now, then start it again."""
    time.sleep(delay)
    phase = stored_phase(agent, job_id)
    agent.kill_9()
    print(f"job {job_id}: agent killed in {phase}")
    agent.ok("agent", "start")


def wait_ended(agent: AgentUnderTest, job_id: str) -> dict[str, Any]:
    return wait_phase(agent, job_id, ("done", "failed", "aborted"), timeout=90)


def restore(full: str, incrementals: list[str], scratch: Path) -> str:
    """Lay the incrementals over the full backup (copies, rebased unsafely): the restored top.

    libvirt writes an incremental backup as a qcow2 whose unchanged clusters are unallocated
    (and whose backing names the live disk), so the restore chain is full <- inc1 <- inc2 ...
    """
    scratch.mkdir(parents=True, exist_ok=True)
    below = shutil.copy(full, scratch / "full.qcow2")
    for number, incremental in enumerate(incrementals, start=1):
        layer = shutil.copy(incremental, scratch / f"inc{number}.qcow2")
        subprocess.run(["qemu-img", "rebase", "-u", "-b", str(below), "-F", "qcow2",
                        "-f", "qcow2", str(layer)], check=True, capture_output=True)
        below = layer
    return str(below)
