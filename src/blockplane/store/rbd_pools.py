"""The ``rbd_pools`` table: how each rbd pool reaches its Ceph cluster.

Plain data access, no policy. A pool's row in ``pools`` and its row here are written in one
transaction (and the second goes with the first on delete). No key is stored: the cephx key is
in the user's keyring file and in a libvirt secret.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.errors import Conflict
from blockplane.model.ceph import Monitor
from blockplane.store.database import Database, Row
from blockplane.store.records import PoolRecord


@dataclass(frozen=True)
class RbdPoolRecord:
    """``ceph_pool``: the RADOS pool; ``secret_uuid``: the libvirt secret holding the key."""

    name: str
    conf: Path
    user: str
    keyring: Path
    ceph_pool: str
    fsid: str
    secret_uuid: str
    monitors: tuple[Monitor, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ceph_conf": str(self.conf),
            "ceph_user": self.user,
            "ceph_keyring": str(self.keyring),
            "rbd_pool": self.ceph_pool,
            "fsid": self.fsid,
            "secret_uuid": self.secret_uuid,
            "monitors": [monitor.to_json() for monitor in self.monitors],
        }


class RbdPoolStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def add(self, pool: PoolRecord, rbd: RbdPoolRecord) -> None:
        monitors = json.dumps([[monitor.host, monitor.port] for monitor in rbd.monitors])
        try:
            with self._db.transaction() as connection:
                connection.execute(
                    "INSERT INTO pools VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (pool.name, pool.type, pool.path, pool.capacity_bytes, pool.chunk_bytes,
                     pool.utilization_pct, time.time()),
                )
                connection.execute(
                    "INSERT INTO rbd_pools VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rbd.name, str(rbd.conf), rbd.user, str(rbd.keyring), rbd.ceph_pool,
                     rbd.fsid, rbd.secret_uuid, monitors),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"a pool named {pool.name!r} already exists",
                           code="pool.exists") from None

    def get(self, name: str) -> RbdPoolRecord | None:
        row = self._db.query_one("SELECT * FROM rbd_pools WHERE name = ?", (name,))
        return None if row is None else _record(row)

    def all(self) -> list[RbdPoolRecord]:
        return [_record(row) for row in self._db.query("SELECT * FROM rbd_pools ORDER BY name")]

    def using_secret(self, secret_uuid: str) -> list[str]:
        rows = self._db.query("SELECT name FROM rbd_pools WHERE secret_uuid = ?", (secret_uuid,))
        return [str(row["name"]) for row in rows]


def _record(row: Row) -> RbdPoolRecord:
    monitors = tuple(Monitor(str(host), None if port is None else int(port))
                     for host, port in json.loads(row["monitors_json"]))
    return RbdPoolRecord(
        name=row["name"],
        conf=Path(row["conf"]),
        user=row["user"],
        keyring=Path(row["keyring"]),
        ceph_pool=row["ceph_pool"],
        fsid=row["fsid"],
        secret_uuid=row["secret_uuid"],
        monitors=monitors,
    )
