"""Intents of multi-step changes, written before the first step and removed after the last.

An intent still here when the agent starts means the agent died half-way; the recovery code
reads it and either completes or rolls back the change (``vms/recovery.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from blockplane.store.database import Database


@dataclass(frozen=True)
class PendingOperation:
    id: int
    kind: str
    vm: str
    target: str
    data: dict[str, Any]


class PendingOperations:
    def __init__(self, database: Database) -> None:
        self._db = database

    def begin(self, kind: str, vm: str, target: str, data: dict[str, Any]) -> int:
        with self._db.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO pending_ops (kind, vm, target, data_json, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (kind, vm, target, json.dumps(data, sort_keys=True), time.time()),
            )
            return int(cursor.lastrowid or 0)

    def update(self, operation_id: int, data: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE pending_ops SET data_json = ? WHERE id = ?",
            (json.dumps(data, sort_keys=True), operation_id),
        )

    def finish(self, operation_id: int) -> None:
        self._db.execute("DELETE FROM pending_ops WHERE id = ?", (operation_id,))

    def all(self) -> list[PendingOperation]:
        rows = self._db.query("SELECT * FROM pending_ops ORDER BY id")
        return [
            PendingOperation(
                row["id"], row["kind"], row["vm"], row["target"], json.loads(row["data_json"])
            )
            for row in rows
        ]
