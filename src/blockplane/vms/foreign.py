"""What blockplane must leave alone in the domains it adopted: foreign disks and IOThreads.

Owns the one check every writing operation asks before it acts (``refuse``, code
``disk.foreign``): a disk of an adopted domain that lies outside every pool, and an image of a
managed chain that does (a shared or platform base), is never written, deleted or extended; and
the IOThreads an adopted domain had, which new attaches plan around (``reserved_iothreads``).
Must not change anything; reads ``adopted_vms`` only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from blockplane.errors import Conflict
from blockplane.store.adoption import AdoptionRecords


class AdoptedDisks(Protocol):
    def reserved_iothreads(self, vm: str) -> tuple[int, ...]: ...

    def foreign_reason(self, vm: str, target: str) -> str | None: ...

    def refuse(self, vm: str, target: str | None, action: str,
               paths: Sequence[str] = ()) -> None: ...


class NothingAdopted:
    """For a service built without adoption (unit tests): nothing is foreign or reserved."""

    def reserved_iothreads(self, vm: str) -> tuple[int, ...]:
        return ()

    def foreign_reason(self, vm: str, target: str) -> str | None:
        return None

    def refuse(self, vm: str, target: str | None, action: str,
               paths: Sequence[str] = ()) -> None:
        return None


class ForeignDisks:
    def __init__(self, adoptions: AdoptionRecords) -> None:
        self._adoptions = adoptions

    def reserved_iothreads(self, vm: str) -> tuple[int, ...]:
        record = self._adoptions.get(vm)
        return record.reserved_iothreads if record is not None else ()

    def foreign_reason(self, vm: str, target: str) -> str | None:
        """Why ``vm``'s disk ``target`` is foreign, or None if it is not."""
        record = self._adoptions.get(vm)
        disk = record.foreign_disk(target) if record is not None else None
        return str(disk.get("reason") or "foreign") if disk is not None else None

    def refuse(self, vm: str, target: str | None, action: str,
               paths: Sequence[str] = ()) -> None:
        """Raise ``disk.foreign`` if ``action`` would write a foreign disk or image of ``vm``."""
        record = self._adoptions.get(vm)
        if record is None:
            return
        disk = record.foreign_disk(target) if target is not None else None
        if disk is not None:
            raise Conflict(
                f"{vm}/{target} is a foreign disk ({disk.get('path') or disk.get('network')}:"
                f" {disk.get('reason')}); blockplane never writes, deletes or extends it, so "
                f"{action} is refused",
                code="disk.foreign", vm=vm, target=target,
            )
        foreign = {os.path.normpath(path) for path in record.foreign_paths}
        for path in paths:
            if os.path.normpath(path) in foreign:
                raise Conflict(
                    f"{path} in the chain of {vm}/{target} lies outside every pool (a foreign"
                    f" image); blockplane never writes it, so {action} is refused",
                    code="disk.foreign", vm=vm, target=target, path=path,
                )
