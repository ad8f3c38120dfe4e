"""What the storage services answer: pools and volumes as users see them (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.model.ceph import CephHealth, Monitor
from blockplane.model.view import KEY_IF_SET
from blockplane.store.records import PoolRecord, VolumeRecord


@dataclass(frozen=True)
class RbdUsage:
    """What ``pool show`` reports from the cluster; None with a reason where it cannot."""

    provisioned_bytes: int | None
    used_bytes: int | None
    max_avail_bytes: int | None
    cluster_total_bytes: int | None
    usage_source: str | None
    capacity_reason: str


@dataclass(frozen=True, kw_only=True)
class RbdPoolView:
    """An rbd pool's cluster settings (``rbd_pool``: the RADOS pool; ``secret_uuid``: the
    libvirt secret holding the key, never the key), its last health probe and, in ``pool
    show``, its usage from the cluster."""

    ceph_conf: str
    ceph_user: str
    ceph_keyring: str
    rbd_pool: str
    fsid: str
    secret_uuid: str
    monitors: tuple[Monitor, ...]
    shared: bool = True
    health: CephHealth
    cluster: RbdUsage | None = None


@dataclass(frozen=True, kw_only=True)
class PoolView(PoolRecord):
    """A pool as recorded, with how many volumes it holds and their physical bytes."""

    volumes: int
    used_bytes: int
    #: Every host that adds the pool reaches the same volumes (rbd): a migration copies none.
    shared: bool = False
    #: An rbd pool's cluster settings, health and (``pool show``) usage from the cluster.
    rbd: RbdPoolView | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)


@dataclass(frozen=True)
class PoolDeleteResult:
    name: str
    deleted: bool


@dataclass(frozen=True, kw_only=True)
class VolumeView(VolumeRecord):
    """One volume of a pool, as recorded, and who uses it (disks, backing chains, jobs)."""

    in_use: bool
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class VolumeDeleteResult:
    pool: str
    name: str
    path: str
    deleted: bool
    freed_bytes: int
