"""Stored answers to mutating API requests that carried an ``Idempotency-Key``."""

from __future__ import annotations

import time
from dataclasses import dataclass

from blockplane.store.database import Database


@dataclass(frozen=True)
class StoredResponse:
    method: str
    path: str
    status: int
    body: bytes


class IdempotencyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def get(self, key: str) -> StoredResponse | None:
        row = self._db.query_one(
            "SELECT method, path, status, body FROM idempotency WHERE key = ?", (key,)
        )
        if row is None:
            return None
        return StoredResponse(row["method"], row["path"], row["status"], row["body"].encode())

    def put(self, key: str, response: StoredResponse) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
            (
                key,
                response.method,
                response.path,
                response.status,
                response.body.decode(errors="replace"),
                time.time(),
            ),
        )
