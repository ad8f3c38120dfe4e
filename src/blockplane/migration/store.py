"""The ``migrations`` table: each migration's state and plan, on each of its two ends.

A row per (job id, role): ``source`` rows hold a ``SourceJob`` and what was planned;
``destination`` rows an ``IncomingState`` (``migration.incoming``). Every phase is written here
before the step it announces. ``insert_source`` refuses a second live migration of a VM in the
same transaction as it inserts, so two requests cannot both start one. Plain data access: must
not decide phases, call libvirt or talk to peers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.errors import Conflict
from blockplane.migration.phases import MigrationPhase, SourceJob
from blockplane.store.database import Database, Row

SOURCE = "source"
DESTINATION = "destination"
_SOURCE_ENDED = tuple(phase.value for phase in MigrationPhase if phase.terminal)
#: A destination row in one of these is over (see ``migration.incoming``).
DESTINATION_ENDED = ("done", "rolled_back")


@dataclass(frozen=True)
class StoredMigration:
    """A source row: the job and its plan JSON (what was asked, and the destination's plan)."""

    job: SourceJob
    plan: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.job.id


@dataclass(frozen=True)
class StoredIncoming:
    id: str
    vm: str
    phase: str
    state: Mapping[str, Any]
    plan: Mapping[str, Any]


class MigrationStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    # the source's rows
    def insert_source(self, job: SourceJob, plan: Mapping[str, Any]) -> None:
        with self._db.transaction() as connection:
            holder = connection.execute(
                f"SELECT id FROM migrations WHERE role = ? AND vm = ? AND phase NOT IN "
                f"({', '.join('?' * len(_SOURCE_ENDED))})",
                (SOURCE, job.vm, *_SOURCE_ENDED),
            ).fetchone()
            if holder is not None:
                raise Conflict(f"VM {job.vm} is already being migrated (job {holder['id']})",
                               code="job.busy", job=holder["id"])
            connection.execute(
                "INSERT INTO migrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, SOURCE, job.vm, job.peer, job.phase.value, _dump(job.to_json()),
                 _dump(plan), job.created_at, job.updated_at),
            )

    def save_source(self, job: SourceJob) -> None:
        self._db.execute(
            "UPDATE migrations SET phase = ?, state_json = ?, updated_at = ? "
            "WHERE id = ? AND role = ?",
            (job.phase.value, _dump(job.to_json()), job.updated_at, job.id, SOURCE),
        )

    def save_source_plan(self, job_id: str, plan: Mapping[str, Any]) -> None:
        self._db.execute("UPDATE migrations SET plan_json = ? WHERE id = ? AND role = ?",
                         (_dump(plan), job_id, SOURCE))

    def delete_source(self, job_id: str) -> None:
        """Forget a job refused by its check (nothing was done: it never started)."""
        self._db.execute("DELETE FROM migrations WHERE id = ? AND role = ?", (job_id, SOURCE))

    def source(self, job_id: str) -> StoredMigration | None:
        row = self._db.query_one("SELECT * FROM migrations WHERE id = ? AND role = ?",
                                 (job_id, SOURCE))
        return _source(row) if row else None

    def sources(self, vm: str | None = None, *, live_only: bool = False) -> list[StoredMigration]:
        sql = "SELECT * FROM migrations WHERE role = ?"
        parameters: list[Any] = [SOURCE]
        if vm is not None:
            sql += " AND vm = ?"
            parameters.append(vm)
        if live_only:
            sql += f" AND phase NOT IN ({', '.join('?' * len(_SOURCE_ENDED))})"
            parameters.extend(_SOURCE_ENDED)
        rows = self._db.query(sql + " ORDER BY created_at", parameters)
        return [_source(row) for row in rows]

    # the destination's rows
    def put_incoming(self, incoming: StoredIncoming, peer: str | None, now: float) -> None:
        """Insert or update; the first write is the intent, made before anything is made."""
        with self._db.transaction() as connection:
            updated = connection.execute(
                "UPDATE migrations SET phase = ?, state_json = ?, plan_json = ?, updated_at = ? "
                "WHERE id = ? AND role = ?",
                (incoming.phase, _dump(incoming.state), _dump(incoming.plan), now, incoming.id,
                 DESTINATION),
            ).rowcount
            if not updated:
                connection.execute(
                    "INSERT INTO migrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (incoming.id, DESTINATION, incoming.vm, peer, incoming.phase,
                     _dump(incoming.state), _dump(incoming.plan), now, now),
                )

    def incoming(self, job_id: str) -> StoredIncoming | None:
        row = self._db.query_one("SELECT * FROM migrations WHERE id = ? AND role = ?",
                                 (job_id, DESTINATION))
        return _incoming(row) if row else None

    def incomings(self, *, live_only: bool = False) -> list[StoredIncoming]:
        sql = "SELECT * FROM migrations WHERE role = ?"
        parameters: list[Any] = [DESTINATION]
        if live_only:
            sql += f" AND phase NOT IN ({', '.join('?' * len(DESTINATION_ENDED))})"
            parameters.extend(DESTINATION_ENDED)
        return [_incoming(row) for row in self._db.query(sql + " ORDER BY created_at",
                                                         parameters)]


def _dump(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


def _source(row: Row) -> StoredMigration:
    return StoredMigration(SourceJob.from_json(json.loads(row["state_json"])),
                           json.loads(row["plan_json"]))


def _incoming(row: Row) -> StoredIncoming:
    return StoredIncoming(row["id"], row["vm"], row["phase"], json.loads(row["state_json"]),
                          json.loads(row["plan_json"]))
