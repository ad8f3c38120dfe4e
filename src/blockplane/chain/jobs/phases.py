"""The block-job phase machine: ``advance(job, signal)`` and what to do after a restart.

Phases (persisted before the action each one describes)::

    PREPARING -> RUNNING -> [READY -> PIVOTING] -> CLEANUP -> DONE | FAILED | ABORTED
                    \\-> ABORTING (user abort) -/

A copy whose thin destination ran out of room goes from RUNNING or READY back to RUNNING
(``CopyRestarted``, counted in ``restarts``) instead of ending FAILED (``thin_copy``).

Signals come in two sorts. *Observations* (BLOCK_JOB_2 events, blockJobInfo or its absence, the
live XML's verdict on a pivot) are facts: they never raise, duplicates change nothing, and one that
arrives after the job ended is stale and ignored. *Requests* (the user's pivot or abort, and the
service's own steps) raise ``Conflict`` with code ``job.invalid_request`` where they cannot apply.

Rules that keep reports honest:
- the outcome is recorded once, from the first decisive fact, and never rewritten;
- only COMPLETED, a pivot seen in the live XML, or a chain that shows the job's effect is success;
  a job that vanished without any of those is FAILED (or ABORTED if an abort was asked), never DONE;
- a mirror job (copy, active commit) is DONE only after the live XML shows the pivot: COMPLETED
  alone moves it to PIVOTING;
- READY comes from the READY event or the XML's ``<mirror ready='yes'>``, never from cur == end;
- a copy cancelled after READY leaves a point-in-time copy (``point_in_time_copy``).

Must not read clocks, persist, or call libvirt: the caller does those around each ``advance``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from blockplane.chain.jobs.state import (
    LIBVIRT_JOB_TYPES,
    BlockJobStatus,
    JobKind,
    JobPhase,
    JobState,
    Outcome,
    Progress,
)
from blockplane.errors import Conflict

__all__ = [
    "AbortRequested",
    "CleanupDone",
    "CopyRestarted",
    "Effect",
    "JobAbsent",
    "JobEventObserved",
    "JobInfoObserved",
    "JobKind",
    "JobPhase",
    "JobSignal",
    "JobState",
    "Observation",
    "PivotFailed",
    "PivotIssued",
    "PivotObserved",
    "PivotRequested",
    "Request",
    "RestartAction",
    "RestartFailed",
    "StartFailed",
    "Started",
    "advance",
    "restart_action",
]


class Effect(Enum):
    """What the live chain shows of a job that libvirt no longer reports (see ``effects``)."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class JobEventObserved:
    """A BLOCK_JOB_2 event for this job's disk; ``job_type`` is libvirt's number, if known."""

    status: BlockJobStatus
    job_type: int | None = None


@dataclass(frozen=True)
class JobInfoObserved:
    """Reconcile: blockJobInfo reports the job. ``ready`` is the XML's ``<mirror ready='yes'>``."""

    cur: int
    end: int
    ready: bool = False


@dataclass(frozen=True)
class JobAbsent:
    """Reconcile: blockJobInfo reports no job on the disk; ``effect`` is read from the chain."""

    effect: Effect


@dataclass(frozen=True)
class PivotObserved:
    """The live XML shows (or not) the new image as the active top, with no ``<mirror>`` left."""

    pivoted: bool


@dataclass(frozen=True)
class Started:
    """libvirt accepted the job."""


@dataclass(frozen=True)
class StartFailed:
    error: str


@dataclass(frozen=True)
class PivotRequested:
    """The user asks for a pivot (now if READY, else as soon as it is)."""


@dataclass(frozen=True)
class AbortRequested:
    pass


@dataclass(frozen=True)
class PivotIssued:
    """The service is about to ask libvirt to pivot (persisted first)."""


@dataclass(frozen=True)
class PivotFailed:
    """libvirt refused the pivot; the job stays READY."""

    error: str


@dataclass(frozen=True)
class CleanupDone:
    pass


@dataclass(frozen=True)
class CopyRestarted:
    """A copy's thin destination ran out of room: it is grown and the copy starts again
    (persisted before the new mirror is asked for)."""


@dataclass(frozen=True)
class RestartFailed:
    """The copy could not be started again; it ends FAILED with ``error``."""

    error: str


