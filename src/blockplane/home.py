"""Creating and checking ``BLOCKPLANE_HOME`` before the agent uses it."""

from __future__ import annotations

import os
import stat

from blockplane.config import Paths
from blockplane.errors import InvalidInput, StateUnavailable
from blockplane.store.database import MIN_FREE_BYTES, free_bytes

EMBED_QEMU_CONF = (
    "# Written by blockplane: embedded libvirt has no virtlogd, so QEMU logs go to files.\n"
    'stdio_handler = "file"\n'
)


# QEMU runs as its own unprivileged user (libvirt-qemu), so it must be able to traverse to the
# images it is given, but nobody else may list or write here.
TRAVERSE_ONLY = 0o711


def prepare_home(paths: Paths, embedded: bool) -> None:
    paths.home.mkdir(mode=TRAVERSE_ONLY, parents=True, exist_ok=True)
    mode = paths.home.stat().st_mode
    if mode & stat.S_IWOTH:
        raise InvalidInput(
            f"{paths.home} is world-writable; refusing to keep VM state there "
            f"(chmod 700 {paths.home})",
            code="home.insecure",
        )
    for directory in (paths.home, paths.pools, paths.guest_logs, paths.libvirt_root):
        directory.mkdir(mode=TRAVERSE_ONLY, exist_ok=True)
        directory.chmod(TRAVERSE_ONLY)
    if embedded:
        etc = paths.libvirt_root / "etc"
        etc.mkdir(mode=0o700, exist_ok=True)
        conf = etc / "qemu.conf"
        if not conf.exists() or conf.read_text() != EMBED_QEMU_CONF:
            conf.write_text(EMBED_QEMU_CONF)
            os.chmod(conf, 0o600)


def ensure_room_to_start(paths: Paths, embedded: bool) -> None:
    """Refuse to open an embedded libvirt root on a (nearly) full home.

    On open, embedded libvirt reconnects to the VMs still running from that root and saves
    their status; when it cannot, it powers them off ("shutting down, reason=daemon"). Seen on
    libvirt 11.3 with a full BLOCKPLANE_HOME: an agent restart killed every running VM. So the
    agent does not start there until space is freed; the VMs keep running meanwhile.
    """
    if not embedded or not paths.home.exists():
        return
    free = free_bytes(paths.home)
    if free < MIN_FREE_BYTES:
        raise StateUnavailable(
            f"{paths.home} has {free} bytes free (at least {MIN_FREE_BYTES} needed): the agent "
            "will not start, because its embedded libvirt would power off the running VMs it "
            "cannot record. They keep running; free space there, then start the agent again",
            code="state.disk_full",
            free_bytes=free,
        )
