"""Creating and checking ``BLOCKPLANE_HOME`` before the agent uses it."""

from __future__ import annotations

import os
import stat

from blockplane.config import Paths
from blockplane.errors import InvalidInput

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
