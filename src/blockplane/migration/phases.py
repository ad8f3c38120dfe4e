"""The migration job on its source: phases, what moves it, and where the VM is.

``advance(job, signal, now)`` is the only thing that moves a ``SourceJob`` on. It is pure: the
orchestrator (``source``) feeds it what happened (a step done, libvirt's job statistics, the
migration call's outcome, where the VM was found) and persists what it returns before taking the
step the new phase calls for. ``locate`` judges from both hosts' views where the VM runs.

    CHECKING -> PREPARING -> MIGRATING -> FINISHING -> CLEANUP -> DONE
        \\            \\           \\
         +------------+-----------+--> ROLLING_BACK -> FAILED | ABORTED

A job reaches DONE only once the VM runs on the destination and the destination confirmed it;
it reaches FAILED or ABORTED only once the VM runs on the source and the destination removed
what it prepared. Must not read clocks, persist anything, call libvirt or talk to peers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from blockplane.errors import Conflict


class MigrationPhase(Enum):
    CHECKING = "checking"
    PREPARING = "preparing"
    MIGRATING = "migrating"
    FINISHING = "finishing"
    CLEANUP = "cleanup"
    ROLLING_BACK = "rolling_back"
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (MigrationPhase.DONE, MigrationPhase.FAILED, MigrationPhase.ABORTED)

    @property
    def landed(self) -> bool:
        """The VM runs on the destination: nothing can send it back by an abort."""
        return self in (MigrationPhase.FINISHING, MigrationPhase.CLEANUP, MigrationPhase.DONE)


#: The phases whose time ``phase_seconds`` reports, by their short names.
TIMED = {
    MigrationPhase.CHECKING: "check",
    MigrationPhase.PREPARING: "prepare",
    MigrationPhase.MIGRATING: "migrate",
    MigrationPhase.FINISHING: "finish",
    MigrationPhase.CLEANUP: "cleanup",
    MigrationPhase.ROLLING_BACK: "rollback",
}


class Where(Enum):
    """Where the VM runs, as both hosts' views tell."""

    SOURCE = "source"
    DESTINATION = "destination"
    MIGRATING = "migrating"  # libvirt's migration job still runs
    NOWHERE = "nowhere"
    UNKNOWN = "unknown"  # a host did not answer, or the views disagree for now


@dataclass(frozen=True)
class MigrationProgress:
    """libvirt's job statistics: everything (``processed``/``total``), then memory and disks."""

    processed: int
    total: int
    remaining: int
    memory_processed: int = 0
    memory_total: int = 0
    disk_processed: int = 0
    disk_total: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "cur": self.processed, "end": self.total, "remaining": self.remaining,
            "memory_processed": self.memory_processed, "memory_total": self.memory_total,
            "disk_processed": self.disk_processed, "disk_total": self.disk_total,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MigrationProgress:
        return cls(
            int(data["cur"]), int(data["end"]), int(data.get("remaining", 0)),
            int(data.get("memory_processed", 0)), int(data.get("memory_total", 0)),
            int(data.get("disk_processed", 0)), int(data.get("disk_total", 0)),
        )  # fmt: skip


def progress_of(stats: Mapping[str, Any]) -> MigrationProgress | None:
    """The progress in ``virDomainGetJobStats``' answer; None when no job runs (type NONE)."""
    if not int(stats.get("type", 0)):
        return None

    def number(key: str) -> int:
        value = stats.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    return MigrationProgress(
        number("data_processed"), number("data_total"), number("data_remaining"),
        number("memory_processed"), number("memory_total"),
        number("disk_processed"), number("disk_total"),
    )  # fmt: skip


