"""Block jobs where an rbd image is the source or the destination.

A copy into an rbd pool mirrors the disk into a raw RBD image made beforehand (libvirt's
REUSE_EXT, with the image's ``<source protocol='rbd'>`` and ``<auth>`` as the destination); a
copy out of one reads the image through QEMU like any source. What has no meaning on an rbd disk
is refused before anything is made: commit and pull (its snapshots live inside the image, it has
no backing chain) and ``--shallow`` into rbd (a raw image has no backing file). A backup of rbd
disks is planned here and run by ``chain.jobs.rbd_backup``. Must not start jobs or create
volumes (the jobs service does).
"""

from __future__ import annotations

from blockplane.chain.jobs.rbd_backup import (
    CHECKPOINT_PREFIX,
    RbdBackupDisk,
    backup_files,
    forget_checkpoint,
    require_checkpoint,
)
from blockplane.chain.jobs.spec import JobSpec
from blockplane.errors import CapabilityMissing, InvalidInput, NotFound
from blockplane.iothreads.model import MappingSupport
from blockplane.model.chain import Chain
from blockplane.storage.backends.rbd import is_rbd_path
from blockplane.storage.images import virtual_size
from blockplane.storage.pools import PoolService
from blockplane.storage.rbd_pools import RbdImage
from blockplane.store.records import DiskRecord, PoolRecord, Records
from blockplane.xml.chain import ImageTarget
from blockplane.xml.disk import parse_disks


def refuse_on_rbd(chain: Chain, what: str) -> None:
    if any(is_rbd_path(element.path) for element in chain.elements):
        raise InvalidInput(
            f"{what} does not apply to {chain.target}: it is an rbd image, whose snapshots live "
            "inside the image (RBD snapshots), so it has no backing chain to merge; use "
            "snapshot, copy and backup on it",
            code="chain.rbd_no_backing")


def refuse_unsafe_mapping(domain_xml: str, target: str, support: MappingSupport,
                          what: str) -> None:
    """Refuse to put an rbd image under a disk whose queues run in several IOThreads where
    QEMU lacks the rbd multiqueue fix (facts ``rbd_multi_iothread``): a pivot (or mirrored
    guest writes) would give the image requests from more than one IOThread."""
    if support.supported:
        return
    disk = next((d for d in parse_disks(domain_xml) if d.target == target), None)
    iothreads = {iothread for iothread, _queues in disk.queue_mapping} if disk else set()
    if len(iothreads) > 1:
        raise CapabilityMissing(
            f"{what} of {target} into rbd refused: its queues run in {len(iothreads)} "
            f"IOThreads ({', '.join(map(str, sorted(iothreads)))}) and {support.reason}. Copy "
            "without --pivot (a point-in-time copy), or use a disk served by one IOThread "
            "(attached with --io-threads 0, or with I/O limits)",
            code="copy.rbd_multiqueue_unsafe", capability="rbd_multi_iothread")


class RbdCopies:
    def __init__(self, pools: PoolService, records: Records) -> None:
        self._pools = pools
        self._records = records

    def virtual_size(self, vm: str, target: str, path: str) -> int:
        """The size of the image at ``path``: qemu-img for files and devices, Ceph for rbd."""
        if not is_rbd_path(path):
            return virtual_size(path)
        volume = next((v for v in self._records.volumes() if v.path == path), None)
        if volume is None or self._pools.rbd is None:
            raise NotFound(f"{vm}/{target}: the rbd image {path} is not a volume of any pool",
                           code="volume.not_found")
        image = self._pools.rbd.image(volume.pool, path)
        return image.client.image_info(image.ceph_pool, image.name).size_bytes

    def on_rbd(self, vm: str, targets: list[str]) -> tuple[list[DiskRecord], list[DiskRecord]]:
        """(disks on rbd pools, other disks) among ``vm``'s managed ``targets``."""
        rbd_pools = {pool.name for pool in self._records.pools() if pool.type == "rbd"}
        disks = [disk for disk in self._records.disks(vm) if disk.target in targets]
        return ([d for d in disks if d.pool in rbd_pools],
                [d for d in disks if d.pool not in rbd_pools])

    def image_of(self, disk: DiskRecord) -> RbdImage:
        volume = self._records.volume(disk.pool, disk.volume)
        if volume is None or self._pools.rbd is None:
            raise NotFound(f"{disk.vm}/{disk.target} has no rbd volume on record",
                           code="volume.not_found")
        return self._pools.rbd.image(disk.pool, volume.path)

    def plan_backup(self, job_id: str, disks: list[DiskRecord], directory: str,
                    incremental: str | None) -> tuple[JobSpec, list[RbdBackupDisk]]:
        """The backup of rbd ``disks`` into ``directory`` (``chain.jobs.rbd_backup``); checked,
        not run."""
        images = [(disk.target, self.image_of(disk)) for disk in disks]
        if incremental is not None:
            require_checkpoint(images, incremental)
        targets = [target for target, _image in images]
        files = backup_files(directory, targets, incremental)
        spec = JobSpec(targets=tuple(targets), backup_dir=directory, backup_files=files,
                       incremental=incremental, checkpoint=f"{CHECKPOINT_PREFIX}{job_id}")
        return spec, [RbdBackupDisk(target, image, files[target], files[f"{target}.manifest"])
                      for target, image in images]

    def forget_failed_backup(self, vm: str, spec: JobSpec) -> None:
        """An rbd backup that did not succeed: its RBD snapshot goes (no incremental may start
        from a backup that does not exist)."""
        if spec.checkpoint is None or not any(key.endswith(".manifest")
                                              for key in spec.backup_files):
            return
        disks = [disk for disk in self._records.disks(vm) if disk.target in spec.targets]
        forget_checkpoint([self.image_of(disk) for disk in disks], spec.checkpoint)

    def destination(self, pool: PoolRecord, path: str, target: str) -> ImageTarget:
        """The raw RBD image at ``path`` as a block-copy destination."""
        return ImageTarget(target, "network", path, "raw",
                           network=self._pools.network_source(pool, path))
