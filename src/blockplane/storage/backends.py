"""The backend of a pool record: the one place pool records meet thin/ backends."""

from __future__ import annotations

from blockplane.store.records import PoolRecord
from blockplane.thin.backend import VolumeBackend
from blockplane.thin.backends import open_backend
from blockplane.thin.capacity import PoolCapacity

__all__ = ["VolumeBackend", "make_backend"]


def make_backend(record: PoolRecord) -> VolumeBackend:
    return open_backend(record.type, record.path, capacity=PoolCapacity(record.capacity_bytes))
