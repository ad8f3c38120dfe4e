"""The monitored thin volumes in memory, mirrored to SQLite, with one lock per volume.

Owns the in-memory map, the per-volume locks that serialize every action on a volume (event,
ENOSPC and reconcile alike), and "changed since" stamps that let reconcile skip a volume an
event handler acted on after the stats were read. Must not decide or perform any action.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from blockplane.thin.monitor_store import MonitoredVolume, MonitorStore, VolumeKey


class VolumeRegistry:
    def __init__(self, store: MonitorStore) -> None:
        self._store = store
        self._guard = threading.Lock()
        self._volumes: dict[VolumeKey, MonitoredVolume] = {v.key: v for v in store.load()}
        self._locks: dict[VolumeKey, threading.Lock] = {}
        self._changed_at: dict[VolumeKey, float] = {}

    def lock(self, key: VolumeKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: VolumeKey) -> MonitoredVolume | None:
        with self._guard:
            return self._volumes.get(key)

    def all(self, vm: str | None = None) -> list[MonitoredVolume]:
        with self._guard:
            volumes = list(self._volumes.values())
        chosen = [volume for volume in volumes if vm is None or volume.vm == vm]
        return sorted(chosen, key=lambda v: (v.vm, v.target, v.libvirt_index or 0, v.volume))

    def find(
        self, vm: str, target: str, path: str, libvirt_index: int | None = None
    ) -> MonitoredVolume | None:
        """The volume of ``vm``'s disk ``target`` at ``path`` (or at ``libvirt_index``)."""
        candidates = [v for v in self.all(vm) if v.target == target]
        for volume in candidates:
            if path and volume.path == path:
                return volume
        for volume in candidates:
            if libvirt_index is not None and volume.libvirt_index == libvirt_index:
                return volume
        return None

    def save(self, volume: MonitoredVolume, **changes: Any) -> MonitoredVolume:
        """Persist ``volume`` with ``changes`` applied, then make it the current record."""
        updated = replace(volume, **changes) if changes else volume
        self._store.save(updated)
        with self._guard:
            self._volumes[updated.key] = updated
            self._changed_at[updated.key] = time.monotonic()
        return updated

    def changed_since(self, key: VolumeKey, moment: float) -> bool:
        with self._guard:
            return self._changed_at.get(key, float("-inf")) > moment

    def forget(self, key: VolumeKey) -> MonitoredVolume | None:
        self._store.delete(key)
        with self._guard:
            self._changed_at.pop(key, None)
            return self._volumes.pop(key, None)
