"""The QEMU capabilities cache, carried from one lab host to the next.

Every libvirtd probes QEMU on first use (seconds under TCG) and caches the result under
``/var/cache/libvirt/qemu/capabilities``. ``down`` keeps the lab's cache in
:data:`MACHINE_CACHE` and ``up`` seeds every new host with it; libvirt re-validates each entry
(QEMU binary, versions, host CPU) and probes again when it is stale, so a wrong cache costs
time, never correctness. Owns that one directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

MACHINE_CACHE = Path("/var/cache/blockplane-lab/qemu-capabilities")
RELATIVE = Path("qemu") / "capabilities"  # under the host's /var/cache/libvirt


def seed(host_cache: Path) -> None:
    """Copy the machine's cache into a host's private /var/cache/libvirt."""
    if not MACHINE_CACHE.is_dir():
        return
    target = host_cache / RELATIVE
    target.mkdir(mode=0o755, parents=True, exist_ok=True)
    for entry in MACHINE_CACHE.glob("*.xml"):
        with contextlib.suppress(OSError):
            shutil.copy2(entry, target / entry.name)


def keep(host_cache: Path) -> None:
    """Save a host's cache entries for the next lab (each file replaced atomically)."""
    source = host_cache / RELATIVE
    if not source.is_dir():
        return
    MACHINE_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in source.glob("*.xml"):
        temporary = MACHINE_CACHE / f".{entry.name}.{os.getpid()}"
        try:
            shutil.copy2(entry, temporary)
            os.replace(temporary, MACHINE_CACHE / entry.name)
        except OSError:
            temporary.unlink(missing_ok=True)
