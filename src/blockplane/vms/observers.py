"""The services told about every managed disk that comes or goes, in one explicit registry.

The throttle limits (a detached disk's generated group goes), the thin monitor (a thin disk is
tracked and armed) and the chain volumes (a disk's chain is recorded, and deleted with it) each
implement ``DiskObserver``. The agent builds one ``DiskObservers`` with all of them, in that
order, and hands it to the disk service and the disk recovery. Owns only the fan-out.
"""

from __future__ import annotations

from typing import Protocol

from blockplane.store.records import VolumeRecord


class DiskObserver(Protocol):
    def disk_attached(self, vm: str, target: str, volume: VolumeRecord) -> None: ...

    def disk_detached(self, vm: str, target: str) -> None: ...


class DiskObservers:
    def __init__(self, *observers: DiskObserver) -> None:
        self._observers = observers

    def attached(self, vm: str, target: str, volume: VolumeRecord) -> None:
        for observer in self._observers:
            observer.disk_attached(vm, target, volume)

    def detached(self, vm: str, target: str) -> None:
        for observer in self._observers:
            observer.disk_detached(vm, target)
