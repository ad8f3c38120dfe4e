"""Knowing a lab process again by its PID, and ending it.

A PID alone can be reused, so a process is recorded with its start time (``/proc/PID/stat``
field 22) and is only signalled while both still match. A PID a daemon wrote itself (a pid
file) is trusted only if that process started no later than the file was written. Processes
are found by the mount namespace they live in, never by name. Owns no policy about which
processes belong to a lab: :mod:`blockplane.lab.teardown` decides that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Start times are in clock ticks and the boot time in whole seconds: allow for the rounding.
START_SLACK_S = 1.5


@dataclass(frozen=True)
class Recorded:
    """A process as the lab knew it: its PID and its start time in clock ticks since boot."""

    pid: int
    start: int

    def running(self) -> bool:
        return start_ticks(self.pid) == self.start and not _is_zombie(self.pid)

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Recorded:
        return cls(pid=int(data["pid"]), start=int(data["start"]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def record(pid: int) -> Recorded | None:
    """``pid`` as it runs now, or None when no such process lives."""
    start = start_ticks(pid)
    if start is None or _is_zombie(pid):
        return None
    return Recorded(pid, start)


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def started_at(process: Recorded) -> float:
    return _boot_time() + process.start / os.sysconf("SC_CLK_TCK")


def from_pid_file(path: Path) -> Recorded | None:
    """The process that wrote ``path``, if it still runs: a process with that PID that started
    after the file was written is someone else's."""
    try:
        pid = int(path.read_text().strip())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    process = record(pid)
    if process is None or started_at(process) > written + START_SLACK_S:
        return None
    return process


def mount_namespace(pid: int) -> str | None:
    """``mnt:[INODE]`` of ``pid``'s mount namespace, or None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def in_namespace(namespace: str) -> list[Recorded]:
    """Every live process in the mount namespace ``namespace``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if mount_namespace(pid) == namespace:
            process = record(pid)
            if process is not None:
                found.append(process)
    return found


def wait_gone(processes: Iterable[Recorded], timeout_s: float) -> list[Recorded]:
    """Wait up to ``timeout_s`` for ``processes`` to end; return those still running."""
    remaining = [process for process in processes if process.running()]
    deadline = time.monotonic() + timeout_s
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [process for process in remaining if process.running()]
    return remaining


def _signal(process: Recorded, number: signal.Signals) -> None:
    if process.running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, number)


def terminate(processes: Iterable[Recorded], grace_s: float = 10.0) -> list[Recorded]:
    """SIGTERM, then SIGKILL whatever is left after ``grace_s``. Returns those that could not
    be ended (none, unless a process is stuck in the kernel)."""
    targets = [process for process in processes if process.running()]
    for process in targets:
        _signal(process, signal.SIGTERM)
    left = wait_gone(targets, grace_s)
    for process in left:
        _signal(process, signal.SIGKILL)
    return wait_gone(left, 10.0)
