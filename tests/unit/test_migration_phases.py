"""The migration job's phase machine, fed synthetic sequences of what the orchestrator sees:
libvirt's job statistics (repeated, reading NONE), the migration call's outcome, where the VM
was found, a destination that went away, aborts and restarts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockplane.errors import Conflict
from blockplane.migration.phases import (
    AbortRequested,
    CheckPassed,
    CleanupDone,
    DestinationView,
    FinishConfirmed,
    Located,
    MigrationFailed,
    MigrationPhase,
    MigrationProgress,
    MigrationReturned,
    Prepared,
    Restarted,
    RolledBack,
    Signal,
    SourceJob,
    SourceView,
    Stats,
    StepFailed,
    Where,
    advance,
    locate,
    new_job,
    progress_of,
)

P = MigrationPhase
RUNNING = {"type": 2, "operation": 5, "data_processed": 100, "data_total": 400,
           "data_remaining": 300, "memory_processed": 50, "memory_total": 200,
           "disk_processed": 50, "disk_total": 200}
FURTHER = {**RUNNING, "data_processed": 300, "data_remaining": 100, "disk_processed": 200}
NONE = {"type": 0}


def feed(signals: Sequence[Signal], job: SourceJob | None = None) -> list[SourceJob]:
    """Every state the job goes through, one per signal (time advancing 1 s per signal)."""
    job = job or new_job("j1", "web", "host2", now=100.0)
    seen = []
    for index, signal in enumerate(signals, start=1):
        job = advance(job, signal, now=100.0 + index)
        seen.append(job)
    return seen


def test_a_migration_that_lands_goes_through_every_phase_and_times_each() -> None:
    states = feed([CheckPassed(), Prepared(), Stats(RUNNING), Stats(FURTHER),
                   MigrationReturned(), FinishConfirmed(40), CleanupDone()])
    assert [s.phase for s in states] == [
        P.PREPARING, P.MIGRATING, P.MIGRATING, P.MIGRATING, P.FINISHING, P.CLEANUP, P.DONE]
    done = states[-1]
    assert done.outcome == "succeeded" and done.error is None and done.downtime_ms == 40
    assert done.phase_seconds == {"check": 1.0, "prepare": 1.0, "migrate": 3.0, "finish": 1.0,
                                  "cleanup": 1.0}
    assert done.finished_at == 107.0
    assert done.progress is not None and done.progress.processed == done.progress.total


def test_repeated_statistics_change_nothing_and_a_job_reading_none_keeps_the_progress() -> None:
    migrating = feed([CheckPassed(), Prepared(), Stats(RUNNING)])[-1]
    assert migrating.progress == MigrationProgress(100, 400, 300, 50, 200, 50, 200)
    assert advance(migrating, Stats(RUNNING), now=200.0) == migrating  # a duplicate
    assert advance(migrating, Stats(NONE), now=201.0) == migrating  # no job right now
    assert advance(migrating, Stats({}), now=202.0) == migrating
    further = advance(migrating, Stats(FURTHER), now=203.0)
    assert further.progress is not None and further.progress.processed == 300
    assert further.phase is P.MIGRATING


def test_statistics_outside_the_migration_are_ignored() -> None:
    preparing = feed([CheckPassed()])[-1]
    assert advance(preparing, Stats(RUNNING), now=300.0) == preparing
    finishing = feed([CheckPassed(), Prepared(), MigrationReturned()])[-1]
    assert advance(finishing, Stats(RUNNING), now=300.0) == finishing


def test_a_destination_that_went_away_during_the_prepare_rolls_back_to_failed() -> None:
    states = feed([CheckPassed(), StepFailed("peer host2 is unreachable"), RolledBack()])
    assert [s.phase for s in states] == [P.PREPARING, P.ROLLING_BACK, P.FAILED]
    assert states[-1].error == "peer host2 is unreachable"
    assert states[-1].outcome == "failed"


def test_a_destination_that_went_away_later_only_delays_the_job() -> None:
    migrating = feed([CheckPassed(), Prepared()])[-1]
    assert advance(migrating, StepFailed("unreachable"), now=300.0) == migrating
    assert advance(migrating, Located(Where.UNKNOWN), now=300.0) == migrating
    assert advance(migrating, Located(Where.MIGRATING), now=300.0) == migrating
    finishing = advance(migrating, MigrationReturned(), now=301.0)
    assert advance(finishing, StepFailed("unreachable"), now=302.0) == finishing
    assert advance(finishing, Located(Where.SOURCE), now=302.0) == finishing


def test_a_failed_call_is_judged_by_where_the_vm_runs() -> None:
    failed = feed([CheckPassed(), Prepared(), MigrationFailed("connection reset")])[-1]
    assert failed.phase is P.MIGRATING and failed.error == "connection reset"
    back = advance(failed, Located(Where.SOURCE), now=300.0)
    assert back.phase is P.ROLLING_BACK and back.error == "connection reset"
    # libvirt can report a failure after the switch-over: the VM runs there, it is finished
    landed = advance(failed, Located(Where.DESTINATION), now=300.0)
    assert landed.phase is P.FINISHING and landed.error is None
    lost = advance(failed, Located(Where.NOWHERE), now=300.0)
    assert lost.phase is P.ROLLING_BACK


def test_an_abort_during_the_copy_ends_aborted_never_done() -> None:
    migrating = feed([CheckPassed(), Prepared(), Stats(RUNNING)])[-1]
    asked = advance(migrating, AbortRequested(), now=300.0)
    assert asked.abort_requested and asked.phase is P.MIGRATING
    assert advance(asked, AbortRequested(), now=301.0) == asked
    states = feed([MigrationFailed("operation aborted"), Located(Where.SOURCE), RolledBack()],
                  asked)
    assert states[-1].phase is P.ABORTED and states[-1].outcome == "aborted"
    assert states[-1].error == "operation aborted"


def test_an_abort_that_came_too_late_lets_the_migration_finish() -> None:
    asked = advance(feed([CheckPassed(), Prepared()])[-1], AbortRequested(), now=300.0)
    done = feed([MigrationReturned(), FinishConfirmed(None), CleanupDone()], asked)[-1]
    assert done.phase is P.DONE and done.outcome == "succeeded"


@pytest.mark.parametrize("signals", [
    [CheckPassed(), Prepared(), MigrationReturned()],
    [CheckPassed(), Prepared(), MigrationReturned(), FinishConfirmed(1)],
    [CheckPassed(), Prepared(), MigrationReturned(), FinishConfirmed(1), CleanupDone()],
    [CheckPassed(), StepFailed("x"), RolledBack()],
])
def test_an_abort_is_refused_once_the_vm_landed_or_the_job_ended(
    signals: list[Signal],
) -> None:
    job = feed(signals)[-1]
    with pytest.raises(Conflict) as refused:
        advance(job, AbortRequested(), now=500.0)
    assert refused.value.code in ("migration.landed", "job.invalid_request")


def test_an_abort_before_the_migration_rolls_back_to_aborted() -> None:
    asked = advance(feed([CheckPassed()])[-1], AbortRequested(), now=300.0)
    states = feed([StepFailed("aborted on request"), RolledBack()], asked)
    assert states[-1].phase is P.ABORTED


def test_a_restart_fails_a_check_and_rolls_back_a_prepare_but_leaves_the_rest() -> None:
    checking = new_job("j1", "web", "host2", now=100.0)
    assert advance(checking, Restarted(), now=101.0).phase is P.FAILED
    preparing = feed([CheckPassed()])[-1]
    assert advance(preparing, Restarted(), now=101.0).phase is P.ROLLING_BACK
    runs: list[list[Signal]] = [[CheckPassed(), Prepared()],
                                [CheckPassed(), Prepared(), MigrationReturned()]]
    for signals in runs:
        job = feed(signals)[-1]
        assert advance(job, Restarted(), now=200.0) == job


def test_a_rollback_refused_because_the_vm_landed_goes_to_finishing() -> None:
    rolling = feed([CheckPassed(), Prepared(), Located(Where.NOWHERE)])[-1]
    assert rolling.phase is P.ROLLING_BACK
    assert advance(rolling, Located(Where.DESTINATION), now=300.0).phase is P.FINISHING


def test_a_job_survives_its_json_form() -> None:
    for job in feed([CheckPassed(), Prepared(), Stats(RUNNING), MigrationFailed("x"),
                     Located(Where.SOURCE), RolledBack()]):
        assert SourceJob.from_json(job.to_json()) == job


def test_statistics_are_read_from_libvirt_names() -> None:
    assert progress_of(NONE) is None
    assert progress_of({"type": 2, "data_processed": 5.0, "data_total": "x"}) == (
        MigrationProgress(5, 0, 0))


@pytest.mark.parametrize(("source", "destination", "where"), [
    (SourceView(True, True, migration_running=True), None, Where.MIGRATING),
    (SourceView(True, True), None, Where.SOURCE),
    (SourceView(True, True), DestinationView(False, False), Where.SOURCE),
    (SourceView(True, True, paused_by_migration=True), DestinationView(True, False, True),
     Where.SOURCE),
    (SourceView(False, False), DestinationView(True, True), Where.DESTINATION),
    (SourceView(True, False), DestinationView(True, True), Where.DESTINATION),
    (SourceView(True, True, paused_by_migration=True), DestinationView(True, True),
     Where.DESTINATION),
    (SourceView(True, True), DestinationView(True, True), Where.UNKNOWN),
    (SourceView(False, False), None, Where.UNKNOWN),
    (SourceView(False, False), DestinationView(True, False, True), Where.MIGRATING),
    (SourceView(False, False), DestinationView(False, False), Where.NOWHERE),
])
def test_where_the_vm_runs(source: SourceView, destination: DestinationView | None,
                           where: Where) -> None:
    assert locate(source, destination) is where


SIGNALS = st.sampled_from([
    CheckPassed(), Prepared(), Stats(RUNNING), Stats(NONE), MigrationReturned(),
    MigrationFailed("failed"), Located(Where.SOURCE), Located(Where.DESTINATION),
    Located(Where.UNKNOWN), Located(Where.NOWHERE), StepFailed("gone"), FinishConfirmed(5),
    CleanupDone(), RolledBack(), AbortRequested(), Restarted(),
])


@settings(max_examples=400, deadline=None)
@given(st.lists(SIGNALS, max_size=25))
def test_done_needs_a_landing_and_failed_needs_a_rollback(signals: list[Signal]) -> None:
    job = new_job("j1", "web", "host2", now=0.0)
    landed = rolled_back = False
    for index, signal in enumerate(signals, start=1):
        try:
            new = advance(job, signal, now=float(index))
        except Conflict:
            assert isinstance(signal, AbortRequested)
            assert job.phase.terminal or job.phase.landed
            continue
        if new.phase is P.FINISHING and job.phase is not P.FINISHING:
            landed = isinstance(signal, MigrationReturned | Located)
        if new.phase in (P.FAILED, P.ABORTED) and job.phase is P.ROLLING_BACK:
            rolled_back = isinstance(signal, RolledBack)
        if job.phase.terminal:
            assert new == job  # an ended job never changes
        job = new
    if job.phase is P.DONE:
        assert landed and job.error is None
    if job.phase is P.ABORTED:
        assert rolled_back and job.abort_requested
    if job.phase is P.FAILED:
        assert rolled_back or job.error == (
            "the agent restarted during the check; nothing had changed")