Observation = JobEventObserved | JobInfoObserved | JobAbsent | PivotObserved
Request = (
    Started | StartFailed | PivotRequested | AbortRequested | PivotIssued | PivotFailed
    | CleanupDone | CopyRestarted | RestartFailed
)
JobSignal = Observation | Request


def advance(job: JobState, signal: JobSignal, now: float | None = None) -> JobState:
    """The job after ``signal``; ``now`` stamps ``updated_at`` (and ``finished_at``) on change."""
    if isinstance(signal, Request):
        new = _request(job, signal)
    elif job.phase.ended:
        return job
    else:
        new = _observe(job, signal)
    if new == job:
        return job
    if now is None:
        return new
    finished = now if job.outcome is None and new.outcome is not None else new.finished_at
    return replace(new, updated_at=now, finished_at=finished)


def _observe(job: JobState, signal: Observation) -> JobState:
    match signal:
        case JobEventObserved(status, job_type):
            if job_type is not None and LIBVIRT_JOB_TYPES.get(job_type) is not job.kind:
                return job
            return _event(job, status)
        case JobInfoObserved(cur, end, ready):
            job = replace(job, progress=Progress(cur, end))
            if job.phase is JobPhase.PREPARING:
                job = replace(job, phase=JobPhase.RUNNING)
            return _became_ready(job) if ready and job.kind.mirrors else job
        case JobAbsent(effect):
            return _absent(job, effect)
        case PivotObserved(pivoted):
            if pivoted and job.kind.mirrors:
                return _end(job, Outcome.SUCCEEDED)
            # Not (yet) pivoted: libvirt may return from a pivot before the XML changes.
            return job
    raise TypeError(f"not a job observation: {signal!r}")


def _event(job: JobState, status: BlockJobStatus) -> JobState:
    if status is BlockJobStatus.READY:
        return _became_ready(job) if job.kind.mirrors else job
    job = replace(job, libvirt_status=status)
    if status is BlockJobStatus.COMPLETED:
        if job.kind.mirrors:
            # A mirror job completes only by pivoting: wait for the XML to prove it.
            return replace(job, phase=JobPhase.PIVOTING)
        return _end(job, Outcome.SUCCEEDED)
    if status is BlockJobStatus.FAILED:
        return _end(job, Outcome.FAILED, f"libvirt reported the {job.kind.value} job failed")
    why: str | None = None
    if job.phase is JobPhase.PIVOTING:
        why = "the job was cancelled before the pivot took effect"
    elif not job.abort_requested:
        why = "the job was cancelled outside blockplane"
    return _end(job, Outcome.ABORTED, why,
                point_in_time_copy=job.kind is JobKind.COPY and job.ready)


def _became_ready(job: JobState) -> JobState:
    # READY means in step with the source, so a reading taken before the event is stale.
    job = replace(job, ready=True, progress=_complete(job.progress))
    if job.phase in (JobPhase.PREPARING, JobPhase.RUNNING):
        return replace(job, phase=JobPhase.READY)
    return job


def _complete(progress: Progress | None) -> Progress | None:
    return Progress(progress.end, progress.end) if progress else None


def _absent(job: JobState, effect: Effect) -> JobState:
    if effect is Effect.APPLIED:
        return _end(job, Outcome.SUCCEEDED)
    if effect is Effect.UNKNOWN:
        outcome = Outcome.ABORTED if job.abort_requested else Outcome.FAILED
        return _end(job, outcome, "the job ended unobserved and its outcome could not be verified")
    if job.abort_requested:
        # No CANCELED event was seen, so a copy is not vouched for as consistent.
        return _end(job, Outcome.ABORTED, "the job ended unobserved after the abort request")
    if job.libvirt_status is BlockJobStatus.COMPLETED:
        return _end(job, Outcome.FAILED,
                    "libvirt reported completion but the live chain does not show the pivot")
    return _end(job, Outcome.FAILED, "the job ended unobserved and the chain shows no effect")


def _end(
    job: JobState, outcome: Outcome, error: str | None = None, *, point_in_time_copy: bool = False
) -> JobState:
    progress = _complete(job.progress) if outcome is Outcome.SUCCEEDED else job.progress
    return replace(job, phase=JobPhase.CLEANUP, outcome=outcome, error=error,
                   point_in_time_copy=point_in_time_copy, progress=progress)


