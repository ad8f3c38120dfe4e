"""Rows of ``adopted_vms``: what a domain had when blockplane took it under management.

The IOThreads it had (never used or removed by blockplane), its foreign disks and the foreign
images of its managed chains (never written), the report shown at adoption (throttle groups,
``<iotune>``, checkpoints, block jobs), and since when the domain is gone if someone undefined it.
Plain data access: no policy, no libvirt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from blockplane.store.database import Database, Row


@dataclass(frozen=True)
class AdoptionRecord:
    vm: str
    reserved_iothreads: tuple[int, ...]
    #: Per foreign disk: ``{target, path, device, reason, ...}`` as shown at adoption.
    foreign_disks: tuple[dict[str, Any], ...]
    foreign_paths: tuple[str, ...]
    report: dict[str, Any]
    gone_since: float | None = None
    adopted_at: float = 0.0

    def foreign_disk(self, target: str) -> dict[str, Any] | None:
        return next((disk for disk in self.foreign_disks if disk.get("target") == target), None)


class AdoptionRecords:
    def __init__(self, database: Database) -> None:
        self.db = database

    def add(self, record: AdoptionRecord) -> None:
        self.db.execute(
            "INSERT INTO adopted_vms VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.vm,
                json.dumps(list(record.reserved_iothreads)),
                json.dumps(list(record.foreign_disks), sort_keys=True),
                json.dumps(list(record.foreign_paths)),
                json.dumps(record.report, sort_keys=True),
                record.gone_since,
                record.adopted_at or time.time(),
            ),
        )

    def get(self, vm: str) -> AdoptionRecord | None:
        row = self.db.query_one("SELECT * FROM adopted_vms WHERE vm = ?", (vm,))
        return _record(row) if row else None

    def all(self) -> list[AdoptionRecord]:
        return [_record(row) for row in self.db.query("SELECT * FROM adopted_vms ORDER BY vm")]

    def set_gone(self, vm: str, since: float | None) -> None:
        self.db.execute("UPDATE adopted_vms SET gone_since = ? WHERE vm = ?", (since, vm))

    def delete(self, vm: str) -> None:
        self.db.execute("DELETE FROM adopted_vms WHERE vm = ?", (vm,))


def _record(row: Row) -> AdoptionRecord:
    return AdoptionRecord(
        vm=row["vm"],
        reserved_iothreads=tuple(json.loads(row["reserved_iothreads_json"])),
        foreign_disks=tuple(json.loads(row["foreign_disks_json"])),
        foreign_paths=tuple(json.loads(row["foreign_paths_json"])),
        report=json.loads(row["report_json"]),
        gone_since=row["gone_since"],
        adopted_at=row["adopted_at"],
    )
