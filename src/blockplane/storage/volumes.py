"""Volumes: a backend allocation plus the image format written on it.

Owns the volume records and the create/delete sequence (allocate, format, record; undo in
reverse on failure). Sizes and policies arrive decided.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from blockplane.errors import Conflict, InvalidInput
from blockplane.storage.images import create_qcow2
from blockplane.storage.names import confine, validate_volume_name
from blockplane.storage.pools import PoolService
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.store.events import EventPublisher
from blockplane.store.records import PoolRecord, Records, VolumeRecord

FORMATS = ("qcow2", "raw")
MAX_VIRTUAL_BYTES = 64 * 1024**4


class VolumeService:
    def __init__(self, pools: PoolService, records: Records, events: EventPublisher) -> None:
        self._pools = pools
        self._records = records
        self._events = events

    def validate(
        self, pool: PoolRecord, name: str, virtual_bytes: int, image_format: str, thin: bool,
        initial_bytes: int | None = None,
    ) -> None:
        if pool.type == "rbd":
            _check_rbd_volume(pool, image_format, thin)
        if image_format not in FORMATS:
            raise InvalidInput(
                f"unknown format {image_format!r}: use qcow2 or raw", code="volume.invalid"
            )
        if not 0 < virtual_bytes <= MAX_VIRTUAL_BYTES:
            raise InvalidInput(
                f"size must be between 1 byte and 64 TiB, got {virtual_bytes}",
                code="size.invalid",
            )
        if thin and image_format != "qcow2":
            raise InvalidInput("a thin volume must be qcow2", code="volume.invalid")
        if thin and pool.type == "dir":
            raise InvalidInput(
                f"pool {pool.name} is a dir pool; thin volumes need a growable block pool "
                "(loop or lvm)",
                code="volume.invalid",
            )
        if pool.type == "rbd":
            validate_volume_name(name)
        elif pool.type != "lvm":
            confine(Path(pool.path), name)
        if self._records.volume(pool.name, name) is not None:
            raise Conflict(
                f"volume {name} already exists in pool {pool.name}", code="volume.exists"
            )
        needed = self.initial_physical(pool, virtual_bytes, image_format, thin, initial_bytes)
        self.check_capacity(pool, needed)

    def initial_physical(
        self, pool: PoolRecord, virtual_bytes: int, image_format: str, thin: bool,
        initial_bytes: int | None = None,
    ) -> int:
        """``initial_bytes``: a thin volume's starting size decided by the caller (a volume
        filled by copying starts at ``storage.fill_size``); by default one chunk."""
        if pool.type in ("dir", "rbd"):
            return virtual_bytes
        if image_format == "raw":
            return virtual_bytes
        full = qcow2_max_physical(virtual_bytes)
        if not thin:
            return full
        return min(pool.chunk_bytes if initial_bytes is None else initial_bytes, full)

    def check_capacity(self, pool: PoolRecord, extra_bytes: int) -> None:
        if pool.capacity_bytes is None:
            return
        used = self._pools.used_bytes(pool.name)
        if used + extra_bytes > pool.capacity_bytes:
            raise Conflict(
                f"pool {pool.name} has {pool.capacity_bytes - used} bytes left of its "
                f"{pool.capacity_bytes}-byte limit; {extra_bytes} more are needed",
                code="pool.full",
            )

    def create(
        self, pool: PoolRecord, name: str, virtual_bytes: int, image_format: str, thin: bool,
        initial_bytes: int | None = None,
    ) -> VolumeRecord:
        self.validate(pool, name, virtual_bytes, image_format, thin, initial_bytes)
        physical = self.initial_physical(pool, virtual_bytes, image_format, thin, initial_bytes)
        backend = self._pools.backend(pool)
        volume = backend.create(name, physical)
        try:
            if image_format == "qcow2":
                create_qcow2(Path(volume.path), virtual_bytes)
            record = VolumeRecord(
                pool.name,
                name,
                str(volume.path),
                image_format,
                virtual_bytes,
                volume.physical_bytes,
                thin,
            )
            self._records.add_volume(record)
        except BaseException:
            with contextlib.suppress(Exception):
                backend.delete(name)
            raise
        self._events.publish(
            "volume.created", None, pool=pool.name, volume=name, physical_bytes=physical
        )
        return record

    def delete(self, pool_name: str, name: str) -> None:
        pool = self._pools.get(pool_name)
        self._pools.backend(pool).delete(name)
        self._records.delete_volume(pool_name, name)
        self._events.publish("volume.deleted", None, pool=pool_name, volume=name)

    def is_block(self, pool: PoolRecord) -> bool:
        return pool.type in ("loop", "lvm")

    @staticmethod
    def default_format(pool: PoolRecord) -> str:
        """The format a request that names none gets: raw on rbd, qcow2 elsewhere."""
        return "raw" if pool.type == "rbd" else "qcow2"


def _check_rbd_volume(pool: PoolRecord, image_format: str, thin: bool) -> None:
    """RBD images are raw and thin by nature: qcow2 on them, or a thin monitor, is refused."""
    if image_format != "raw":
        raise InvalidInput(
            f"pool {pool.name} is an rbd pool: its volumes are raw RBD images (snapshots, "
            "clones and thin provisioning are Ceph's); use --format raw or leave it out",
            code="volume.invalid")
    if thin:
        raise InvalidInput(
            f"pool {pool.name} is an rbd pool: RBD images are thin by nature (objects exist "
            "once written), so there is no write-threshold monitor to ask for; drop --thin",
            code="volume.invalid")
