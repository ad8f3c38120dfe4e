"""Choosing a pool backend by its type: the one entry point the pool service needs.

Owns the mapping from a pool's type and location (or its record) to a ``VolumeBackend``. Must not
hold state or validate pool names (``storage.names.validate_name`` does), and must not create
pools on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from blockplane.errors import InvalidInput
from blockplane.storage.backends.base import Volume, VolumeBackend
from blockplane.storage.backends.dir import DirBackend
from blockplane.storage.backends.loop import LoopBackend
from blockplane.storage.backends.lvm import LvmBackend
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.commands import CommandRunner
from blockplane.store.records import PoolRecord

__all__ = ["POOL_TYPES", "DirBackend", "LoopBackend", "LvmBackend", "PoolCapacity", "PoolType",
           "Volume", "VolumeBackend", "backend_of", "open_backend"]

PoolType = Literal["dir", "loop", "lvm"]
POOL_TYPES: tuple[str, ...] = get_args(PoolType)


def open_backend(
    pool_type: str,
    location: str | Path,
    *,
    capacity: PoolCapacity | None = None,
    runner: CommandRunner | None = None,
    direct_io: bool = False,
) -> VolumeBackend:
    """``location`` is the pool directory for dir and loop, the volume group (``VG`` or
    ``/dev/VG``) for lvm."""
    if pool_type == "dir":
        return DirBackend(Path(location), capacity=capacity)
    if pool_type == "loop":
        return LoopBackend(Path(location), capacity=capacity, runner=runner, direct_io=direct_io)
    if pool_type == "lvm":
        group = str(location).removeprefix("/dev/").strip("/")
        return LvmBackend(group, capacity=capacity, runner=runner)
    raise InvalidInput(
        f"pool type {pool_type!r} is not known: use one of {', '.join(POOL_TYPES)}",
        code="pool.type_invalid",
    )


def backend_of(record: PoolRecord) -> VolumeBackend:
    """The backend of a pool record, with the record's capacity limit."""
    return open_backend(record.type, record.path, capacity=PoolCapacity(record.capacity_bytes))
