"""The volumes behind chain elements: made for overlays and copies, tracked, and deleted only once
nothing references them.

A ``DiskObserver`` (see ``vms.observers``): a disk attached records its first volume; a disk
detached (or its VM deleted) deletes every other volume of that disk's chain, while the disk
service deletes (or, still referenced, keeps) the top named by the disk record. Images a job
drops from a chain are marked ``invalidated`` first (persisted), then deleted when neither a
live chain nor a live job names them; ``collect`` retries what could not go yet. ``collect``
runs on the reconcile thread while a job's cleanup runs on the event thread: one lock keeps a
cleanup's change of a volume's state from landing between collect's reading of the rows and its
deleting of them. Must not call block-job APIs or edit domain XML.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

from blockplane.chain.jobs.spec import VolumeRef
from blockplane.chain.ports import ThinHook
from blockplane.errors import BlockplaneError, NotFound
from blockplane.storage.images import create_qcow2
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.chain_records import ChainRecords, ChainVolumeRecord
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records, VolumeRecord

log = logging.getLogger(__name__)

#: Paths still referenced by something other than the chain tables (live jobs, live chains).
References = Callable[[str], set[str]]


class ChainVolumes:
    def __init__(
        self,
        records: Records,
        chain_records: ChainRecords,
        pools: PoolService,
        volumes: VolumeService,
        events: EventPublisher,
        thin: ThinHook | None,
        references: References,
        preparing: Callable[[str], bool],
    ) -> None:
        """``references``: the paths a VM's live chains and live jobs use; ``preparing``: True
        while a job or snapshot of the VM is being prepared (``chain.jobs.holds``)."""
        self._records = records
        self._chain = chain_records
        self._pools = pools
        self._volumes = volumes
        self._events = events
        self._thin = thin
        self._lock = threading.RLock()
        self._references = references
        self._preparing = preparing

    # DiskObserver
    def disk_attached(self, vm: str, target: str, volume: VolumeRecord) -> None:
        self._chain.add_volume(ChainVolumeRecord(volume.pool, volume.name, vm, target,
                                                 volume.path, "in_chain", "disk"))

    def disk_detached(self, vm: str, target: str) -> None:
        disk = self._records.disk(vm, target)
        top = (disk.pool, disk.volume) if disk else None
        with self._lock:
            for row in self._chain.volumes(vm=vm, target=target):
                if (row.pool, row.volume) != top:
                    self._delete(row)
                else:
                    # The disk service deletes the top, or keeps it standalone (an rbd image
                    # still referenced elsewhere): either way it is in this chain no more.
                    self._chain.forget_volume(row.pool, row.volume)

    def adopt_untracked(self) -> None:
        """Disks attached before chain tracking existed: record their top volume."""
        for vm in self._records.vms():
            for disk in self._records.disks(vm.name):
                volume = self._records.volume(disk.pool, disk.volume)
                if volume is not None and self._chain.volume_at(volume.path) is None:
                    self.disk_attached(vm.name, disk.target, volume)

    # making and placing volumes
    def create(
        self, vm: str, target: str, pool: str, name: str, virtual_bytes: int, *, thin: bool,
        backing: str | None, backing_format: str | None, origin: str,
        initial_bytes: int | None = None,
        image_format: str = "qcow2",
    ) -> VolumeRecord:
        """A new volume (qcow2 on ``backing`` if given; raw on rbd pools), recorded as
        ``creating``; a thin one starts at ``initial_bytes`` if given
        (``VolumeService.initial_physical``)."""
        record = self._volumes.create(self._pools.get(pool), name, virtual_bytes, image_format,
                                      thin, initial_bytes)
        try:
            if backing is not None:
                create_qcow2(record.path, virtual_bytes, backing, backing_format)
            self._chain.add_volume(ChainVolumeRecord(pool, name, vm, target, record.path,
                                                     "creating", origin))
        except BaseException:
            self._volumes.delete(pool, name)
            raise
        return record

    def placed_on_top(self, vm: str, target: str, ref: VolumeRef) -> None:
        """``ref`` is now the active top of ``vm``/``target``: record it and follow it."""
        with self._lock:
            self._chain.set_volume_state(ref.pool, ref.volume, "in_chain")
            self._chain.set_disk_top(vm, target, ref.pool, ref.volume)
        record = self._records.volume(ref.pool, ref.volume)
        if record is not None and record.thin and self._thin is not None:
            try:
                self._thin.track(vm, target, record)
            except BlockplaneError:
                log.exception("the thin monitor could not take %s/%s", ref.pool, ref.volume)

    def top_of(self, vm: str, target: str, path: str) -> None:
        """After a pivot onto an existing chain element (active commit): repoint the disk."""
        row = self._chain.volume_at(path)
        if row is not None:
            self._chain.set_disk_top(vm, target, row.pool, row.volume)

    def discard(self, ref: VolumeRef) -> None:
        """Delete a volume a job or snapshot created but that never entered a chain."""
        with self._lock:
            row = self._chain.volume_at(ref.path)
            if row is not None and row.state == "in_chain":
                return
            self._forget_thin(ref.pool, ref.volume)
            try:
                self._volumes.delete(ref.pool, ref.volume)
            except NotFound:
                self._records.delete_volume(ref.pool, ref.volume)
            self._chain.forget_volume(ref.pool, ref.volume)

    def keep_apart(self, ref: VolumeRef) -> None:
        """Leave ``ref`` as a standalone volume of its pool (a point-in-time copy); no VM
        writes it any more, so the thin monitor lets it go."""
        with self._lock:
            self._forget_thin(ref.pool, ref.volume)
            self._chain.forget_volume(ref.pool, ref.volume)

    # dropping images from chains
    def invalidate(self, vm: str, paths: Iterable[str]) -> list[str]:
        """Mark the volumes at ``paths`` invalidated, then delete those nothing references."""
        with self._lock:
            for path in paths:
                row = self._chain.volume_at(path)
                if row is not None:
                    self._chain.set_volume_state(row.pool, row.volume, "invalidated")
            return self.collect(vm)

    def collect(self, vm: str | None = None) -> list[str]:
        """Delete invalidated volumes no longer referenced, and volumes left ``creating`` by a
        job or snapshot the agent died preparing; return the deleted names."""
        with self._lock:
            deleted = []
            rows = self._chain.volumes(vm=vm, state="invalidated")
            rows += [row for row in self._chain.volumes(vm=vm, state="creating")
                     if not self._preparing(row.vm)]
            referenced: dict[str, set[str]] = {}
            for row in rows:
                if row.vm not in referenced:
                    try:
                        referenced[row.vm] = {_norm(p) for p in self._references(row.vm)}
                    except BlockplaneError:
                        continue  # the VM's chain cannot be read now: keep its volumes
                if _norm(row.path) in referenced[row.vm]:
                    continue
                self._delete(row)
                deleted.append(row.volume)
            return deleted

    def _delete(self, row: ChainVolumeRecord) -> None:
        self._forget_thin(row.pool, row.volume)
        try:
            self._volumes.delete(row.pool, row.volume)
        except NotFound:
            self._records.delete_volume(row.pool, row.volume)  # its bytes are already gone
        except BlockplaneError:
            log.exception("deleting chain volume %s/%s failed; retried later", row.pool,
                          row.volume)
            return
        self._chain.forget_volume(row.pool, row.volume)
        self._events.publish("chain.volume_deleted", row.vm, target=row.target, pool=row.pool,
                             volume=row.volume, path=row.path)

    def _forget_thin(self, pool: str, volume: str) -> None:
        if self._thin is not None:
            self._thin.forget((pool, volume))


def _norm(path: str) -> str:
    return os.path.normpath(path)
