"""Who uses a volume: the pure part of "may this volume be deleted?".

A volume is named by every path QEMU may know it under (its recorded path, the device its loop
backing file is attached to now), canonicalised. Its users are the disks whose record names it
and whatever a ``VolumeReferences`` snapshot (backing chains, jobs, chain records) says about
those paths. Must not read the filesystem beyond canonicalising paths, nor delete anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from blockplane.store.records import DiskRecord, VolumeRecord

#: Paths that name a network image, not a file (``storage.backends.rbd``).
NETWORK_PREFIXES = ("rbd:",)


@dataclass(frozen=True)
class VolumeReferences:
    """``by_path``: canonical path -> who uses it ("the backing chain of web/vda", "copy job
    ab12 of web"); ``unreadable``: VMs whose chains could not be read now, with why."""

    by_path: dict[str, list[str]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


#: Gathers the references held outside the storage package (chains, jobs), wired by the agent.
ReferenceSource = Callable[[], VolumeReferences]


def canonical(path: str) -> str:
    """A host path resolved; an image QEMU reaches over the network (``rbd:POOL/IMAGE``) is
    no host path and is kept as it is."""
    if path.startswith(NETWORK_PREFIXES):
        return path
    return os.path.realpath(path)


def volume_aliases(record: VolumeRecord, attached_device: str | None) -> set[str]:
    """Every canonical path under which a chain or job may name ``record``."""
    paths = {record.path} | ({attached_device} if attached_device else set())
    return {canonical(path) for path in paths}


def volume_users(aliases: Iterable[str], disks: Iterable[DiskRecord],
                 references: VolumeReferences) -> list[str]:
    """Who uses the volume with these ``aliases``, each named once, disks first."""
    users = [f"disk {disk.vm}/{disk.target}" for disk in disks]
    for alias in sorted(aliases):
        users += references.by_path.get(alias, [])
    return list(dict.fromkeys(users))
