"""The system libvirt daemon (``qemu:///system``) for tests that need it, and an agent on it.

``daemons`` starts ``virtlogd`` and ``libvirtd`` if they are not running and stops, at the end
of the module, only what it started. ``SystemAgent`` is an agent under test that talks to the
daemon instead of an embedded libvirt.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.consistency import wait_for
from tests.harness import AgentUnderTest

SYSTEM_URI = "qemu:///system"

requires_system_daemon = pytest.mark.skipif(
    shutil.which("libvirtd") is None or os.geteuid() != 0,
    reason="needs libvirtd (the system daemon) and root",
)


class SystemAgent(AgentUnderTest):
    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "BLOCKPLANE_LIBVIRT_URI": SYSTEM_URI}


def daemon_pid(name: str) -> int | None:
    """The pid of a running (not zombie) ``name`` daemon, from its pid file."""
    try:
        pid = int(Path(f"/run/{name}.pid").read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ValueError):
        return None
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return pid if comm == name and state != "Z" else None


def start_daemon(name: str) -> int:
    subprocess.run([name, "-d"], check=True, timeout=30)
    wait_for(lambda: daemon_pid(name) is not None, f"{name} to start", 30)
    if name == "libvirtd":
        wait_for(lambda: subprocess.run(["virsh", "-c", SYSTEM_URI, "version"],
                                        capture_output=True, check=False).returncode == 0,
                 "libvirtd to answer", 30)
    pid = daemon_pid(name)
    assert pid is not None
    return pid


# libvirtd gives its drivers 30 s to shut down before it quits anyway (virNetDaemonRun's
# finish timer); a worker stuck in a storage backend call takes all of them.
STOP_GRACE_S = 45.0


def stop_daemon(name: str, sig: signal.Signals = signal.SIGTERM) -> None:
    """Send ``sig`` to the running ``name``; one that outlives the grace is killed (its pid,
    which the caller started)."""
    pid = daemon_pid(name)
    if pid is None:
        return
    os.kill(pid, sig)
    try:
        wait_for(lambda: daemon_pid(name) != pid, f"{name} to stop", STOP_GRACE_S)
    except AssertionError:
        if daemon_pid(name) != pid:
            return
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: daemon_pid(name) != pid, f"{name} to die", 10)


@pytest.fixture(scope="module")
def daemons() -> Iterator[None]:
    started = [name for name in ("virtlogd", "libvirtd") if daemon_pid(name) is None]
    for name in started:
        start_daemon(name)
    try:
        yield
    finally:
        for name in reversed(started):
            stop_daemon(name)
