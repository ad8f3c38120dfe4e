"""The SQLite state store: one connection, one writer, schema migrations.

Owns the connection and transactions. It knows no feature: the per-feature repositories
(``store/records.py`` and friends) hold the SQL. Writes that fail because the disk is full
become ``StateUnavailable`` so callers refuse the mutation instead of half-writing it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from blockplane.errors import StateUnavailable
from blockplane.store.migrations import MIGRATIONS

Row = sqlite3.Row


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        self._connection = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        if not existed:
            os.chmod(path, 0o600)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()
        self._depth = 0
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @property
    def schema_version(self) -> int:
        row = self._connection.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self.transaction() as connection:
            current = int(connection.execute("PRAGMA user_version").fetchone()[0])
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a transaction opened inside it (same thread) joins it, so that
        several repositories' writes can be committed together (or not at all)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._connection
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                yield self._connection
                self._connection.execute("COMMIT")
            except sqlite3.OperationalError as error:
                self._rollback()
                raise _state_error(error) from error
            except BaseException:
                self._rollback()
                raise
            finally:
                self._depth = 0

    def _rollback(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        with self.transaction() as connection:
            connection.execute(sql, parameters)

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                return list(self._connection.execute(sql, parameters).fetchall())
            except sqlite3.OperationalError as error:
                raise _state_error(error) from error

    def query_one(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        rows = self.query(sql, parameters)
        return rows[0] if rows else None


#: Below this much free space where the store lives, changes are refused before they start:
#: SQLite (and an embedded libvirt, whose root shares the home) must be able to record them.
MIN_FREE_BYTES = 1024 * 1024


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def ensure_room(path: Path, minimum: int = MIN_FREE_BYTES) -> None:
    """Refuse (``state.disk_full``) when ``path``'s filesystem has less than ``minimum`` free."""
    free = free_bytes(path)
    if free < minimum:
        raise StateUnavailable(
            f"{path} has {free} bytes free, and the agent needs at least {minimum} to record "
            "changes; nothing was changed. Free space there and retry",
            code="state.disk_full",
            free_bytes=free,
        )


def _state_error(error: sqlite3.OperationalError) -> StateUnavailable:
    text = str(error)
    if "disk is full" in text or "database or disk is full" in text:
        return StateUnavailable(
            "the state store is out of disk space; nothing was changed. Free space under "
            "BLOCKPLANE_HOME and retry",
            code="state.disk_full",
        )
    return StateUnavailable(f"the state store failed: {text}; nothing was changed")