@dataclass(frozen=True)
class SourceJob:
    """One migration as its source records it. ``entered_at``: when the current phase began;
    ``phase_seconds``: time spent in each phase left so far (by ``TIMED`` name)."""

    id: str
    vm: str
    peer: str
    phase: MigrationPhase
    created_at: float
    updated_at: float
    entered_at: float
    abort_requested: bool = False
    progress: MigrationProgress | None = None
    error: str | None = None
    downtime_ms: int | None = None
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    finished_at: float | None = None

    @property
    def outcome(self) -> str | None:
        return {
            MigrationPhase.DONE: "succeeded",
            MigrationPhase.FAILED: "failed",
            MigrationPhase.ABORTED: "aborted",
        }.get(self.phase)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "vm": self.vm, "peer": self.peer, "phase": self.phase.value,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "entered_at": self.entered_at, "abort_requested": self.abort_requested,
            "progress": self.progress.to_json() if self.progress else None,
            "error": self.error, "downtime_ms": self.downtime_ms,
            "phase_seconds": dict(self.phase_seconds), "finished_at": self.finished_at,
            "outcome": self.outcome,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceJob:
        progress = data.get("progress")
        return cls(
            id=str(data["id"]), vm=str(data["vm"]), peer=str(data["peer"]),
            phase=MigrationPhase(data["phase"]), created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]), entered_at=float(data["entered_at"]),
            abort_requested=bool(data.get("abort_requested", False)),
            progress=MigrationProgress.from_json(progress) if progress else None,
            error=data.get("error"), downtime_ms=data.get("downtime_ms"),
            phase_seconds={str(k): float(v) for k, v in data.get("phase_seconds", {}).items()},
            finished_at=data.get("finished_at"),
        )  # fmt: skip


def new_job(job_id: str, vm: str, peer: str, now: float) -> SourceJob:
    """A job in CHECKING, persisted before the check asks anything of the destination."""
    return SourceJob(job_id, vm, peer, MigrationPhase.CHECKING, now, now, now)


# Signals: what happened, as the orchestrator saw it.
@dataclass(frozen=True)
class CheckPassed:
    pass


@dataclass(frozen=True)
class Prepared:
    """The destination answered its prepare: volumes made, plan and intent recorded."""


@dataclass(frozen=True)
class Stats:
    """One reading of libvirt's job statistics of the outgoing migration."""

    stats: Mapping[str, Any]


@dataclass(frozen=True)
class MigrationReturned:
    """``migrateToURI3`` returned without an error: the VM runs on the destination."""


@dataclass(frozen=True)
class MigrationFailed:
    """``migrateToURI3`` raised. Whether the VM moved is judged by ``Located`` after it."""

    reason: str


@dataclass(frozen=True)
class Located:
    where: Where
    reason: str = ""


@dataclass(frozen=True)
class StepFailed:
    """A step before the migration call failed (the check, the destination's prepare, or
    the destination went away before it answered)."""

    reason: str


@dataclass(frozen=True)
class FinishConfirmed:
    """The destination recorded the VM as its own. ``downtime_ms`` from its libvirt."""

    downtime_ms: int | None = None


@dataclass(frozen=True)
class CleanupDone:
    pass


@dataclass(frozen=True)
class RolledBack:
    """The VM runs on the source and the destination removed what it prepared."""


@dataclass(frozen=True)
class AbortRequested:
    pass


@dataclass(frozen=True)
class Restarted:
    """The source agent started again and found this job live (nobody was driving it)."""


Signal = (
    CheckPassed | Prepared | Stats | MigrationReturned | MigrationFailed | Located | StepFailed
    | FinishConfirmed | CleanupDone | RolledBack | AbortRequested | Restarted
)


def _enter(job: SourceJob, phase: MigrationPhase, now: float, **changes: Any) -> SourceJob:
    if phase is job.phase:
        return replace(job, updated_at=now, **changes)
    seconds = dict(job.phase_seconds)
    name = TIMED.get(job.phase)
    if name is not None:
        seconds[name] = round(seconds.get(name, 0.0) + max(0.0, now - job.entered_at), 3)
    finished = now if phase.terminal else job.finished_at
    return replace(job, phase=phase, updated_at=now, entered_at=now, phase_seconds=seconds,
                   finished_at=finished, **changes)


def _roll_back(job: SourceJob, reason: str, now: float) -> SourceJob:
    return _enter(job, MigrationPhase.ROLLING_BACK, now, error=job.error or reason)


