"""The lab Ceph cluster's daemons as processes: started, recorded by PID, signalled, stopped.

It owns ``pids.json`` in a cluster's work directory: daemon name -> PID and the process's start
time (``/proc/PID/stat`` field 22). A PID is written the moment its daemon is spawned, before
anything waits on it, so a later ``stop_daemons`` finds it even after the starter crashed.

It must never signal a process it did not record, nor one whose start time no longer matches (a
PID reused by something else), and never search for processes by name (no pkill, no killall).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from blockplane.errors import OperationFailed

PIDS_FILE = "pids.json"
STOP_GRACE_S = 10.0
# OSDs stop before the monitor: a stopping OSD tells the monitor it is going down.
STOP_ORDER = ("osd.", "mon.")


class DaemonError(OperationFailed):
    code = "ceph.lab"
    title = "Lab Ceph daemon failed"


Record = dict[str, int | None]


def spawn_daemon(workdir: Path, name: str, arguments: list[str]) -> int:
    """Start ``arguments`` in its own session, output to ``log/NAME.stdout``; record its PID."""
    (workdir / "log").mkdir(exist_ok=True)
    with (workdir / "log" / f"{name}.stdout").open("ab") as output:
        process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    records = _read(workdir)
    records[name] = {"pid": process.pid, "start_time": _start_time(process.pid)}
    temporary = workdir / f"{PIDS_FILE}.tmp"
    temporary.write_text(json.dumps(records, indent=2))
    temporary.replace(workdir / PIDS_FILE)
    return process.pid


def recorded_pids(workdir: Path) -> dict[str, int]:
    """Every daemon PID recorded in ``workdir``, running or not."""
    return {name: int(str(record["pid"])) for name, record in _read(workdir).items()}


def live_daemons(workdir: Path) -> dict[str, int]:
    """The recorded daemons that still run (the same processes, not reused PIDs)."""
    return {
        name: int(str(record["pid"]))
        for name, record in _read(workdir).items()
        if is_running(record.get("pid"), record.get("start_time"))
    }


def signal_daemon(workdir: Path, name: str, signal_number: int) -> int:
    """Send ``signal_number`` to a running recorded daemon; its PID."""
    record = _read(workdir).get(name)
    if record is None or not is_running(record.get("pid"), record.get("start_time")):
        raise DaemonError(f"the lab Ceph daemon {name} is not running", code="ceph.lab_stopped")
    pid = int(str(record["pid"]))
    os.kill(pid, signal_number)
    return pid


def stop_daemons(
    workdir: Path, names: Iterable[str] | None = None, *, grace_s: float = STOP_GRACE_S
) -> None:
    """SIGTERM the recorded daemons (all, or ``names``), SIGKILL after ``grace_s``; wait."""
    records = _read(workdir)
    chosen = set(records) if names is None else set(names) & set(records)
    for prefix in (*STOP_ORDER, ""):
        group = [name for name in sorted(chosen) if name.startswith(prefix)]
        chosen -= set(group)
        _terminate([records[name] for name in group], grace_s)


def _terminate(records: list[Record], grace_s: float) -> None:
    targets = [
        (int(str(record["pid"])), record.get("start_time"))
        for record in records
        if is_running(record.get("pid"), record.get("start_time"))
    ]
    for pid, _ in targets:
        # A stopped (SIGSTOP) daemon must run again to act on SIGTERM.
        for number in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_running(*target) for target in targets):
        time.sleep(0.05)
    for pid, start_time in targets:
        if is_running(pid, start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    killed_by = time.monotonic() + grace_s
    while any(is_running(*target) for target in targets):
        if time.monotonic() > killed_by:
            raise DaemonError(f"lab Ceph daemons {[pid for pid, _ in targets]} outlived SIGKILL")
        time.sleep(0.02)


def is_running(pid: int | None, start_time: int | None) -> bool:
    """``pid`` runs and is still the process recorded (same start time, if one was recorded)."""
    if not isinstance(pid, int):
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        state = _stat_fields(pid)[0]
    except OSError:
        return False
    if state in ("Z", "X") and not _threads_exiting(pid):
        return False
    return start_time is None or _start_time(pid) == start_time


def _threads_exiting(pid: int) -> bool:
    """A SIGKILLed multi-threaded daemon's leader turns zombie before its other threads have
    exited; until they have, its files stay open and its pid file locked, so a daemon started
    again at once fails ("failed to lock pidfile")."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        with contextlib.suppress(OSError, IndexError):
            if _stat_fields(int(task.name))[0] not in ("Z", "X"):
                return True
    return False


def listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` listens on, from its socket descriptors and /proc/net/tcp{,6}."""
    inodes = set()
    with contextlib.suppress(OSError):
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(descriptor)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _start_time(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def _read(workdir: Path) -> dict[str, Record]:
    try:
        loaded = json.loads((workdir / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
