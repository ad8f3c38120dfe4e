"""Claims on loopback addresses (and the one Ceph cluster), so two labs never share one.

A claim is a symlink ``/run/blockplane-lab-claims/NAME -> LAB_DIR`` made with one atomic
``symlink()``. A claim whose lab is gone (no state file, or nothing of it running) is stale and
is taken over. A free address must also have nothing listening on the agent's port. Owns the
claims directory; knows nothing of what a lab runs beyond :func:`lab_is_alive`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from pathlib import Path

from blockplane.errors import Conflict, NotFound, OperationFailed
from blockplane.lab.layout import AGENT_PORT
from blockplane.lab.processes import from_pid_file
from blockplane.lab.state import load

CLAIMS_DIR = Path("/run/blockplane-lab-claims")
# A lab whose `up` saved its state this recently counts as alive even with nothing running yet.
STARTING_GRACE_S = 120.0


def lab_is_alive(root: Path) -> bool:
    try:
        state = load(root)
    except (NotFound, OperationFailed, ValueError, KeyError):
        return False
    for host in state.hosts:
        for process in (host.holder, host.libvirtd, host.agent):
            if process is not None and process.running():
                return True
        if from_pid_file(host.layout.holder_pid_file) is not None:
            return True
    if state.status == "starting":
        with contextlib.suppress(OSError):
            return time.time() - state.layout.state_file.stat().st_mtime < STARTING_GRACE_S
    return False


def _port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def claim(address: str, root: Path, *, check_port: bool) -> None:
    """Claim ``address`` for the lab at ``root``; Conflict (lab.address_in_use) if another
    live lab holds it or something listens on its agent port."""
    CLAIMS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = CLAIMS_DIR / address
    for _attempt in range(3):
        try:
            os.symlink(root, path)
            break
        except FileExistsError:
            pass
        try:
            owner = Path(os.readlink(path))
        except FileNotFoundError:
            continue
        if owner == root:
            break
        if lab_is_alive(owner):
            remedy = (
                "choose another block with --base-address (or auto), or"
                if address[:1].isdigit()
                else "only one lab per machine can have it:"
            )
            raise Conflict(
                f"{address} belongs to the lab at {owner}: {remedy} "
                f"`scripts/lab down --dir {owner}`",
                code="lab.address_in_use",
            )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise Conflict(f"could not claim {address}", code="lab.address_in_use")
    if check_port and not _port_is_free(address, AGENT_PORT):
        release(address, root)
        raise Conflict(
            f"something already listens on {address}:{AGENT_PORT} (not a lab): choose "
            "another block with --base-address",
            code="lab.address_in_use",
        )


def release(address: str, root: Path) -> None:
    path = CLAIMS_DIR / address
    with contextlib.suppress(OSError):
        if Path(os.readlink(path)) == root:
            path.unlink()
