"""The persisted block jobs: one ``chain_jobs`` row per job, its state and its spec as JSON.

Every phase is written here before the action it describes (see ``phases``). The one-job-per-disk
rule is checked and the new job inserted in one transaction (``insert_if_free``), so two requests
cannot both pass the check. Must not call libvirt or decide a job's phase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import JobPhase, JobState
from blockplane.errors import Conflict
from blockplane.store.database import Database, Row

_TERMINAL = tuple(phase.value for phase in JobPhase if phase.terminal)


@dataclass(frozen=True)
class StoredJob:
    state: JobState
    spec: JobSpec

    @property
    def id(self) -> str:
        return self.state.id


def busy_error(vm: str, holder: StoredJob) -> Conflict:
    """The one-job-per-disk refusal: exit 2, code ``job.busy``."""
    return Conflict(
        f"{vm}/{','.join(holder.spec.targets)} is busy with {holder.state.kind.value} job "
        f"{holder.id} ({holder.state.phase.value}); one job per disk at a time",
        code="job.busy", job=holder.id)


class JobStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def insert_if_free(self, job: JobState, spec: JobSpec) -> StoredJob | None:
        """Insert ``job`` unless a live job holds one of its disks; return that job if so."""
        with self._db.transaction() as connection:
            rows = connection.execute(
                f"SELECT * FROM chain_jobs WHERE vm = ? AND phase NOT IN "
                f"({', '.join('?' * len(_TERMINAL))})",
                (job.vm, *_TERMINAL),
            ).fetchall()
            for row in rows:
                holder = _stored(row)
                if set(holder.spec.targets) & set(spec.targets):
                    return holder
            connection.execute(
                "INSERT INTO chain_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id, job.vm, job.target, job.kind.value, job.phase.value,
                    json.dumps(job.to_json(), sort_keys=True),
                    json.dumps(spec.to_json(), sort_keys=True),
                    job.created_at, job.updated_at,
                ),
            )
        return None

    def save(self, job: JobState) -> None:
        self._db.execute(
            "UPDATE chain_jobs SET phase = ?, state_json = ?, updated_at = ? WHERE id = ?",
            (job.phase.value, json.dumps(job.to_json(), sort_keys=True), job.updated_at, job.id),
        )

    def save_spec(self, job_id: str, spec: JobSpec) -> None:
        self._db.execute(
            "UPDATE chain_jobs SET spec_json = ? WHERE id = ?",
            (json.dumps(spec.to_json(), sort_keys=True), job_id),
        )

    def get(self, job_id: str) -> StoredJob | None:
        row = self._db.query_one("SELECT * FROM chain_jobs WHERE id = ?", (job_id,))
        return _stored(row) if row else None

    def live(self) -> list[StoredJob]:
        """Jobs not yet DONE, FAILED or ABORTED, oldest first."""
        rows = self._db.query(
            f"SELECT * FROM chain_jobs WHERE phase NOT IN ({', '.join('?' * len(_TERMINAL))})"
            " ORDER BY created_at",
            _TERMINAL,
        )
        return [_stored(row) for row in rows]

    def all(self, vm: str | None = None, limit: int = 500) -> list[StoredJob]:
        if vm is None:
            rows = self._db.query(
                "SELECT * FROM chain_jobs ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        else:
            rows = self._db.query(
                "SELECT * FROM chain_jobs WHERE vm = ? ORDER BY created_at DESC LIMIT ?",
                (vm, limit),
            )
        return [_stored(row) for row in reversed(rows)]

    def holding(self, vm: str, target: str) -> StoredJob | None:
        """The live job that occupies ``vm``'s disk ``target``, if any."""
        for job in self.live():
            if job.state.vm == vm and target in job.spec.targets:
                return job
        return None


def _stored(row: Row) -> StoredJob:
    return StoredJob(
        JobState.from_json(json.loads(row["state_json"])),
        JobSpec.from_json(json.loads(row["spec_json"])),
    )
