"""``EndRequested``: blockplane ends a job itself and its outcome overrules libvirt's verdict."""

from __future__ import annotations

import pytest

from blockplane.chain.jobs.phases import (
    AbortRequested,
    CleanupDone,
    Effect,
    EndRequested,
    JobAbsent,
    JobEventObserved,
    Started,
    advance,
)
from blockplane.chain.jobs.state import (
    BlockJobStatus,
    JobKind,
    JobPhase,
    JobState,
    Outcome,
    new_job,
)
from blockplane.errors import Conflict


def running() -> JobState:
    return advance(new_job("j", "vm", "vda", JobKind.BACKUP, now=1.0), Started())


@pytest.mark.parametrize("status", [BlockJobStatus.COMPLETED, BlockJobStatus.CANCELED])
def test_the_forced_outcome_and_its_reason_win_over_libvirts_end(status: BlockJobStatus) -> None:
    ending = advance(running(), EndRequested(Outcome.FAILED, "scratch full"))
    assert (ending.phase, ending.abort_requested) == (JobPhase.ABORTING, True)
    ended = advance(ending, JobEventObserved(status))
    assert (ended.phase, ended.outcome, ended.error) == (JobPhase.CLEANUP, Outcome.FAILED,
                                                         "scratch full")
    assert advance(ended, CleanupDone()).phase is JobPhase.FAILED


def test_a_job_gone_unobserved_takes_the_forced_outcome_too() -> None:
    ending = advance(running(), EndRequested(Outcome.ABORTED, "timed out"))
    ended = advance(ending, JobAbsent(Effect.UNKNOWN))
    assert (ended.outcome, ended.error) == (Outcome.ABORTED, "timed out")


def test_libvirts_failure_stays_a_failure() -> None:
    ending = advance(running(), EndRequested(Outcome.ABORTED, "timed out"))
    assert advance(ending, JobEventObserved(BlockJobStatus.FAILED)).outcome is Outcome.FAILED


def test_a_plain_stop_of_a_pull_backup_ends_done() -> None:
    stopping = advance(running(), AbortRequested())
    ended = advance(stopping, JobEventObserved(BlockJobStatus.COMPLETED))
    assert ended.outcome is Outcome.SUCCEEDED and ended.forced_outcome is None


def test_end_requests_are_idempotent_and_refused_where_they_cannot_apply() -> None:
    ending = advance(running(), EndRequested(Outcome.FAILED, "scratch full"))
    assert advance(ending, EndRequested(Outcome.ABORTED, "again")) == ending
    with pytest.raises(Conflict):
        advance(new_job("j", "vm", "vda", JobKind.BACKUP, now=1.0),
                EndRequested(Outcome.FAILED, "x"))
    done = advance(advance(running(), JobEventObserved(BlockJobStatus.COMPLETED)), CleanupDone())
    with pytest.raises(Conflict):
        advance(done, EndRequested(Outcome.FAILED, "x"))
    assert JobState.from_json(ending.to_json()) == ending
