"""The ``rbd`` pool: each volume is a raw RBD image in one RADOS pool of a Ceph cluster.

Owns the mapping from volume names to images (the same name) and the path QEMU and the chain
code know a volume by, ``rbd:POOL/IMAGE`` (libvirt's ``<source protocol='rbd' name='POOL/IMAGE'>``).
Images are thin by nature (objects exist once written), so nothing here grows ahead of writes.
``shared``: every host that adds the same cluster reaches the same images, so a live migration
copies nothing; ``shared_identity`` (``ceph:<fsid>/<pool>``) is how two hosts tell it is the same.

Must not build XML (``xml.disk``) or hold the key (``storage.rbd_pools`` and libvirt do); the
``ceph``/``rbd`` tools are run by ``storage.ceph``.
"""

from __future__ import annotations

import builtins
from pathlib import Path

from blockplane.storage.backends.base import (
    Volume,
    check_requested_size,
    refuse_shrink,
    volume_exists,
    volume_not_found,
)
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.ceph import PROBE_PREFIX, CephClient
from blockplane.storage.ceph_errors import CephImageExists, CephImageNotFound

RBD_PATH_PREFIX = "rbd:"


def rbd_path(ceph_pool: str, image: str) -> str:
    return f"{RBD_PATH_PREFIX}{ceph_pool}/{image}"


def is_rbd_path(path: str) -> bool:
    return path.startswith(RBD_PATH_PREFIX)


def split_rbd_path(path: str) -> tuple[str, str]:
    """``rbd:POOL/IMAGE`` -> (POOL, IMAGE); ValueError for anything else."""
    if not is_rbd_path(path):
        raise ValueError(f"not an rbd path: {path!r}")
    pool, _, image = path[len(RBD_PATH_PREFIX):].partition("/")
    if not pool or not image:
        raise ValueError(f"not an rbd path: {path!r}")
    return pool, image


class RbdBackend:
    """Raw images in ``ceph_pool``; ``capacity`` caps the sum of their provisioned sizes."""

    kind = "rbd"
    is_block = False
    shared = True

    def __init__(self, client: CephClient, ceph_pool: str, *,
                 capacity: PoolCapacity | None = None, fsid: str | None = None) -> None:
        self.client = client
        self.ceph_pool = ceph_pool
        self.capacity = capacity or PoolCapacity()
        self.fsid = fsid

    @property
    def shared_identity(self) -> str | None:
        """The cluster and RADOS pool (``migration.shared_pools``); None without the fsid."""
        return f"ceph:{self.fsid.lower()}/{self.ceph_pool}" if self.fsid else None

    @property
    def where(self) -> str:
        return f"rbd pool {self.ceph_pool}"

    def _volume(self, name: str, size: int) -> Volume:
        return Volume(name, Path(rbd_path(self.ceph_pool, name)), size)

    def create(self, name: str, size_bytes: int) -> Volume:
        check_requested_size(size_bytes)
        if self.capacity.limit_bytes is not None:
            self.capacity.check_capacity(self.used_bytes(), size_bytes, volume=name,
                                         operation="create")
        try:
            info = self.client.create_image(self.ceph_pool, name, size_bytes)
        except CephImageExists as error:
            raise volume_exists(name, self.where) from error
        return self._volume(name, info.size_bytes)

    def grow(self, name: str, new_physical_bytes: int) -> int:
        current = self.physical_size(name)
        if new_physical_bytes < current:
            raise refuse_shrink(name, current, new_physical_bytes)
        if new_physical_bytes == current:
            return current
        if self.capacity.limit_bytes is not None:
            self.capacity.check_capacity(self.used_bytes(), new_physical_bytes - current,
                                         volume=name)
        return self.client.resize_image(self.ceph_pool, name, new_physical_bytes).size_bytes

    def physical_size(self, name: str) -> int:
        """The image's provisioned size (what it may grow to use, and what capacity counts)."""
        try:
            return self.client.image_info(self.ceph_pool, name).size_bytes
        except CephImageNotFound as error:
            raise volume_not_found(name, self.where) from error

    def delete(self, name: str) -> None:
        """Remove the image and its snapshots."""
        try:
            if self.client.list_snapshots(self.ceph_pool, name):
                self.client.purge_snapshots(self.ceph_pool, name)
            self.client.remove_image(self.ceph_pool, name)
        except CephImageNotFound as error:
            raise volume_not_found(name, self.where) from error

    def activate(self, name: str) -> Volume:
        return self._volume(name, self.physical_size(name))

    def device_of(self, name: str) -> Path | None:
        """QEMU opens the image itself, through librbd: no host path."""
        return None

    def list(self) -> builtins.list[str]:
        return sorted(entry.name for entry in self.client.list_images(self.ceph_pool)
                      if not entry.name.startswith(PROBE_PREFIX))

    def used_bytes(self) -> int:
        return sum(entry.size_bytes for entry in self.client.list_images(self.ceph_pool)
                   if not entry.name.startswith(PROBE_PREFIX))
