"""The persisted record of each monitored thin volume (table ``thin_monitor``).

Owns ``MonitoredVolume`` and its SQL. A record is written before the action it describes (an
extend records ``pending_physical`` before the volume grows; an arm records the threshold
before QEMU gets it), so a restart can tell what was done from what was only meant. Must not
decide anything and must not talk to libvirt or the pool backends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from blockplane.store.database import Database, Row
from blockplane.thin.monitor_state import MonitorState

VolumeKey = tuple[str, str]
"""(pool, volume): a thin volume is monitored once, wherever it sits in a chain."""


@dataclass(frozen=True)
class MonitoredVolume:
    """What the monitor knows of one volume.

    ``threshold``: the value we armed last (QEMU forgets it when it fires or the VM stops).
    ``pending_physical``: the size an extend in flight is growing the volume to.
    ``refused``/``paused``: an unresolved pool.full refusal / ENOSPC pause (each counted once).
    ``last_extended_at``: wall-clock time the last extend finished growing the volume.
    """

    vm: str
    target: str
    pool: str
    volume: str
    path: str
    virtual_bytes: int
    state: MonitorState = MonitorState.UNSET
    libvirt_index: int | None = None
    threshold: int | None = None
    physical: int = 0
    pending_physical: int | None = None
    extends: int = 0
    pauses: int = 0
    refusals: int = 0
    refused: bool = False
    paused: bool = False
    last_extend_latency_s: float | None = None
    last_extended_at: float | None = None

    @property
    def key(self) -> VolumeKey:
        return (self.pool, self.volume)


_COLUMNS = (
    "pool, volume, vm, target, path, virtual_bytes, state, chain_index, threshold_bytes, "
    "physical_bytes, pending_physical_bytes, extends, pauses, refusals, refused, paused, "
    "last_extend_latency_s, last_extended_at, updated_at"
)


class MonitorStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def load(self) -> list[MonitoredVolume]:
        return [_volume(row) for row in
                self._db.query(f"SELECT {_COLUMNS} FROM thin_monitor ORDER BY vm, target")]

    def save(self, volume: MonitoredVolume) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO thin_monitor ({_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                volume.pool,
                volume.volume,
                volume.vm,
                volume.target,
                volume.path,
                volume.virtual_bytes,
                volume.state.value,
                volume.libvirt_index,
                volume.threshold,
                volume.physical,
                volume.pending_physical,
                volume.extends,
                volume.pauses,
                volume.refusals,
                int(volume.refused),
                int(volume.paused),
                volume.last_extend_latency_s,
                volume.last_extended_at,
                time.time(),
            ),
        )

    def delete(self, key: VolumeKey) -> None:
        self._db.execute("DELETE FROM thin_monitor WHERE pool = ? AND volume = ?", key)


def _volume(row: Row) -> MonitoredVolume:
    return MonitoredVolume(
        vm=row["vm"],
        target=row["target"],
        pool=row["pool"],
        volume=row["volume"],
        path=row["path"],
        virtual_bytes=row["virtual_bytes"],
        state=MonitorState(row["state"]),
        libvirt_index=row["chain_index"],
        threshold=row["threshold_bytes"],
        physical=row["physical_bytes"],
        pending_physical=row["pending_physical_bytes"],
        extends=row["extends"],
        pauses=row["pauses"],
        refusals=row["refusals"],
        refused=bool(row["refused"]),
        paused=bool(row["paused"]),
        last_extend_latency_s=row["last_extend_latency_s"],
        last_extended_at=row["last_extended_at"],
    )
