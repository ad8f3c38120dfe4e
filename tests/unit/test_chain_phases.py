"""The block-job phase machine from synthetic BLOCK_JOB_2 sequences, reconcile observations and
requests, including duplicated, reordered and missing events (event orders as libvirt 11.3 sent
them for commit, active commit, copy and pull are in the table)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockplane.chain.jobs.phases import (
    AbortRequested,
    CleanupDone,
    Effect,
    JobAbsent,
    JobEventObserved,
    JobInfoObserved,
    JobSignal,
    PivotFailed,
    PivotIssued,
    PivotObserved,
    PivotRequested,
    Request,
    RestartAction,
    Started,
    StartFailed,
    advance,
    restart_action,
)
from blockplane.chain.jobs.state import (
    BlockJobStatus,
    JobKind,
    JobPhase,
    JobState,
    Outcome,
    Progress,
    new_job,
)
from blockplane.errors import Conflict, InvalidInput

COMMIT, ACTIVE, PULL, COPY, BACKUP = (JobKind.COMMIT, JobKind.ACTIVE_COMMIT, JobKind.PULL,
                                      JobKind.COPY, JobKind.BACKUP)
P = JobPhase
TYPE = {JobKind.PULL: 1, JobKind.COPY: 2, JobKind.COMMIT: 3, JobKind.ACTIVE_COMMIT: 4,
        JobKind.BACKUP: 5}


def ev(kind: JobKind, status: BlockJobStatus) -> JobEventObserved:
    return JobEventObserved(status, TYPE[kind])


def completed(kind: JobKind) -> JobEventObserved:
    return ev(kind, BlockJobStatus.COMPLETED)


def failed(kind: JobKind) -> JobEventObserved:
    return ev(kind, BlockJobStatus.FAILED)


def canceled(kind: JobKind) -> JobEventObserved:
    return ev(kind, BlockJobStatus.CANCELED)


def ready(kind: JobKind) -> JobEventObserved:
    return ev(kind, BlockJobStatus.READY)


def job(kind: JobKind, pivot: bool = False) -> JobState:
    return new_job("j1", "vm1", "vda", kind, now=0.0, pivot=pivot)


def run(state: JobState, signals: Sequence[JobSignal]) -> JobState:
    for step, signal in enumerate(signals, start=1):
        state = advance(state, signal, now=float(step))
    return state


# (kind, pivot at creation, signals, final phase, outcome, point_in_time_copy)
SEQUENCES: list[tuple[str, JobKind, bool, list[JobSignal], JobPhase, Outcome | None, bool]] = [
    ("intermediate commit", COMMIT, False,
     [Started(), completed(COMMIT), CleanupDone()], P.DONE, Outcome.SUCCEEDED, False),
    ("COMPLETED before the start was recorded", COMMIT, False,
     [completed(COMMIT), Started()], P.CLEANUP, Outcome.SUCCEEDED, False),
    ("duplicated COMPLETED", COMMIT, False,
     [Started(), completed(COMMIT), completed(COMMIT), CleanupDone(), completed(COMMIT)],
     P.DONE, Outcome.SUCCEEDED, False),
    ("commit failed", COMMIT, False,
     [Started(), failed(COMMIT), CleanupDone()], P.FAILED, Outcome.FAILED, False),
    ("FAILED then a stray COMPLETED", COMMIT, False,
     [Started(), failed(COMMIT), completed(COMMIT), CleanupDone()],
     P.FAILED, Outcome.FAILED, False),
    ("cancelled by someone else", PULL, False,
     [Started(), canceled(PULL), CleanupDone()], P.ABORTED, Outcome.ABORTED, False),
    ("pull aborted", PULL, False,
     [Started(), AbortRequested(), canceled(PULL), CleanupDone()],
     P.ABORTED, Outcome.ABORTED, False),
    ("abort raced with completion: the commit did happen", COMMIT, False,
     [Started(), AbortRequested(), completed(COMMIT)], P.CLEANUP, Outcome.SUCCEEDED, False),
    ("READY means nothing to a commit", COMMIT, False,
     [Started(), ready(COMMIT)], P.RUNNING, None, False),
    ("another job's event", COMMIT, False,
     [Started(), failed(PULL), completed(ACTIVE)], P.RUNNING, None, False),
    ("cur == end is not ready", COPY, False,
     [Started(), JobInfoObserved(5, 10), JobInfoObserved(10, 10)], P.RUNNING, None, False),
    ("the XML's ready='yes' is", COPY, False,
     [Started(), JobInfoObserved(10, 10, ready=True)], P.READY, None, False),
    ("READY twice", COPY, False,
     [Started(), ready(COPY), ready(COPY)], P.READY, None, False),
    ("active commit with pivot", ACTIVE, True,
     [Started(), ready(ACTIVE), PivotIssued(), completed(ACTIVE), PivotObserved(False),
      PivotObserved(True), CleanupDone()], P.DONE, Outcome.SUCCEEDED, False),
    ("COMPLETED without XML confirmation is not DONE", ACTIVE, True,
     [Started(), ready(ACTIVE), PivotIssued(), completed(ACTIVE), completed(ACTIVE)],
     P.PIVOTING, None, False),
    ("pivot confirmed with the COMPLETED event missing", COPY, True,
     [Started(), ready(COPY), PivotIssued(), PivotObserved(True), CleanupDone()],
     P.DONE, Outcome.SUCCEEDED, False),
    ("XML confirmation before the COMPLETED event", COPY, True,
     [Started(), ready(COPY), PivotIssued(), PivotObserved(True), completed(COPY)],
     P.CLEANUP, Outcome.SUCCEEDED, False),
    ("READY missed, COMPLETED first", COPY, True,
     [Started(), completed(COPY), PivotObserved(True)], P.CLEANUP, Outcome.SUCCEEDED, False),
    ("copy aborted after READY leaves a point-in-time copy", COPY, False,
     [Started(), ready(COPY), AbortRequested(), canceled(COPY), CleanupDone()],
     P.ABORTED, Outcome.ABORTED, True),
    ("READY reordered after the abort request", COPY, False,
     [Started(), AbortRequested(), ready(COPY), canceled(COPY)],
     P.CLEANUP, Outcome.ABORTED, True),
    ("copy aborted before READY is no copy", COPY, False,
     [Started(), AbortRequested(), canceled(COPY), CleanupDone()],
     P.ABORTED, Outcome.ABORTED, False),
    ("active commit aborted after READY keeps the top", ACTIVE, False,
     [Started(), ready(ACTIVE), AbortRequested(), canceled(ACTIVE), CleanupDone()],
     P.ABORTED, Outcome.ABORTED, False),
    ("pivot cancelled", COPY, True,
     [Started(), ready(COPY), PivotIssued(), canceled(COPY)], P.CLEANUP, Outcome.ABORTED, True),
    ("pivot refused, then retried", COPY, False,
     [Started(), ready(COPY), PivotRequested(), PivotIssued(), PivotFailed("not ready"),
      PivotRequested(), PivotIssued(), PivotObserved(True)],
     P.CLEANUP, Outcome.SUCCEEDED, False),
    ("missed COMPLETED, chain shows the commit", COMMIT, False,
     [Started(), JobAbsent(Effect.APPLIED), CleanupDone()], P.DONE, Outcome.SUCCEEDED, False),
    ("vanished, chain unchanged", PULL, False,
     [Started(), JobAbsent(Effect.NOT_APPLIED), CleanupDone()], P.FAILED, Outcome.FAILED, False),
    ("vanished, outcome unverifiable", BACKUP, False,
     [Started(), JobAbsent(Effect.UNKNOWN), CleanupDone()], P.FAILED, Outcome.FAILED, False),
    ("vanished after an abort request", COPY, False,
     [Started(), ready(COPY), AbortRequested(), JobAbsent(Effect.NOT_APPLIED)],
     P.CLEANUP, Outcome.ABORTED, False),
    ("COMPLETED but the chain shows no pivot", COPY, True,
     [Started(), ready(COPY), PivotIssued(), completed(COPY), JobAbsent(Effect.NOT_APPLIED)],
     P.CLEANUP, Outcome.FAILED, False),
    ("never started", COPY, False,
     [StartFailed("no space"), CleanupDone()], P.FAILED, Outcome.FAILED, False),
    ("backup", BACKUP, False,
     [Started(), ready(BACKUP), completed(BACKUP), CleanupDone()],
     P.DONE, Outcome.SUCCEEDED, False),
]


@pytest.mark.parametrize(
    ("kind", "pivot", "signals", "phase", "outcome", "copy"),
    [pytest.param(*row[1:], id=row[0]) for row in SEQUENCES],
)
def test_sequences(kind: JobKind, pivot: bool, signals: list[JobSignal], phase: JobPhase,
                   outcome: Outcome | None, copy: bool) -> None:
    final = run(job(kind, pivot), signals)
    assert (final.phase, final.outcome, final.point_in_time_copy) == (phase, outcome, copy)
    if outcome is not None and outcome is not Outcome.SUCCEEDED and final.abort_requested is False:
        assert final.error


def test_failures_carry_a_reason() -> None:
    final = run(job(COPY), [Started(), canceled(COPY)])
    assert final.error == "the job was cancelled outside blockplane"
    assert run(job(COMMIT), [Started(), failed(COMMIT)]).libvirt_status is BlockJobStatus.FAILED
    refused = run(job(COPY), [Started(), ready(COPY), PivotRequested(), PivotIssued(),
                              PivotFailed("disk busy")])
    assert (refused.phase, refused.pivot_requested, refused.error) == (P.READY, False, "disk busy")


def test_progress_and_timestamps() -> None:
    state = run(job(COPY), [Started(), JobInfoObserved(3, 12)])
    assert state.progress == Progress(3, 12) and state.progress.fraction == 0.25
    assert (state.created_at, state.updated_at, state.finished_at) == (0.0, 2.0, None)
    unchanged = advance(state, JobInfoObserved(3, 12), now=99.0)
    assert unchanged is state
    ended = advance(state, canceled(COPY), now=5.0)
    assert (ended.updated_at, ended.finished_at) == (5.0, 5.0)
    done = advance(ended, CleanupDone(), now=7.0)
    assert (done.updated_at, done.finished_at) == (7.0, 5.0)
    assert advance(state, Started()) is state
    assert Progress(0, 0).fraction == 0.0


def test_ready_and_success_report_the_whole_job_done() -> None:
    # A reading taken just before the READY event must not be shown after it (a bar would go
    # back from 100% to it); a failure keeps the last reading as it was.
    ready_copy = run(job(COPY, pivot=True), [Started(), JobInfoObserved(2, 3), ready(COPY)])
    assert ready_copy.progress == Progress(3, 3)
    pivoting = run(ready_copy, [PivotIssued(), completed(COPY)])
    assert pivoting.phase is P.PIVOTING and pivoting.progress == Progress(3, 3)
    pulled = run(job(PULL), [Started(), JobInfoObserved(5, 8), completed(PULL)])
    assert pulled.outcome is Outcome.SUCCEEDED and pulled.progress == Progress(8, 8)
    broken = run(job(PULL), [Started(), JobInfoObserved(5, 8), failed(PULL)])
    assert broken.outcome is Outcome.FAILED and broken.progress == Progress(5, 8)
    assert run(job(PULL), [Started(), completed(PULL)]).progress is None


def test_json_round_trip() -> None:
    state = run(job(COPY, pivot=True), [Started(), JobInfoObserved(1, 2), ready(COPY),
                                        AbortRequested(), canceled(COPY)])
    assert JobState.from_json(state.to_json()) == state
    assert state.to_json()["libvirt_status"] == "CANCELED"
    fresh = job(PULL)
    assert JobState.from_json(fresh.to_json()) == fresh


def test_pivot_only_for_mirror_jobs() -> None:
    with pytest.raises(InvalidInput) as caught:
        job(COMMIT, pivot=True)
    assert caught.value.code == "job.invalid_request"


# (kind, signals to reach a state, the invalid request)
INVALID: list[tuple[JobKind, list[JobSignal], JobSignal]] = [
    (COMMIT, [Started()], PivotRequested()),
    (PULL, [], PivotRequested()),
    (COPY, [], AbortRequested()),
    (COPY, [Started(), ready(COPY), PivotRequested(), PivotIssued()], AbortRequested()),
    (COPY, [Started(), AbortRequested()], PivotRequested()),
    (COPY, [Started()], PivotIssued()),
    (COPY, [Started(), ready(COPY)], PivotIssued()),
    (COPY, [Started(), ready(COPY)], PivotFailed("x")),
    (COPY, [Started()], StartFailed("x")),
    (COPY, [Started()], CleanupDone()),
    (COMMIT, [Started(), completed(COMMIT)], AbortRequested()),
    (COMMIT, [Started(), completed(COMMIT), CleanupDone()], AbortRequested()),
    (COPY, [Started(), canceled(COPY), CleanupDone()], PivotRequested()),
    (COPY, [Started(), canceled(COPY), CleanupDone()], PivotIssued()),
]


@pytest.mark.parametrize(("kind", "signals", "request_"), INVALID)
def test_invalid_requests(kind: JobKind, signals: list[JobSignal], request_: JobSignal) -> None:
    state = run(job(kind), signals)
    with pytest.raises(Conflict) as caught:
        advance(state, request_)
    assert caught.value.code == "job.invalid_request"
    assert caught.value.exit_code == 2


def test_repeated_requests_are_harmless() -> None:
    state = run(job(COPY), [Started(), ready(COPY), PivotRequested(), PivotIssued()])
    assert advance(state, PivotRequested()) == state
    assert advance(state, PivotIssued()) == state
    aborting = run(job(COPY), [Started(), AbortRequested()])
    assert advance(aborting, AbortRequested()) == aborting
    completing = run(job(COPY), [Started(), ready(COPY), PivotRequested(), PivotIssued(),
                                 completed(COPY)])
    # libvirt said COMPLETED: a late error from the pivot call does not undo it.
    assert advance(completing, PivotFailed("timeout")) == completing
    assert advance(run(completing, [PivotObserved(True)]), PivotFailed("late")).outcome is (
        Outcome.SUCCEEDED
    )


def _at(kind: JobKind, signals: list[JobSignal], pivot: bool = False) -> JobState:
    return run(job(kind, pivot), signals)


RESTART: list[tuple[JobState, bool, RestartAction]] = [
    (_at(COPY, []), True, RestartAction.TRACK),
    (_at(COPY, []), False, RestartAction.RECORD_OUTCOME),
    (_at(COMMIT, [Started()]), True, RestartAction.TRACK),
    (_at(COMMIT, [Started()]), False, RestartAction.RECORD_OUTCOME),
    (_at(COPY, [Started(), ready(COPY)]), True, RestartAction.TRACK),
    (_at(COPY, [Started(), ready(COPY)], pivot=True), True, RestartAction.PIVOT),
    (_at(COPY, [Started(), ready(COPY)], pivot=True), False, RestartAction.RECORD_OUTCOME),
    (_at(COPY, [Started(), ready(COPY), PivotIssued()], pivot=True), True,
     RestartAction.CONFIRM_PIVOT),
    (_at(COPY, [Started(), ready(COPY), PivotIssued()], pivot=True), False,
     RestartAction.CONFIRM_PIVOT),
    (_at(COPY, [Started(), AbortRequested()]), True, RestartAction.ABORT),
    (_at(COPY, [Started(), AbortRequested()]), False, RestartAction.RECORD_OUTCOME),
    (_at(PULL, [Started(), completed(PULL)]), False, RestartAction.CLEANUP),
    (_at(PULL, [Started(), completed(PULL), CleanupDone()]), False, RestartAction.NONE),
    (_at(PULL, [Started(), failed(PULL), CleanupDone()]), True, RestartAction.NONE),
]


@pytest.mark.parametrize(("state", "present", "action"), RESTART)
def test_restart_actions(state: JobState, present: bool, action: RestartAction) -> None:
    assert restart_action(state, present) is action


def test_restart_after_the_job_finished_unseen() -> None:
    """SIGKILLed in RUNNING; the commit finished while the agent was down."""
    state = _at(COMMIT, [Started(), JobInfoObserved(1, 9)])
    assert restart_action(state, job_present=False) is RestartAction.RECORD_OUTCOME
    state = advance(state, JobAbsent(Effect.APPLIED))
    assert restart_action(state, job_present=False) is RestartAction.CLEANUP
    state = advance(state, CleanupDone())
    assert (state.phase, restart_action(state, False)) == (P.DONE, RestartAction.NONE)


# ---- properties over arbitrary signal sequences -------------------------------------------------

STATUSES = st.sampled_from(list(BlockJobStatus))


def signals_for(kind: JobKind) -> st.SearchStrategy[JobSignal]:
    event_types = st.sampled_from([None, TYPE[kind], TYPE[kind], 99])
    return st.one_of(
        st.builds(JobEventObserved, STATUSES, event_types),
        st.builds(JobInfoObserved, st.integers(0, 100), st.integers(0, 100), st.booleans()),
        st.builds(JobAbsent, st.sampled_from(list(Effect))),
        st.builds(PivotObserved, st.booleans()),
        st.sampled_from([Started(), PivotRequested(), AbortRequested(), PivotIssued(),
                         CleanupDone(), StartFailed("boom"), PivotFailed("nope")]),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[JobState, list[JobSignal]]:
    kind = draw(st.sampled_from(list(JobKind)))
    pivot = kind.mirrors and draw(st.booleans())
    signals = draw(st.lists(signals_for(kind), max_size=30))
    # Duplicate some signals in place, as libvirt and reconcile both may.
    doubled = [s for signal in signals for s in ([signal] * draw(st.integers(1, 2)))]
    return job(kind, pivot), doubled


def _matches(state: JobState, signal: JobSignal) -> bool:
    return isinstance(signal, JobEventObserved) and signal.job_type in (None, TYPE[state.kind])


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_properties_of_any_sequence(scenario: tuple[JobState, list[JobSignal]]) -> None:
    state, signals = scenario
    failure_first = False
    saw_ready = False
    for signal in signals:
        before = state
        try:
            state = advance(state, signal, now=1.0)
        except Conflict as error:
            assert isinstance(signal, Request), f"{signal!r} is an observation: it must not raise"
            assert error.code == "job.invalid_request"
            continue
        ours = _matches(before, signal)
        live = before.outcome is None
        if live and state.outcome is Outcome.SUCCEEDED:
            # Only these facts may make a job a success.
            assert signal in (PivotObserved(True), JobAbsent(Effect.APPLIED)) or (
                ours and not state.kind.mirrors and isinstance(signal, JobEventObserved)
                and signal.status is BlockJobStatus.COMPLETED
            ), signal
        if live and ours and isinstance(signal, JobEventObserved) and signal.status in (
                BlockJobStatus.FAILED, BlockJobStatus.CANCELED):
            failure_first = True
        if live and isinstance(signal, JobAbsent) and signal.effect is not Effect.APPLIED:
            failure_first = True
        ready_event = isinstance(signal, JobEventObserved) and (
            signal.status is BlockJobStatus.READY)
        ready_info = isinstance(signal, JobInfoObserved) and signal.ready and live
        if (ours and ready_event) or ready_info:
            saw_ready = True
        # Terminal is terminal; a recorded outcome is never rewritten.
        if before.phase.terminal:
            assert state == before
        if before.outcome is not None:
            assert state.outcome is before.outcome
        if state.phase.ended:
            assert state.outcome is not None
        else:
            assert state.outcome is None
        # Duplicates are idempotent for every observation.
        if not isinstance(signal, Request):
            assert advance(state, signal, now=1.0) == state
    if failure_first:
        assert state.phase is not P.DONE and state.outcome is not Outcome.SUCCEEDED
    if state.phase is P.READY or state.ready:
        assert state.kind.mirrors and saw_ready
    if state.point_in_time_copy:
        assert state.kind is JobKind.COPY and state.ready and state.outcome is Outcome.ABORTED
    if state.progress is not None and state.outcome is Outcome.SUCCEEDED:
        assert state.progress.cur == state.progress.end


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([ACTIVE, COPY]), st.lists(signals_for(COPY), max_size=30))
def test_mirror_jobs_are_done_only_after_the_xml_shows_the_pivot(
    kind: JobKind, raw: list[JobSignal]
) -> None:
    state = job(kind, pivot=True)
    confirmed = False
    for signal in raw:
        if isinstance(signal, JobEventObserved):
            signal = JobEventObserved(signal.status, TYPE[kind])
        before = state
        try:
            state = advance(state, signal)
        except Conflict:
            continue
        if before.outcome is None and state.outcome is Outcome.SUCCEEDED:
            confirmed = signal in (PivotObserved(True), JobAbsent(Effect.APPLIED))
    if state.phase is P.DONE:
        assert confirmed


# Real failing runs (no success evidence in them), to be shuffled, duplicated and cut short.
FAILING_RUNS: list[tuple[JobKind, list[JobSignal]]] = [
    (COMMIT, [Started(), JobInfoObserved(1, 9), JobInfoObserved(9, 9), failed(COMMIT),
              JobAbsent(Effect.NOT_APPLIED), CleanupDone()]),
    (PULL, [Started(), AbortRequested(), canceled(PULL), JobAbsent(Effect.UNKNOWN),
            CleanupDone()]),
    (COPY, [Started(), ready(COPY), JobInfoObserved(9, 9, ready=True), PivotRequested(),
            AbortRequested(), canceled(COPY), CleanupDone()]),
    (ACTIVE, [Started(), ready(ACTIVE), PivotRequested(), PivotIssued(), completed(ACTIVE),
              PivotObserved(False), JobAbsent(Effect.NOT_APPLIED), CleanupDone()]),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(FAILING_RUNS).flatmap(
    lambda run_: st.tuples(st.just(run_[0]), st.permutations(run_[1] + run_[1][2:4]))
), st.integers(0, 12))
def test_failing_runs_never_succeed_in_any_order(
    scenario: tuple[JobKind, list[JobSignal]], cut: int
) -> None:
    kind, signals = scenario
    state = job(kind, pivot=kind.mirrors)
    for signal in signals[: len(signals) - cut]:
        try:
            state = advance(state, signal)
        except Conflict:
            continue
    assert state.outcome is not Outcome.SUCCEEDED and state.phase is not P.DONE
