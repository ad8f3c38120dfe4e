"""The narrow view of the thin monitor that chain operations use, when one is wired in.

``thin.monitor.ThinMonitor`` satisfies it structurally; without it (no thin support) the chain
services pass None and skip the hooks. Owns no behaviour.
"""

from __future__ import annotations

from typing import Any, Protocol

from blockplane.store.records import VolumeRecord


class ThinHook(Protocol):
    def track(self, vm: str, target: str, record: VolumeRecord) -> Any:
        """Monitor ``record`` as a volume of ``vm``'s disk ``target`` (arms it if running)."""
        ...

    def forget(self, key: tuple[str, str]) -> None:
        """Stop monitoring the volume ``(pool, volume)``."""
        ...

    def pre_extend(self, vm: str, libvirt_name: str, needed_bytes: int) -> int:
        """Grow the thin commit base (libvirt's ``vda[N]``) to hold ``needed_bytes`` first."""
        ...

    def watch_mirror(self, vm: str, key: tuple[str, str], libvirt_index: int | None) -> Any:
        """Arm the tracked copy destination ``key`` on the mirror's chain index (``vda[N]``)."""
        ...

    def crossed(self, key: tuple[str, str]) -> bool:
        """A write threshold of the tracked ``key`` fired since it was tracked."""
        ...

    def refill(self, key: tuple[str, str], required_bytes: int) -> int:
        """Grow the tracked ``key`` to hold ``required_bytes`` and disarm it, before a copy
        into it starts again from the beginning; Conflict ``pool.full`` if it cannot grow."""
        ...
