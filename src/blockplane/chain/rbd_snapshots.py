"""Snapshots of disks on rbd pools: RBD snapshots inside each image, not overlays.

Why RBD snapshots (and not qcow2 overlays in a local pool over an RBD base): an overlay on a
local pool would tie the VM to one host again, which is what Ceph is there to undo, and an
overlay in Ceph would turn every disk into qcow2-on-RBD. An RBD snapshot is Ceph's own
point-in-time copy: instant, copy-on-write inside the cluster, visible to every host, and the
base of ``rbd export-diff`` incrementals (``chain.jobs.rbd_backup``). So an rbd disk's chain
stays one element (``vda``, the image) and its snapshots are listed beside it; commit and pull have
nothing to act on and are refused (``chain.rbd_no_backing``).

Sequence: validate, record the snapshot ``creating`` (disks with the ``rbd:POOL/IMAGE@NAME``
each will get), make the guest consistent (``--quiesce``: its filesystems frozen through the
guest agent; else, with several disks, the VM paused so that the snapshots are of one instant),
``rbd snap create`` per disk, thaw or resume, record ``done``. On failure the snapshots made are
removed and the record dropped; ``settle`` finishes or undoes one an agent died in (and thaws a
guest it may have left frozen). Must not run block jobs or touch local pools.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from blockplane.chain.views import RbdSnapshotView
from blockplane.errors import BlockplaneError, Conflict, InvalidInput
from blockplane.failpoints import failpoint
from blockplane.hypervisor.domain import DomainHandle
from blockplane.storage.ceph import check_name
from blockplane.storage.ceph_errors import CephSnapshotNotFound
from blockplane.storage.pools import PoolService
from blockplane.storage.rbd_pools import RbdImage
from blockplane.store.chain_records import ChainRecords, SnapshotRecord
from blockplane.store.records import DiskRecord, Records

log = logging.getLogger(__name__)

KIND = "rbd_snapshot"


class RbdSnapshots:
    def __init__(self, pools: PoolService, records: Records, chain_records: ChainRecords) -> None:
        self._pools = pools
        self._records = records
        self._chain = chain_records

    def on_rbd(self, disk: DiskRecord) -> bool:
        pool = self._records.pool(disk.pool)
        return pool is not None and pool.type == "rbd"

    def split(self, disks: list[DiskRecord]) -> tuple[list[DiskRecord], list[DiskRecord]]:
        """(rbd disks, other disks) of ``disks``."""
        rbd = [disk for disk in disks if self.on_rbd(disk)]
        return rbd, [disk for disk in disks if not self.on_rbd(disk)]

    def image_of(self, disk: DiskRecord) -> RbdImage:
        volume = self._records.volume(disk.pool, disk.volume)
        if volume is None or self._pools.rbd is None:
            raise InvalidInput(f"{disk.vm}/{disk.target} has no rbd volume on record",
                               code="disk.not_found")
        return self._pools.rbd.image(disk.pool, volume.path)

    def create(self, domain: DomainHandle, vm: str, name: str, disks: list[DiskRecord], *,
               quiesce: bool, live: bool) -> SnapshotRecord:
        check_name(name, "snapshot")
        images = [(disk, self.image_of(disk)) for disk in disks]
        for disk, image in images:
            if any(existing.name == name for existing in
                   image.client.list_snapshots(image.ceph_pool, image.name)):
                raise Conflict(f"the image of {vm}/{disk.target} already has an RBD snapshot "
                               f"named {name}", code="snapshot.exists")
        # How the instant is made consistent, kept so a reconcile can undo a freeze or a pause
        # an agent that died half-way left behind.
        consistency = "frozen" if live and quiesce else (
            "paused" if live and len(images) > 1 else "none")
        plans = [{"target": disk.target, "pool": disk.pool, "volume": disk.volume,
                  "kind": KIND, "image": image.path, "path": image.snapshot_path(name),
                  "backing_path": None, "backing_format": None, "consistency": consistency}
                 for disk, image in images]
        record = SnapshotRecord(vm, name, "creating", quiesce, plans, time.time())
        self._chain.save_snapshot(record)
        made: list[RbdImage] = []
        try:
            with self._consistent(domain, quiesce=quiesce, live=live, several=len(images) > 1):
                for _disk, image in images:
                    image.client.create_snapshot(image.ceph_pool, image.name, name)
                    made.append(image)
                    failpoint("snapshot.rbd.after_one")
        except BaseException:
            for image in made:
                with contextlib.suppress(BlockplaneError):
                    image.client.remove_snapshot(image.ceph_pool, image.name, name)
            self._chain.delete_snapshot(vm, name)
            raise
        self._chain.set_snapshot_state(vm, name, "done")
        return self._chain.snapshot(vm, name) or record

    @contextlib.contextmanager
    def _consistent(self, domain: DomainHandle, *, quiesce: bool, live: bool,
                    several: bool) -> Any:
        """Frozen filesystems (quiesce) or a paused VM (several disks) for the snapshots."""
        if live and quiesce:
            domain.fs_freeze()
            try:
                yield
            finally:
                domain.fs_thaw()
        elif live and several:
            domain.suspend()
            try:
                yield
            finally:
                domain.resume()
        else:
            yield

    def describe(self, disk: dict[str, Any]) -> str:
        """``in_image`` while the RBD snapshot exists, ``removed`` once it does not."""
        try:
            image = self._image_at(disk)
            names = {snapshot.name for snapshot in
                     image.client.list_snapshots(image.ceph_pool, image.name)}
        except BlockplaneError:
            return "unknown"
        return "in_image" if str(disk["path"]).rpartition("@")[2] in names else "removed"

    def _image_at(self, disk: dict[str, Any]) -> RbdImage:
        if self._pools.rbd is None:
            raise InvalidInput("no rbd support wired in")
        return self._pools.rbd.image(str(disk["pool"]), str(disk["image"]))

    def settle(self, record: SnapshotRecord, domain: DomainHandle | None) -> None:
        """A snapshot the agent died taking: done if every disk has it, else undone."""
        consistency = {disk.get("consistency") for disk in record.disks}
        if domain is not None:
            with contextlib.suppress(BlockplaneError):
                if "frozen" in consistency and domain.is_active():
                    domain.fs_thaw()  # the agent may have died with the guest frozen
                if "paused" in consistency and domain.state().state == "paused":
                    domain.resume()  # ... or with the VM paused for the instant
        present: list[tuple[RbdImage, bool]] = []
        for disk in record.disks:
            image = self._image_at(disk)  # an unreachable cluster: left for the next pass
            names = {s.name for s in image.client.list_snapshots(image.ceph_pool, image.name)}
            present.append((image, record.name in names))
        if all(found for _image, found in present):
            self._chain.set_snapshot_state(record.vm, record.name, "done")
            return
        for image, found in present:
            if found:
                with contextlib.suppress(CephSnapshotNotFound):
                    image.client.remove_snapshot(image.ceph_pool, image.name, record.name)
        self._chain.delete_snapshot(record.vm, record.name)

    def chain_snapshots(self, disk: DiskRecord) -> tuple[RbdSnapshotView, ...]:
        """The RBD snapshots of the disk's image, oldest first, for ``chain``."""
        image = self.image_of(disk)
        return tuple(RbdSnapshotView(name=snapshot.name, path=image.snapshot_path(snapshot.name),
                                     size_bytes=snapshot.size_bytes,
                                     protected=snapshot.protected,
                                     timestamp=snapshot.timestamp)
                     for snapshot in image.client.list_snapshots(image.ceph_pool, image.name))


def is_rbd_snapshot(record: SnapshotRecord) -> bool:
    return any(disk.get("kind") == KIND for disk in record.disks)
