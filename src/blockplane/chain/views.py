"""What the chain services answer: a disk's chain, snapshots and checkpoints (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.model.view import KEY_IF_SET


@dataclass(frozen=True)
class ChainElementView:
    """One element, top first: ``name`` is its position (``vda``, ``vda[1]`` ...),
    ``libvirt_index`` libvirt's number for it; ``pool``/``volume`` when blockplane made it."""

    name: str
    position: int
    libvirt_index: int | None
    path: str
    format: str | None
    backing_format: str | None
    source_kind: str
    virtual_bytes: int | None
    allocation_bytes: int | None
    pool: str | None
    volume: str | None


@dataclass(frozen=True)
class MirrorView:
    job: str
    path: str | None
    format: str | None
    ready: str | None
    libvirt_index: int | None


@dataclass(frozen=True)
class RbdSnapshotView:
    """One RBD snapshot inside an rbd disk's image, oldest first."""

    name: str
    path: str
    size_bytes: int
    protected: bool
    timestamp: str


@dataclass(frozen=True)
class ChainView:
    """A disk on an rbd pool is one image: ``rbd_snapshots`` lists its RBD snapshots."""

    vm: str
    target: str
    complete: bool
    elements: tuple[ChainElementView, ...]
    mirror: MirrorView | None
    running: bool
    rbd_snapshots: tuple[RbdSnapshotView, ...] | None = field(
        default=None, kw_only=True, metadata=KEY_IF_SET)


@dataclass(frozen=True)
class SnapshotDiskView:
    """One overlay; ``status``: ``in_chain``, ``merged`` (a job merged it away) or ``unknown``.

    A disk on an rbd pool has an RBD snapshot inside its image instead (``kind``
    ``rbd_snapshot``, ``path`` the snapshot's ``rbd:POOL/IMAGE@SNAP``, ``image`` the image it
    is in, ``status`` ``in_image``, ``removed`` or ``unknown``)."""

    target: str
    pool: str | None
    volume: str | None
    path: str | None
    backing_path: str | None
    backing_format: str | None
    status: str
    image: str | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)
    kind: str | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)


@dataclass(frozen=True)
class SnapshotView:
    vm: str
    name: str
    state: str
    quiesced: bool
    disks: tuple[SnapshotDiskView, ...]
    created_at: float


@dataclass(frozen=True, kw_only=True)
class SnapshotCreated(SnapshotView):
    seconds: float


@dataclass(frozen=True)
class CheckpointDiskView:
    """``bitmap`` None: the disk is not tracked; ``dirty_bytes`` only while the VM runs.
    ``state``: whether its bitmap can start an incremental (``chain.checkpoint_health``:
    ok, broken, untracked, detached, unknown)."""

    target: str
    bitmap: str | None
    dirty_bytes: int | None
    state: str = "unknown"


@dataclass(frozen=True)
class CheckpointView:
    """``used_by_job``: the live job that keeps it from being deleted, if any. ``state``:
    ``broken`` if a tracked disk's bitmap is, ``ok``, or ``unknown`` if none could be judged."""

    vm: str
    name: str
    parent: str | None
    created_at: int | None
    disks: tuple[CheckpointDiskView, ...]
    used_by_job: str | None
    state: str = "unknown"


@dataclass(frozen=True)
class CheckpointDeleteResult:
    vm: str
    name: str
    deleted: bool
    merged_into: str | None