def _request(job: JobState, signal: Request) -> JobState:
    phase = job.phase
    match signal:
        case Started():
            return replace(job, phase=JobPhase.RUNNING) if phase is JobPhase.PREPARING else job
        case StartFailed(error):
            if phase is not JobPhase.PREPARING:
                raise _invalid(job, "it already started")
            return _end(job, Outcome.FAILED, error)
        case PivotRequested():
            if not job.kind.mirrors:
                raise _invalid(job, "only copy and active commit jobs pivot")
            if phase is JobPhase.PIVOTING:
                return job
            _require_live(job, "pivot")
            if phase is JobPhase.ABORTING:
                raise _invalid(job, "it is being aborted")
            return replace(job, pivot_requested=True)
        case AbortRequested():
            if phase is JobPhase.ABORTING:
                return job
            _require_live(job, "abort")
            if phase is JobPhase.PREPARING:
                raise _invalid(job, "it is still starting; abort it once it runs")
            if phase is JobPhase.PIVOTING:
                raise _invalid(job, "a pivot is under way")
            return replace(job, phase=JobPhase.ABORTING, abort_requested=True)
        case PivotIssued():
            if phase is JobPhase.PIVOTING:
                return job
            if phase is not JobPhase.READY or not job.pivot_requested:
                raise _invalid(job, "it is not READY with a pivot requested")
            return replace(job, phase=JobPhase.PIVOTING)
        case PivotFailed(error):
            if phase.ended or job.libvirt_status is BlockJobStatus.COMPLETED:
                return job
            if phase is not JobPhase.PIVOTING:
                raise _invalid(job, "no pivot was issued")
            return replace(job, phase=JobPhase.READY, pivot_requested=False, error=error)
        case CopyRestarted():
            if job.kind is not JobKind.COPY or phase not in (JobPhase.RUNNING, JobPhase.READY):
                raise _invalid(job, "only a running copy starts again")
            if job.abort_requested:
                raise _invalid(job, "it is being aborted")
            return replace(job, phase=JobPhase.RUNNING, ready=False, progress=None,
                           libvirt_status=None, restarts=job.restarts + 1)
        case RestartFailed(error):
            if phase.ended:
                return job
            if job.kind is not JobKind.COPY or job.restarts == 0:
                raise _invalid(job, "no restart was issued")
            return _end(job, Outcome.FAILED, error)
        case CleanupDone():
            if phase.terminal:
                return job
            if phase is not JobPhase.CLEANUP or job.outcome is None:
                raise _invalid(job, "it has not ended")
            return replace(job, phase=job.outcome.final_phase)
    raise TypeError(f"not a job request: {signal!r}")


def _require_live(job: JobState, what: str) -> None:
    if job.phase.ended:
        raise _invalid(job, f"it has ended; nothing to {what}")


def _invalid(job: JobState, why: str) -> Conflict:
    return Conflict(
        f"job {job.id} ({job.kind.value} on {job.vm}/{job.target}, {job.phase.name}): {why}",
        code="job.invalid_request",
        job=job.id,
        phase=job.phase.value,
    )


class RestartAction(Enum):
    """What the agent does for a job it finds in the store after a restart (or a reconcile).

    TRACK: keep following events. RECORD_OUTCOME: read the live chain, feed ``JobAbsent(effect)``,
    then clean up. PIVOT: persist ``PivotIssued`` and pivot. CONFIRM_PIVOT: read the live XML and
    feed ``PivotObserved``, or ``JobAbsent`` if the job is gone; if the XML shows no pivot and the
    job is still READY, pivot again. ABORT: abort again. CLEANUP: redo the (idempotent) cleanup.
    """

    NONE = "none"
    TRACK = "track"
    RECORD_OUTCOME = "record_outcome"
    PIVOT = "pivot"
    CONFIRM_PIVOT = "confirm_pivot"
    ABORT = "abort"
    CLEANUP = "cleanup"


def restart_action(job: JobState, job_present: bool) -> RestartAction:
    """``job_present``: blockJobInfo reports a job on the disk now."""
    phase = job.phase
    if phase.terminal:
        return RestartAction.NONE
    if phase is JobPhase.CLEANUP:
        return RestartAction.CLEANUP
    if phase is JobPhase.PIVOTING:
        return RestartAction.CONFIRM_PIVOT
    if not job_present:
        return RestartAction.RECORD_OUTCOME
    if phase is JobPhase.ABORTING:
        return RestartAction.ABORT
    if phase is JobPhase.READY and job.pivot_requested:
        return RestartAction.PIVOT
    return RestartAction.TRACK
