"""The ``peers`` table: each peer's name, URL, token and pinned CA.

Plain data access, no policy. The token is kept only here (the state store is 0600) and is
left out of every record's ``repr``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from blockplane.errors import Conflict
from blockplane.store.database import Database, Row


@dataclass(frozen=True)
class PeerRecord:
    name: str
    api: str
    token: str = field(repr=False)
    ca_pem: str | None = field(repr=False)
    added_at: float
    hostname: str | None
    version: str | None


class PeerStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def all(self) -> list[PeerRecord]:
        return [_record(row) for row in self._db.query("SELECT * FROM peers ORDER BY name")]

    def get(self, name: str) -> PeerRecord | None:
        row = self._db.query_one("SELECT * FROM peers WHERE name = ?", (name,))
        return None if row is None else _record(row)

    def add(
        self,
        name: str,
        api: str,
        token: str,
        ca_pem: str | None,
        hostname: str | None,
        version: str | None,
    ) -> PeerRecord:
        record = PeerRecord(name, api, token, ca_pem, time.time(), hostname, version)
        try:
            self._db.execute(
                "INSERT INTO peers (name, api, token, ca_pem, added_at, hostname, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, api, token, ca_pem, record.added_at, hostname, version),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"a peer named {name!r} already exists", code="peer.exists") from None
        return record

    def remove(self, name: str) -> bool:
        with self._db.transaction() as connection:
            cursor = connection.execute("DELETE FROM peers WHERE name = ?", (name,))
            return cursor.rowcount > 0


def _record(row: Row) -> PeerRecord:
    return PeerRecord(
        name=row["name"],
        api=row["api"],
        token=row["token"],
        ca_pem=row["ca_pem"],
        added_at=row["added_at"],
        hostname=row["hostname"],
        version=row["version"],
    )
