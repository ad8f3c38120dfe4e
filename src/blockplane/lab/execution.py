"""Running a command inside a lab host: its mount namespace and its environment.

``nsenter`` joins the mount namespace of the host's holder process (checked by PID and start
time first) and execs the command directly, with no shell, so the command's exit status is
the caller's. Owns the host environment (BLOCKPLANE_HOME, BLOCKPLANE_LIBVIRT_URI,
BLOCKPLANE_IMAGES, PATH with this Python's venv first) and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from blockplane.errors import OperationFailed, StateUnavailable
from blockplane.lab.layout import HOST_DATA_PATH
from blockplane.lab.state import HostState, LabState

SYSTEM_URI = "qemu:///system"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def python_bin() -> Path:
    """The directory of this Python (the project's venv when it runs from one)."""
    return Path(sys.executable).parent


def blockplane_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "blockplane", *args]


def host_environment(state: LabState, base: Mapping[str, str] | None = None) -> dict[str, str]:
    environment = dict(os.environ if base is None else base)
    environment["BLOCKPLANE_HOME"] = str(HOST_DATA_PATH)
    environment["BLOCKPLANE_LIBVIRT_URI"] = SYSTEM_URI
    environment["BLOCKPLANE_IMAGES"] = str(state.images)
    environment["PATH"] = f"{python_bin()}:{environment.get('PATH') or DEFAULT_PATH}"
    return environment


def namespace_argv(host: HostState, argv: Sequence[str], cwd: Path | None = None) -> list[str]:
    """``nsenter`` into ``host``'s mount namespace, then ``argv``; refused if the host is down."""
    if host.holder is None or not host.holder.running():
        raise StateUnavailable(
            f"{host.name}'s namespace is not running (its holder process is gone): is the lab "
            "up? `scripts/lab show` tells, `scripts/lab down` then `up` starts it again",
            code="lab.host_down",
        )
    # setns() moves the working directory to the namespace's root: keep the caller's.
    directory = cwd if cwd is not None else Path.cwd()
    return [
        "nsenter",
        f"--mount=/proc/{host.holder.pid}/ns/mnt",
        f"--wdns={directory}",
        "--",
        *argv,
    ]


def host_command(
    state: LabState, name: str, argv: Sequence[str], cwd: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``argv`` inside lab host ``name``."""
    return namespace_argv(state.host(name), argv, cwd), host_environment(state)


def run_in_host(
    state: LabState,
    host: HostState,
    argv: Sequence[str],
    *,
    timeout: float = 120,
    what: str,
) -> str:
    """Run ``argv`` in ``host``, return its stdout; OperationFailed (lab.step_failed) with its
    stderr when it fails."""
    result = subprocess.run(
        namespace_argv(host, argv, Path("/")),
        env=host_environment(state),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise OperationFailed(
            f"{host.name}: {what} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}",
            code="lab.step_failed",
        )
    return result.stdout
