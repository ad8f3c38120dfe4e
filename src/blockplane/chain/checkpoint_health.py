"""Whether a checkpoint's dirty bitmap on a disk can still start an incremental backup.

libvirt's rule (kbase/incrementalbackupinternals, ``qemuBlockBitmapChainIsValid``): the disk's
top image holds the bitmap, recording and not inconsistent. Two ways to see it:
- a running VM: libvirt reports a bitmap's dirty size (``VIR_DOMAIN_CHECKPOINT_XML_SIZE``) only
  when its chain is valid, so a tracked disk of the domain without a size is broken (checked on
  libvirt 11.3: after QEMU was killed, the bitmaps were gone from the image and the size was
  missing; an incremental from it was refused "missing or broken bitmap");
- a stopped VM: ``qemu-img info`` of the top image lists the bitmap with ``auto`` (recording)
  and without ``in-use`` (which, on an image no QEMU holds, means it was not saved cleanly).
Pure functions of what the caller read. Must not call libvirt or qemu-img.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from blockplane.xml.chain import CheckpointDocument


class DiskHealth(Enum):
    OK = "ok"
    BROKEN = "broken"
    UNTRACKED = "untracked"  # the checkpoint has no bitmap for this disk (attached after it)
    DETACHED = "detached"  # the checkpoint tracked a disk the VM no longer has
    UNKNOWN = "unknown"  # nothing to judge by (sizes unavailable)

    @property
    def usable(self) -> bool:
        """An incremental from this bitmap may be tried (libvirt has the last word)."""
        return self in (DiskHealth.OK, DiskHealth.UNKNOWN)


def health_from_sizes(checkpoint: CheckpointDocument, target: str, present: set[str],
                      *, sizes_asked: bool) -> DiskHealth:
    """A running VM's verdict; ``sizes_asked``: the documents were read with their sizes."""
    disk = next((d for d in checkpoint.disks if d.target == target), None)
    if disk is None or disk.bitmap is None:
        return DiskHealth.UNTRACKED if target in present else DiskHealth.DETACHED
    if target not in present:
        return DiskHealth.DETACHED
    if not sizes_asked:
        return DiskHealth.UNKNOWN
    return DiskHealth.OK if disk.dirty_bytes is not None else DiskHealth.BROKEN


def health_from_image(checkpoint: CheckpointDocument, target: str,
                      top_bitmaps: Mapping[str, tuple[str, ...]] | None) -> DiskHealth:
    """A stopped VM's verdict from the bitmaps of the disk's top image (None: no such disk)."""
    disk = next((d for d in checkpoint.disks if d.target == target), None)
    if top_bitmaps is None:
        return DiskHealth.DETACHED if disk is not None and disk.bitmap else DiskHealth.UNTRACKED
    if disk is None or disk.bitmap is None:
        return DiskHealth.UNTRACKED
    flags = top_bitmaps.get(disk.bitmap)
    if flags is None or "in-use" in flags or "auto" not in flags:
        return DiskHealth.BROKEN
    return DiskHealth.OK


def checkpoint_state(healths: Mapping[str, DiskHealth]) -> str:
    """``broken`` if any tracked disk's bitmap is, ``unknown`` if none could be judged."""
    values = set(healths.values())
    if DiskHealth.BROKEN in values:
        return "broken"
    if DiskHealth.OK in values:
        return "ok"
    return "unknown"