def advance(job: SourceJob, signal: Signal, now: float) -> SourceJob:
    """The job after ``signal``; the same job (``==``) when the signal changes nothing.

    Raises ``Conflict`` for an abort the job can no longer honour (the VM already runs on the
    destination, or the job ended).
    """
    phase = job.phase
    match signal:
        case AbortRequested():
            if phase.terminal:
                raise Conflict(f"migration {job.id} has ended ({phase.value})",
                               code="job.invalid_request")
            if phase.landed:
                raise Conflict(
                    f"migration {job.id} cannot be aborted: {job.vm} already runs on "
                    f"{job.peer}; it is being finished there", code="migration.landed")
            if job.abort_requested:
                return job
            return replace(job, abort_requested=True, updated_at=now)
        case _ if phase.terminal:
            return job
        case CheckPassed() if phase is MigrationPhase.CHECKING:
            return _enter(job, MigrationPhase.PREPARING, now)
        case Prepared() if phase is MigrationPhase.PREPARING:
            return _enter(job, MigrationPhase.MIGRATING, now)
        case Stats(stats) if phase is MigrationPhase.MIGRATING:
            progress = progress_of(stats)
            if progress is None or progress == job.progress:
                return job  # no job reads NONE: not started yet, or over (the call decides)
            return replace(job, progress=progress, updated_at=now)
        case MigrationReturned() if phase is MigrationPhase.MIGRATING:
            return _enter(job, MigrationPhase.FINISHING, now)
        case MigrationFailed(reason) if phase is MigrationPhase.MIGRATING:
            return replace(job, error=job.error or reason, updated_at=now)
        case Located(where, reason) if phase is MigrationPhase.MIGRATING:
            if where is Where.DESTINATION:
                return _enter(job, MigrationPhase.FINISHING, now, error=None)
            if where is Where.SOURCE:
                return _roll_back(job, reason or f"{job.vm} still runs on this host: the "
                                  "migration did not complete", now)
            if where is Where.NOWHERE:
                return _roll_back(job, reason or f"{job.vm} runs on neither host", now)
            return job
        case Located(Where.DESTINATION) if phase is MigrationPhase.ROLLING_BACK:
            # The destination refused the rollback: the VM runs there (and not here).
            return _enter(job, MigrationPhase.FINISHING, now, error=None)
        case StepFailed(reason) if phase in (MigrationPhase.CHECKING, MigrationPhase.PREPARING):
            return _roll_back(job, reason, now)
        case FinishConfirmed(downtime) if phase is MigrationPhase.FINISHING:
            return _enter(job, MigrationPhase.CLEANUP, now, downtime_ms=downtime)
        case CleanupDone() if phase is MigrationPhase.CLEANUP:
            return _enter(job, MigrationPhase.DONE, now, progress=_complete(job.progress))
        case RolledBack() if phase is MigrationPhase.ROLLING_BACK:
            final = MigrationPhase.ABORTED if job.abort_requested else MigrationPhase.FAILED
            error = "aborted on request" if job.abort_requested and not job.error else job.error
            return _enter(job, final, now, error=error)
        case Restarted() if phase is MigrationPhase.CHECKING:
            return _enter(job, MigrationPhase.FAILED, now,
                          error="the agent restarted during the check; nothing had changed")
        case Restarted() if phase is MigrationPhase.PREPARING:
            return _roll_back(job, "the agent restarted while the destination prepared", now)
    return job


def _complete(progress: MigrationProgress | None) -> MigrationProgress | None:
    if progress is None:
        return None
    return replace(progress, processed=progress.total, remaining=0)


@dataclass(frozen=True)
class SourceView:
    """This host's libvirt on the VM: ``present`` (defined or running), ``active``,
    ``paused_by_migration``, ``migration_running`` (an outgoing migration job)."""

    present: bool
    active: bool
    paused_by_migration: bool = False
    migration_running: bool = False


@dataclass(frozen=True)
class DestinationView:
    """The destination agent's answer: ``running`` (landed), ``incoming`` (a migration into
    it still runs). ``None`` in ``locate`` stands for no answer."""

    present: bool
    running: bool
    incoming: bool = False


def locate(source: SourceView, destination: DestinationView | None) -> Where:
    """Where the VM runs, from this host's libvirt and the destination's answer.

    The source's own view decides when it can: an outgoing migration job means libvirt is
    still at it; a VM running here (not paused for the switch-over) means it did not move, even
    if the destination cannot be asked. Otherwise only the destination can tell.
    """
    if source.migration_running:
        return Where.MIGRATING
    if destination is not None and destination.running and not destination.incoming:
        if source.active and not source.paused_by_migration:
            return Where.UNKNOWN  # both report it running: wait until one of them stops
        return Where.DESTINATION
    if source.active:
        return Where.SOURCE
    if destination is None:
        return Where.UNKNOWN
    if destination.incoming:
        return Where.MIGRATING
    return Where.NOWHERE
