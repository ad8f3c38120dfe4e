"""What the storage services answer: pools and volumes as users see them (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.store.records import PoolRecord, VolumeRecord


@dataclass(frozen=True, kw_only=True)
class PoolView(PoolRecord):
    """A pool as recorded, with how many volumes it holds and their physical bytes."""

    volumes: int
    used_bytes: int


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
