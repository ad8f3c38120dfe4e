"""``volume list|delete``: the volumes of a pool as a user manages them by hand, such as the
point-in-time copy a job aborted after READY leaves behind.

Delete frees the volume's bytes (file, loop backing file and device, or LV) and its record, but
only once nothing uses it: no disk record names it, no VM's backing chain holds it, and no job
(source, destination, image being made) refers to it (``volume_usage``). The name must be a plain
volume name whose file resolves inside the pool directory. Must not decide what a chain or a job
is: the chain package reports its references through ``ReferenceSource``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path

from blockplane.errors import Conflict, NotFound
from blockplane.model.view import view_fields
from blockplane.storage.backends.loop import BACKING_SUFFIX
from blockplane.storage.names import confine, validate_volume_name
from blockplane.storage.pools import PoolService
from blockplane.storage.views import VolumeDeleteResult, VolumeView
from blockplane.storage.volume_usage import (
    ReferenceSource,
    VolumeReferences,
    volume_aliases,
    volume_users,
)
from blockplane.storage.volumes import VolumeService
from blockplane.store.events import EventPublisher
from blockplane.store.records import PoolRecord, Records, VolumeRecord

#: Stops the thin monitor following a volume (``ThinMonitor.forget``), when one is wired in.
ForgetThin = Callable[[tuple[str, str]], None]


class PoolVolumes:
    def __init__(self, pools: PoolService, volumes: VolumeService, records: Records,
                 events: EventPublisher, references: ReferenceSource,
                 forget_thin: ForgetThin | None = None) -> None:
        self._pools = pools
        self._volumes = volumes
        self._records = records
        self._events = events
        self._references = references
        self._forget_thin = forget_thin

    def list(self, pool_name: str) -> builtins.list[VolumeView]:
        pool = self._pools.get(pool_name)
        references = self._references()
        return [self._view(pool, record, references)
                for record in self._records.volumes(pool.name)]

    def delete(self, pool_name: str, name: str) -> VolumeDeleteResult:
        pool = self._pools.get(pool_name)
        record = self._record(pool, name)
        references = self._references()
        users = self._users(pool, record, references)
        if users:
            raise Conflict(
                f"volume {name} of pool {pool.name} is in use by {', '.join(users)}; "
                "detach it, or let its job end, first",
                code="volume.in_use", volume=name, users=users)
        if references.unreadable:
            raise Conflict(
                f"cannot tell whether volume {name} of pool {pool.name} is in use: "
                f"{'; '.join(references.unreadable)}; retry once those chains can be read",
                code="volume.usage_unknown", volume=name)
        if record.thin and self._forget_thin is not None:
            self._forget_thin((pool.name, name))
        try:
            self._volumes.delete(pool.name, name)
        except NotFound:
            # Its bytes were already gone (removed by hand): the record is all that is left.
            self._records.delete_volume(pool.name, name)
            self._events.publish("volume.deleted", None, pool=pool.name, volume=name)
        return VolumeDeleteResult(pool.name, name, record.path, deleted=True,
                                  freed_bytes=record.physical_bytes)

    def _record(self, pool: PoolRecord, name: str) -> VolumeRecord:
        validate_volume_name(name)
        if pool.type not in ("lvm", "rbd"):
            confine(Path(pool.path), name, suffix=BACKING_SUFFIX if pool.type == "loop" else "")
        record = self._records.volume(pool.name, name)
        if record is None:
            raise NotFound(f"pool {pool.name} has no volume {name!r}", code="volume.not_found",
                           volume=name)
        return record

    def _users(self, pool: PoolRecord, record: VolumeRecord,
               references: VolumeReferences) -> builtins.list[str]:
        backend = self._pools.backend(pool)
        device = backend.device_of(record.name)
        aliases = volume_aliases(record, str(device) if device is not None else None)
        return volume_users(aliases, self._records.disks_on_volume(pool.name, record.name),
                            references)

    def _view(self, pool: PoolRecord, record: VolumeRecord,
              references: VolumeReferences) -> VolumeView:
        users = self._users(pool, record, references)
        return VolumeView(**view_fields(record), in_use=bool(users), used_by=tuple(users))
