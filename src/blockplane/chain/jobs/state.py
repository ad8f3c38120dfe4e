"""The persisted record of one block job: its kind, phase, requests, progress and outcome.

``phases.advance`` is the only thing that moves a ``JobState`` on; this module holds the vocabulary
(kinds, phases, outcomes, libvirt's status and job-type numbers) and the JSON form the store keeps.
Timestamps are passed in by the caller. Must not read clocks, persist anything or call libvirt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from blockplane.errors import InvalidInput


class JobKind(Enum):
    COMMIT = "commit"
    ACTIVE_COMMIT = "active_commit"
    PULL = "pull"
    COPY = "copy"
    BACKUP = "backup"

    @property
    def mirrors(self) -> bool:
        """Mirror jobs reach READY and end by a pivot (success) or an abort."""
        return self in (JobKind.ACTIVE_COMMIT, JobKind.COPY)


# virDomainBlockJobType: the ``type`` of BLOCK_JOB_2 events and of blockJobInfo.
LIBVIRT_JOB_TYPES: Mapping[int, JobKind] = {
    1: JobKind.PULL,
    2: JobKind.COPY,
    3: JobKind.COMMIT,
    4: JobKind.ACTIVE_COMMIT,
    5: JobKind.BACKUP,
}


class BlockJobStatus(IntEnum):
    """virConnectDomainEventBlockJobStatus, as BLOCK_JOB_2 delivers it."""

    COMPLETED = 0
    FAILED = 1
    CANCELED = 2
    READY = 3


class JobPhase(Enum):
    PREPARING = "preparing"
    RUNNING = "running"
    READY = "ready"
    PIVOTING = "pivoting"
    ABORTING = "aborting"
    CLEANUP = "cleanup"
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.DONE, JobPhase.FAILED, JobPhase.ABORTED)

    @property
    def ended(self) -> bool:
        """The libvirt job is over and its outcome recorded (CLEANUP or terminal)."""
        return self is JobPhase.CLEANUP or self.terminal


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def final_phase(self) -> JobPhase:
        return {
            Outcome.SUCCEEDED: JobPhase.DONE,
            Outcome.FAILED: JobPhase.FAILED,
            Outcome.ABORTED: JobPhase.ABORTED,
        }[self]


@dataclass(frozen=True)
class Progress:
    cur: int
    end: int

    @property
    def fraction(self) -> float:
        return min(self.cur / self.end, 1.0) if self.end > 0 else 0.0


@dataclass(frozen=True)
class JobState:
    """One job. ``ready``: READY was reached at least once. ``libvirt_status``: the last end
    status libvirt's events reported (COMPLETED, FAILED or CANCELED), None if none was seen.
    ``outcome`` is set once, when the job ends, and then never changes. ``restarts``: how
    often a copy was started again after its thin destination ran out of room."""

    id: str
    vm: str
    target: str
    kind: JobKind
    phase: JobPhase
    created_at: float
    updated_at: float
    pivot_requested: bool = False
    abort_requested: bool = False
    ready: bool = False
    progress: Progress | None = None
    libvirt_status: BlockJobStatus | None = None
    outcome: Outcome | None = None
    point_in_time_copy: bool = False
    error: str | None = None
    finished_at: float | None = None
    restarts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vm": self.vm,
            "target": self.target,
            "kind": self.kind.value,
            "phase": self.phase.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "pivot_requested": self.pivot_requested,
            "abort_requested": self.abort_requested,
            "ready": self.ready,
            "progress": (
                {"cur": self.progress.cur, "end": self.progress.end} if self.progress else None
            ),
            "libvirt_status": self.libvirt_status.name if self.libvirt_status is not None else None,
            "outcome": self.outcome.value if self.outcome else None,
            "point_in_time_copy": self.point_in_time_copy,
            "error": self.error,
            "finished_at": self.finished_at,
            "restarts": self.restarts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobState:
        progress = data.get("progress")
        status = data.get("libvirt_status")
        outcome = data.get("outcome")
        return cls(
            id=data["id"],
            vm=data["vm"],
            target=data["target"],
            kind=JobKind(data["kind"]),
            phase=JobPhase(data["phase"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            pivot_requested=bool(data.get("pivot_requested", False)),
            abort_requested=bool(data.get("abort_requested", False)),
            ready=bool(data.get("ready", False)),
            progress=Progress(int(progress["cur"]), int(progress["end"])) if progress else None,
            libvirt_status=BlockJobStatus[status] if status is not None else None,
            outcome=Outcome(outcome) if outcome is not None else None,
            point_in_time_copy=bool(data.get("point_in_time_copy", False)),
            error=data.get("error"),
            finished_at=data.get("finished_at"),
            restarts=int(data.get("restarts", 0)),
        )


def new_job(
    job_id: str, vm: str, target: str, kind: JobKind, *, now: float, pivot: bool = False
) -> JobState:
    """A job in PREPARING, to be persisted before anything is created or libvirt is called."""
    if pivot and not kind.mirrors:
        raise InvalidInput(
            f"a {kind.value} job does not pivot; only copy and active commit do",
            code="job.invalid_request",
        )
    return JobState(
        id=job_id, vm=vm, target=target, kind=kind, phase=JobPhase.PREPARING,
        created_at=now, updated_at=now, pivot_requested=pivot,
    )
