"""What the migration services answer: a migration as a job (``MigrationJobView``, the block
jobs' shape with kind ``migrate``) and its progress. Plain frozen dataclasses (``model.view``);
must not read a store or call libvirt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockplane.migration.phases import MigrationProgress, SourceJob


@dataclass(frozen=True)
class MigrationJobProgress:
    """libvirt's job statistics: everything (``cur``/``end`` bytes), then memory and disks."""

    cur: int
    end: int
    remaining: int = 0
    memory_processed: int = 0
    memory_total: int = 0
    disk_processed: int = 0
    disk_total: int = 0

    @property
    def fraction(self) -> float:
        return min(self.cur / self.end, 1.0) if self.end > 0 else 0.0

    @classmethod
    def of(cls, progress: MigrationProgress) -> MigrationJobProgress:
        return cls(progress.processed, progress.total, progress.remaining,
                   progress.memory_processed, progress.memory_total,
                   progress.disk_processed, progress.disk_total)


@dataclass(frozen=True)
class MigrationJobView:
    """A migration as ``job list|show`` shows it (kind ``migrate``). ``target``: the VM's
    disks, comma separated. ``phase_seconds``: check, prepare, migrate, finish, cleanup,
    rollback: seconds in each. ``spec``: the options, and per disk what it gets there (``disks``),
    the features it loses (``gaps``) and the destination's ``notes``."""

    id: str
    vm: str
    target: str
    phase: str
    created_at: float
    updated_at: float
    abort_requested: bool
    progress: MigrationJobProgress | None
    outcome: str | None
    error: str | None
    finished_at: float | None
    peer: str
    downtime_ms: int | None
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "migrate"
    #: Always so: a migration has no pivot, no READY, no libvirt block-job status, and is no
    #: point-in-time copy; kept for the block jobs' shape.
    pivot_requested: bool = False
    ready: bool = False
    libvirt_status: str | None = None
    point_in_time_copy: bool = False

    @classmethod
    def of(cls, job: SourceJob, targets: tuple[str, ...],
           spec: Mapping[str, Any]) -> MigrationJobView:
        return cls(
            id=job.id, vm=job.vm, target=",".join(targets), phase=job.phase.value,
            created_at=job.created_at, updated_at=job.updated_at,
            abort_requested=job.abort_requested,
            progress=MigrationJobProgress.of(job.progress) if job.progress else None,
            outcome=job.outcome, error=job.error, finished_at=job.finished_at, peer=job.peer,
            downtime_ms=job.downtime_ms, phase_seconds=dict(job.phase_seconds), spec=spec,
        )  # fmt: skip
