"""Rows of the chain tables: the volumes of chain elements, and blockplane's snapshot records.

``chain_volumes`` names every volume blockplane put into a disk's backing chain (the disk's
first volume, snapshot overlays, copy destinations) with its state: ``creating`` (made, not yet
in the chain), ``in_chain``, or ``invalidated`` (dropped from the chain, to be deleted once
nothing references it). ``disks`` rows always name the chain's active top (``set_disk_top``).
Plain data access: no policy, no libvirt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from blockplane.store.database import Database, Row

VolumeState = str  # "creating" | "in_chain" | "invalidated"


@dataclass(frozen=True)
class ChainVolumeRecord:
    pool: str
    volume: str
    vm: str
    target: str
    path: str
    state: VolumeState
    origin: str


@dataclass(frozen=True)
class SnapshotRecord:
    """``disks``: per disk ``{target, pool, volume, path, backing_path, backing_format}``."""

    vm: str
    name: str
    state: str
    quiesced: bool
    disks: list[dict[str, Any]]
    created_at: float


class ChainRecords:
    def __init__(self, database: Database) -> None:
        self._db = database

    # chain volumes
    def add_volume(self, record: ChainVolumeRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO chain_volumes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record.pool, record.volume, record.vm, record.target, record.path, record.state,
             record.origin, time.time()),
        )

    def set_volume_state(self, pool: str, volume: str, state: VolumeState) -> None:
        self._db.execute(
            "UPDATE chain_volumes SET state = ? WHERE pool = ? AND volume = ?",
            (state, pool, volume),
        )

    def forget_volume(self, pool: str, volume: str) -> None:
        self._db.execute(
            "DELETE FROM chain_volumes WHERE pool = ? AND volume = ?", (pool, volume)
        )

    def volumes(self, vm: str | None = None, target: str | None = None,
                state: VolumeState | None = None) -> list[ChainVolumeRecord]:
        sql = "SELECT * FROM chain_volumes WHERE 1 = 1"
        parameters: list[Any] = []
        for column, value in (("vm", vm), ("target", target), ("state", state)):
            if value is not None:
                sql += f" AND {column} = ?"
                parameters.append(value)
        rows = self._db.query(sql + " ORDER BY created_at", parameters)
        return [_volume(row) for row in rows]

    def volume_at(self, path: str) -> ChainVolumeRecord | None:
        row = self._db.query_one("SELECT * FROM chain_volumes WHERE path = ?", (path,))
        return _volume(row) if row else None

    def set_disk_top(self, vm: str, target: str, pool: str, volume: str) -> None:
        """Point the disk's record at the volume now on top of its chain."""
        self._db.execute(
            "UPDATE disks SET pool = ?, volume = ? WHERE vm = ? AND target = ?",
            (pool, volume, vm, target),
        )

    # snapshots
    def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO chain_snapshots VALUES (?, ?, ?, ?, ?, ?)",
            (snapshot.vm, snapshot.name, snapshot.state, int(snapshot.quiesced),
             json.dumps(snapshot.disks, sort_keys=True), snapshot.created_at),
        )

    def set_snapshot_state(self, vm: str, name: str, state: str) -> None:
        self._db.execute(
            "UPDATE chain_snapshots SET state = ? WHERE vm = ? AND name = ?", (state, vm, name)
        )

    def delete_snapshot(self, vm: str, name: str) -> None:
        self._db.execute("DELETE FROM chain_snapshots WHERE vm = ? AND name = ?", (vm, name))

    def snapshot(self, vm: str, name: str) -> SnapshotRecord | None:
        row = self._db.query_one(
            "SELECT * FROM chain_snapshots WHERE vm = ? AND name = ?", (vm, name)
        )
        return _snapshot(row) if row else None

    def snapshots(self, vm: str | None = None, state: str | None = None) -> list[SnapshotRecord]:
        sql = "SELECT * FROM chain_snapshots WHERE 1 = 1"
        parameters: list[Any] = []
        for column, value in (("vm", vm), ("state", state)):
            if value is not None:
                sql += f" AND {column} = ?"
                parameters.append(value)
        rows = self._db.query(sql + " ORDER BY created_at", parameters)
        return [_snapshot(row) for row in rows]


def _volume(row: Row) -> ChainVolumeRecord:
    return ChainVolumeRecord(row["pool"], row["volume"], row["vm"], row["target"], row["path"],
                             row["state"], row["origin"])


def _snapshot(row: Row) -> SnapshotRecord:
    return SnapshotRecord(row["vm"], row["name"], row["state"], bool(row["quiesced"]),
                          json.loads(row["disks_json"]), row["created_at"])
