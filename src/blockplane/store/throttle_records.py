"""Rows of ``disk_qos``: what each disk asked for in I/O limits, and what it got.

The spec is kept so that capacity-scaled limits can be recomputed when the disk grows; the
libvirt XML stays the truth for what runs. Plain data access: no policy, no libvirt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from blockplane.store.database import Database, Row


@dataclass(frozen=True)
class DiskThrottleRecord:
    vm: str
    target: str
    #: ``filters`` or ``iotune`` (throttle.tiers.PlanMode; ``none`` is never stored).
    mode: str
    spec: dict[str, Any]
    chain: list[str]
    #: The size the per-disk limits were computed for.
    size_bytes: int
    per_disk: dict[str, int]


class ThrottleRecords:
    def __init__(self, database: Database) -> None:
        self.db = database

    def put_disk(self, record: DiskThrottleRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO disk_qos VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.vm,
                record.target,
                record.mode,
                json.dumps(record.spec, sort_keys=True),
                json.dumps(record.chain),
                record.size_bytes,
                json.dumps(record.per_disk, sort_keys=True),
                time.time(),
            ),
        )

    def disk(self, vm: str, target: str) -> DiskThrottleRecord | None:
        row = self.db.query_one(
            "SELECT * FROM disk_qos WHERE vm = ? AND target = ?", (vm, target)
        )
        return _record(row) if row else None

    def disks(self, vm: str | None = None) -> list[DiskThrottleRecord]:
        if vm is None:
            rows = self.db.query("SELECT * FROM disk_qos ORDER BY vm, target")
        else:
            rows = self.db.query("SELECT * FROM disk_qos WHERE vm = ? ORDER BY target", (vm,))
        return [_record(row) for row in rows]

    def delete_disk(self, vm: str, target: str) -> None:
        self.db.execute("DELETE FROM disk_qos WHERE vm = ? AND target = ?", (vm, target))


def _record(row: Row) -> DiskThrottleRecord:
    return DiskThrottleRecord(
        row["vm"],
        row["target"],
        row["mode"],
        json.loads(row["spec_json"]),
        json.loads(row["chain_json"]),
        row["size_bytes"],
        json.loads(row["per_disk_json"]),
    )
