"""Backups of disks on rbd pools, Ceph's own way: an RBD snapshot per backup, exported.

libvirt's incremental backups need persistent dirty bitmaps, which live in qcow2 images; an rbd
disk is a raw image, so libvirt refuses a checkpoint on it. Ceph tracks what changed between two
snapshots of an image itself, so every backup takes an RBD snapshot ``bp-<job id>`` of each disk
(the checkpoint the next incremental names) and writes into ``DIR``, per disk:

- full: ``<target>.qcow2``, the snapshot's content (``qemu-img convert``: the same file a local
  disk's push backup writes, restored the same way);
- incremental from checkpoint C: ``<target>.rbd-diff``, ``rbd export-diff --from-snap C`` (the
  extents written since C; ``rbd import-diff`` applies it onto an image holding C's content);
- ``<target>.json``: what the file holds (kind, format, image, from and to snapshots, size).

Several disks are snapshotted with the VM paused for that instant, so that they agree. The work
runs within the request (bounded by its deadline: give big disks a longer ``--timeout``). Must
not touch local disks (libvirt's push backup does) or decide which disks take part.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from blockplane import deadlines
from blockplane.errors import BlockplaneError, Conflict, NotFound, OperationFailed
from blockplane.hypervisor.domain import DomainHandle
from blockplane.storage.ceph_errors import CephSnapshotNotFound
from blockplane.storage.rbd_pools import RbdImage

CHECKPOINT_PREFIX = "bp-"
EXPORT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class RbdBackupDisk:
    target: str
    image: RbdImage
    file: str
    manifest: str


def backup_files(directory: str, targets: list[str], incremental: str | None
                 ) -> dict[str, str]:
    """``target`` -> the file it is written to, and ``target.manifest`` -> its manifest."""
    suffix = "rbd-diff" if incremental is not None else "qcow2"
    files: dict[str, str] = {}
    for target in targets:
        files[target] = os.path.join(directory, f"{target}.{suffix}")
        files[f"{target}.manifest"] = os.path.join(directory, f"{target}.json")
    for path in files.values():
        if os.path.lexists(path):
            raise Conflict(f"{path} already exists; back up into a new directory",
                           code="backup.exists")
    return files


def require_checkpoint(images: list[tuple[str, RbdImage]], checkpoint: str) -> None:
    """The incremental's base must be an RBD snapshot a backup left on every disk."""
    if not checkpoint.startswith(CHECKPOINT_PREFIX):
        raise NotFound(f"{checkpoint!r} is not a backup checkpoint (they are named "
                       f"{CHECKPOINT_PREFIX}<job id>)", code="checkpoint.not_found")
    for target, image in images:
        names = {snap.name for snap in image.client.list_snapshots(image.ceph_pool, image.name)}
        if checkpoint not in names:
            raise NotFound(f"the image of {target} has no RBD snapshot {checkpoint}: "
                           "back up in full first", code="checkpoint.not_found")


def run_backup(domain: DomainHandle, disks: list[RbdBackupDisk], checkpoint: str,
               incremental: str | None) -> list[dict[str, Any]]:
    """Snapshot every disk as one instant, then export each; on failure nothing stays."""
    made: list[RbdImage] = []
    try:
        with _one_instant(domain, several=len(disks) > 1):
            for disk in disks:
                disk.image.client.create_snapshot(disk.image.ceph_pool, disk.image.name,
                                                  checkpoint)
                made.append(disk.image)
        return [_export(disk, checkpoint, incremental) for disk in disks]
    except BaseException:
        for image in made:
            with contextlib.suppress(BlockplaneError):
                image.client.remove_snapshot(image.ceph_pool, image.name, checkpoint)
        for disk in disks:
            for path in (disk.file, disk.manifest):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        raise


def forget_checkpoint(images: list[RbdImage], checkpoint: str) -> None:
    """Remove the RBD snapshot a failed or abandoned backup left behind."""
    for image in images:
        with contextlib.suppress(CephSnapshotNotFound):
            image.client.remove_snapshot(image.ceph_pool, image.name, checkpoint)


@contextlib.contextmanager
def _one_instant(domain: DomainHandle, *, several: bool) -> Iterator[None]:
    if several and domain.is_active():
        domain.suspend()
        try:
            yield
        finally:
            domain.resume()
    else:
        yield


def _export(disk: RbdBackupDisk, checkpoint: str, incremental: str | None) -> dict[str, Any]:
    image = disk.image
    info = image.client.image_info(image.ceph_pool, image.name)
    if incremental is None:
        _qemu_img_convert(image, checkpoint, disk.file)
        kind, file_format = "full", "qcow2"
    else:
        image.client.run(
            "rbd",
            ["export-diff", "--no-progress", "--from-snap", incremental,
             f"{image.ceph_pool}/{image.name}@{checkpoint}", disk.file],
            f"exporting {image.path} from @{incremental} to @{checkpoint}",
            pool=image.ceph_pool, long=True)
        kind, file_format = "incremental", "rbd-diff"
    manifest = {
        "target": disk.target, "kind": kind, "format": file_format,
        "file": os.path.basename(disk.file), "image": image.path,
        "checkpoint": checkpoint, "from_checkpoint": incremental,
        "virtual_bytes": info.size_bytes,
        "restore": ("qemu-img convert the qcow2 into a new image" if incremental is None else
                    "rbd import-diff onto an image restored to from_checkpoint"),
    }
    with open(disk.manifest, "x") as stream:
        json.dump(manifest, stream, indent=2, sort_keys=True)
    return manifest


def _qemu_img_convert(image: RbdImage, snapshot: str, destination: str) -> None:
    """The snapshot's content as a qcow2 file; QEMU reads it as the pool's user (its keyring
    is named, never its key), through the legacy ``rbd:`` filename."""
    pool = image.pool
    for path in (str(pool.conf), str(pool.keyring)):
        if ":" in path or "@" in path:
            raise OperationFailed(f"the path {path} cannot be given to qemu-img's rbd driver "
                                  "(it holds ':' or '@')", code="backup.failed")
    source = (f"rbd:{image.ceph_pool}/{image.name}@{snapshot}:id={pool.user}"
              f":conf={pool.conf}:keyring={pool.keyring}")
    command = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", source, destination]
    timeout = deadlines.remaining(EXPORT_TIMEOUT_S)
    try:
        with deadlines.waiting_on(f"exporting {image.path}@{snapshot}"):
            completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                       timeout=max(timeout, 1.0), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise OperationFailed(f"exporting {image.path}@{snapshot} did not finish in "
                              f"{timeout:.0f} s", code="backup.failed") from error
    if completed.returncode != 0:
        raise OperationFailed(f"exporting {image.path}@{snapshot} failed: "
                              f"{completed.stderr.strip()[-400:]}", code="backup.failed")
