"""When a volume on a shared (rbd) pool may be deleted: only once nothing references it.

A shared pool's image is reachable from every host that adds the cluster, so a detach, a VM
delete or a recovery must not remove one that is still named: by another disk record, by a VM's
live backing chain or a live job (``VolumeUsers``, from the chain package), or, said by Ceph at
removal time, still open on another host (``backends.rbd``). Pure: reads records, deletes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from blockplane.store.records import Records

#: The users of an image path other than disk records: live chains and live jobs.
VolumeUsers = Callable[[str], list[str]]


def shared_volume_in_use(records: Records, users: VolumeUsers | None, pool: str,
                         volume: str) -> str | None:
    """Why ``pool``/``volume`` must be kept, or None when nothing references it."""
    record = records.volume(pool, volume)
    if record is None:
        return None
    disks = records.disks_on_volume(pool, volume)
    if disks:
        named = ", ".join(f"{disk.vm}/{disk.target}" for disk in disks)
        return f"kept: volume {volume} is still the disk {named}"
    others = users(record.path) if users is not None else []
    if others:
        return f"kept: volume {volume} is still used by {', '.join(others)}"
    return None
