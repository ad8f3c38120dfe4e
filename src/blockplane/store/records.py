"""Rows of the core tables (pools, VMs, volumes, disks, events) as typed records.

Plain data access: no policy, no libvirt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.store.database import Database, Row


@dataclass(frozen=True)
class PoolRecord:
    name: str
    type: str
    path: str
    capacity_bytes: int | None
    chunk_bytes: int
    utilization_pct: int


@dataclass(frozen=True)
class VMRecord:
    name: str
    uuid: str
    vcpus: int
    memory_bytes: int
    guest: str


@dataclass(frozen=True)
class VolumeRecord:
    pool: str
    name: str
    path: str
    format: str
    virtual_bytes: int
    physical_bytes: int
    thin: bool


@dataclass(frozen=True)
class DiskRecord:
    vm: str
    target: str
    pool: str
    volume: str
    bus: str
    plan: dict[str, Any]


@dataclass(frozen=True)
class EventRecord:
    id: int
    at: float
    type: str
    vm: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as ``/v1/events`` sends it: its fields, and its data beside them."""
        return {"id": self.id, "at": self.at, "type": self.type, "vm": self.vm, **self.data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventRecord:
        known = ("id", "at", "type", "vm")
        return cls(int(data["id"]), float(data["at"]), str(data["type"]),
                   None if data.get("vm") is None else str(data["vm"]),
                   {key: value for key, value in data.items() if key not in known})


class Records:
    def __init__(self, database: Database) -> None:
        self.db = database

    # pools
    def add_pool(self, pool: PoolRecord) -> None:
        self.db.execute(
            "INSERT INTO pools VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                pool.name,
                pool.type,
                pool.path,
                pool.capacity_bytes,
                pool.chunk_bytes,
                pool.utilization_pct,
                time.time(),
            ),
        )

    def pool(self, name: str) -> PoolRecord | None:
        row = self.db.query_one("SELECT * FROM pools WHERE name = ?", (name,))
        return _pool(row) if row else None

    def pools(self) -> list[PoolRecord]:
        return [_pool(row) for row in self.db.query("SELECT * FROM pools ORDER BY name")]

    def delete_pool(self, name: str) -> None:
        self.db.execute("DELETE FROM pools WHERE name = ?", (name,))

    def set_pool_capacity(self, name: str, capacity_bytes: int | None) -> None:
        self.db.execute("UPDATE pools SET capacity_bytes = ? WHERE name = ?",
                        (capacity_bytes, name))

    # VMs
    def add_vm(self, vm: VMRecord) -> None:
        self.db.execute(
            "INSERT INTO vms VALUES (?, ?, ?, ?, ?, ?)",
            (vm.name, vm.uuid, vm.vcpus, vm.memory_bytes, vm.guest, time.time()),
        )

    def vm(self, name: str) -> VMRecord | None:
        row = self.db.query_one("SELECT * FROM vms WHERE name = ?", (name,))
        return _vm(row) if row else None

    def vms(self) -> list[VMRecord]:
        return [_vm(row) for row in self.db.query("SELECT * FROM vms ORDER BY name")]

    def delete_vm(self, name: str) -> None:
        self.db.execute("DELETE FROM vms WHERE name = ?", (name,))

    # volumes
    def add_volume(self, volume: VolumeRecord) -> None:
        self.db.execute(
            "INSERT INTO volumes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                volume.pool,
                volume.name,
                volume.path,
                volume.format,
                volume.virtual_bytes,
                volume.physical_bytes,
                int(volume.thin),
                time.time(),
            ),
        )

    def volume(self, pool: str, name: str) -> VolumeRecord | None:
        row = self.db.query_one("SELECT * FROM volumes WHERE pool = ? AND name = ?", (pool, name))
        return _volume(row) if row else None

    def volumes(self, pool: str | None = None) -> list[VolumeRecord]:
        if pool is None:
            rows = self.db.query("SELECT * FROM volumes ORDER BY pool, name")
        else:
            rows = self.db.query("SELECT * FROM volumes WHERE pool = ? ORDER BY name", (pool,))
        return [_volume(row) for row in rows]

    def set_volume_physical(self, pool: str, name: str, physical_bytes: int) -> None:
        self.db.execute(
            "UPDATE volumes SET physical_bytes = ? WHERE pool = ? AND name = ?",
            (physical_bytes, pool, name),
        )

    def delete_volume(self, pool: str, name: str) -> None:
        self.db.execute("DELETE FROM volumes WHERE pool = ? AND name = ?", (pool, name))

    # disks
    def add_disk(self, disk: DiskRecord) -> None:
        self.db.execute(
            "INSERT INTO disks VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                disk.vm,
                disk.target,
                disk.pool,
                disk.volume,
                disk.bus,
                json.dumps(disk.plan, sort_keys=True),
                time.time(),
            ),
        )

    def disks(self, vm: str) -> list[DiskRecord]:
        rows = self.db.query("SELECT * FROM disks WHERE vm = ? ORDER BY target", (vm,))
        return [_disk(row) for row in rows]

    def disk(self, vm: str, target: str) -> DiskRecord | None:
        row = self.db.query_one("SELECT * FROM disks WHERE vm = ? AND target = ?", (vm, target))
        return _disk(row) if row else None

    def disks_on_volume(self, pool: str, volume: str) -> list[DiskRecord]:
        rows = self.db.query("SELECT * FROM disks WHERE pool = ? AND volume = ?", (pool, volume))
        return [_disk(row) for row in rows]

    def delete_disk(self, vm: str, target: str) -> None:
        self.db.execute("DELETE FROM disks WHERE vm = ? AND target = ?", (vm, target))

    # events
    def add_event(self, type_: str, vm: str | None, data: dict[str, Any]) -> EventRecord:
        at = time.time()
        with self.db.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO events (at, type, vm, data_json) VALUES (?, ?, ?, ?)",
                (at, type_, vm, json.dumps(data, sort_keys=True, default=str)),
            )
            event_id = int(cursor.lastrowid or 0)
        return EventRecord(event_id, at, type_, vm, data)

    def events(
        self, *, after: int = 0, vm: str | None = None, type_: str | None = None, limit: int = 1000
    ) -> list[EventRecord]:
        sql = "SELECT * FROM events WHERE id > ?"
        parameters: list[Any] = [after]
        if vm is not None:
            sql += " AND vm = ?"
            parameters.append(vm)
        if type_ is not None:
            sql += " AND type = ?"
            parameters.append(type_)
        sql += " ORDER BY id DESC LIMIT ?"
        parameters.append(limit)
        rows = self.db.query(sql, parameters)
        return [
            EventRecord(row["id"], row["at"], row["type"], row["vm"], json.loads(row["data_json"]))
            for row in reversed(rows)
        ]


def _pool(row: Row) -> PoolRecord:
    return PoolRecord(
        row["name"],
        row["type"],
        row["path"],
        row["capacity_bytes"],
        row["chunk_bytes"],
        row["utilization_pct"],
    )


def _vm(row: Row) -> VMRecord:
    return VMRecord(row["name"], row["uuid"], row["vcpus"], row["memory_bytes"], row["guest"])


def _volume(row: Row) -> VolumeRecord:
    return VolumeRecord(
        row["pool"],
        row["name"],
        row["path"],
        row["format"],
        row["virtual_bytes"],
        row["physical_bytes"],
        bool(row["thin"]),
    )


def _disk(row: Row) -> DiskRecord:
    return DiskRecord(
        row["vm"],
        row["target"],
        row["pool"],
        row["volume"],
        row["bus"],
        json.loads(row["plan_json"]),
    )
