"""What every pool backend (dir, loop, lvm) offers, and the errors they share.

Owns the ``Volume`` record, the ``VolumeBackend`` protocol and a per-pool lock registry. Must not
know any backend's commands or files; must not decide when or by how much to grow.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.sizes import format_size


@dataclass(frozen=True)
class Volume:
    """``path`` is what QEMU opens: a file (dir), ``/dev/loopN`` (loop) or ``/dev/VG/LV`` (lvm)."""

    name: str
    path: Path
    physical_bytes: int


class VolumeBackend(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def is_block(self) -> bool: ...

    @property
    def capacity(self) -> PoolCapacity: ...

    def create(self, name: str, size_bytes: int) -> Volume:
        """Make a new volume of at least ``size_bytes``; Conflict if it exists or would not fit."""
        ...

    def grow(self, name: str, new_physical_bytes: int) -> int:
        """Grow to at least ``new_physical_bytes``; return the size read back from the medium."""
        ...

    def physical_size(self, name: str) -> int: ...

    def delete(self, name: str) -> None: ...

    def activate(self, name: str) -> Volume:
        """Make an existing volume usable again (after a reboot or restart); idempotent."""
        ...

    def device_of(self, name: str) -> Path | None:
        """A second path QEMU may know the volume under (the loop device attached to its
        backing file), or None where the volume has only its own path; changes nothing."""
        ...

    def list(self) -> builtins.list[str]: ...

    def used_bytes(self) -> int:
        """Sum of the physical sizes of this pool's volumes (what capacity counts)."""
        ...


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def pool_lock(key: str) -> threading.Lock:
    """One lock per pool (by resolved root or VG), shared by every backend object in the process,
    so that a capacity check and the change it allows cannot interleave with another change."""
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def volume_not_found(name: str, where: str) -> NotFound:
    return NotFound(f"volume {name!r} does not exist in {where}", code="volume.not_found",
                    volume=name)


def volume_exists(name: str, where: str) -> Conflict:
    return Conflict(f"volume {name!r} already exists in {where}", code="volume.exists",
                    volume=name)


def refuse_shrink(name: str, current: int, requested: int) -> InvalidInput:
    return InvalidInput(
        f"volume {name!r} is {format_size(current)}; shrinking it to {format_size(requested)} "
        "would destroy data and is not supported",
        code="volume.shrink_refused",
        volume=name,
    )


def check_requested_size(size_bytes: int) -> None:
    if size_bytes <= 0:
        raise InvalidInput(f"volume size must be positive, got {size_bytes}", code="size.invalid")


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment
