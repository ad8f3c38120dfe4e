"""What the jobs service answers for a block job: ``JobView`` (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import JobState, Progress


@dataclass(frozen=True)
class JobView:
    """A job as ``job show`` prints it: its state (enums by their names as stored) and its
    ``spec``. ``progress`` is libvirt's live reading while the job runs."""

    id: str
    vm: str
    target: str
    kind: str
    phase: str
    created_at: float
    updated_at: float
    pivot_requested: bool
    abort_requested: bool
    ready: bool
    progress: Progress | None
    libvirt_status: str | None
    outcome: str | None
    point_in_time_copy: bool
    error: str | None
    finished_at: float | None
    spec: JobSpec
    #: How many times a copy started again into a regrown thin destination (``thin_copy``).
    restarts: int = 0

    @property
    def ended(self) -> bool:
        return self.phase in ("cleanup", "done", "failed", "aborted")


def job_view(state: JobState, spec: JobSpec, progress: Progress | None = None) -> JobView:
    """``state`` and ``spec`` as answered; ``progress`` replaces the recorded one."""
    return JobView(
        id=state.id,
        vm=state.vm,
        target=state.target,
        kind=state.kind.value,
        phase=state.phase.value,
        created_at=state.created_at,
        updated_at=state.updated_at,
        pivot_requested=state.pivot_requested,
        abort_requested=state.abort_requested,
        ready=state.ready,
        progress=progress or state.progress,
        libvirt_status=state.libvirt_status.name if state.libvirt_status is not None else None,
        outcome=state.outcome.value if state.outcome else None,
        point_in_time_copy=state.point_in_time_copy,
        error=state.error,
        finished_at=state.finished_at,
        spec=spec,
        restarts=state.restarts,
    )
