"""The thin monitor state machine and reconcile decisions from synthetic stats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.hypervisor.bulk_stats import BlockStats
from blockplane.thin.monitor_state import (
    Action,
    Armed,
    Event,
    Extended,
    GrowthPolicy,
    ImpossibleTransition,
    MonitorState,
    ReachedCap,
    Reconciled,
    Reenabled,
    ThresholdFired,
    reconcile,
    reconcile_decision,
    transition,
)

UNSET, SET, EXCEEDED, DISABLED = (MonitorState.UNSET, MonitorState.SET, MonitorState.EXCEEDED,
                                  MonitorState.DISABLED)
MIB = 1 << 20
POLICY = GrowthPolicy(chunk_bytes=256 * MIB, utilization_pct=20, max_physical_bytes=2048 * MIB)
# With one 256 MiB chunk at 20%, the mark sits 204.8 MiB below the end.
RESERVE = 80 * 256 * MIB // 100

# Every (state, event) pair that is allowed, and where it leads.
ALLOWED: list[tuple[MonitorState, Event, MonitorState]] = [
    (UNSET, Armed(100), SET),
    (SET, Armed(200), SET),
    (UNSET, ThresholdFired(True), EXCEEDED),
    (SET, ThresholdFired(True), EXCEEDED),
    (EXCEEDED, ThresholdFired(True), EXCEEDED),
    (DISABLED, ThresholdFired(True), DISABLED),
    (UNSET, ThresholdFired(False), UNSET),
    (SET, ThresholdFired(False), SET),
    (EXCEEDED, ThresholdFired(False), EXCEEDED),
    (DISABLED, ThresholdFired(False), DISABLED),
    (UNSET, Extended(512 * MIB), UNSET),
    (SET, Extended(512 * MIB), UNSET),
    (EXCEEDED, Extended(512 * MIB), UNSET),
    (UNSET, ReachedCap(), DISABLED),
    (SET, ReachedCap(), DISABLED),
    (EXCEEDED, ReachedCap(), DISABLED),
    (DISABLED, ReachedCap(), DISABLED),
    (DISABLED, Reenabled(), UNSET),
    (UNSET, Reconciled(BlockStats(10, 100, None)), UNSET),
    (UNSET, Reconciled(BlockStats(10, 100, 50)), SET),
    (SET, Reconciled(BlockStats(10, 100, 50)), SET),
    (SET, Reconciled(BlockStats(10, 100, None)), EXCEEDED),
    (SET, Reconciled(BlockStats(50, 100, 50)), EXCEEDED),
    (SET, Reconciled(BlockStats(90, 100, 50)), EXCEEDED),
    (EXCEEDED, Reconciled(BlockStats(10, 100, 50)), EXCEEDED),
    (EXCEEDED, Reconciled(BlockStats(10, 100, None)), EXCEEDED),
    (DISABLED, Reconciled(BlockStats(10, 100, None)), DISABLED),
    (DISABLED, Reconciled(BlockStats(10, 100, 50)), DISABLED),
]

REFUSED: list[tuple[MonitorState, Event]] = [
    (EXCEEDED, Armed(100)),
    (DISABLED, Armed(100)),
    (UNSET, Armed(0)),
    (SET, Armed(-1)),
    (DISABLED, Extended(512 * MIB)),
    (UNSET, Extended(0)),
    (UNSET, Reenabled()),
    (SET, Reenabled()),
    (EXCEEDED, Reenabled()),
]


@pytest.mark.parametrize(("state", "event", "after"), ALLOWED)
def test_allowed_transitions(state: MonitorState, event: Event, after: MonitorState) -> None:
    assert transition(state, event) is after


@pytest.mark.parametrize(("state", "event"), REFUSED)
def test_impossible_transitions_are_refused(state: MonitorState, event: Event) -> None:
    with pytest.raises(ImpossibleTransition) as caught:
        transition(state, event)
    assert caught.value.state is state
    assert state.name in str(caught.value)


def test_every_state_and_event_kind_is_covered() -> None:
    covered = {(state, type(event)) for state, event, _ in ALLOWED}
    covered |= {(state, type(event)) for state, event in REFUSED}
    kinds = {Armed, ThresholdFired, Extended, ReachedCap, Reconciled, Reenabled}
    assert covered == {(state, kind) for state in MonitorState for kind in kinds}


def test_the_normal_cycle() -> None:
    state = UNSET
    for event in (Armed(100), ThresholdFired(False), ThresholdFired(True), Extended(512 * MIB),
                  Armed(300)):
        state = transition(state, event)
    assert state is SET


def test_non_events_are_rejected() -> None:
    with pytest.raises(TypeError):
        transition(UNSET, "armed")  # type: ignore[arg-type]


sizes = st.integers(min_value=-2, max_value=4096)
stats = st.builds(BlockStats, sizes, sizes, st.none() | sizes)
events = st.one_of(
    st.builds(Armed, sizes),
    st.builds(ThresholdFired, st.booleans()),
    st.builds(Extended, sizes),
    st.just(ReachedCap()),
    st.builds(Reconciled, stats),
    st.just(Reenabled()),
)


@given(st.sampled_from(MonitorState), st.lists(events, max_size=40))
def test_any_event_sequence_keeps_a_valid_state(start: MonitorState, sequence: list[Event]
                                                ) -> None:
    state = start
    for event in sequence:
        before = state
        try:
            state = transition(state, event)
        except ImpossibleTransition:
            assert not isinstance(event, ThresholdFired | Reconciled | ReachedCap)
            continue
        assert isinstance(state, MonitorState)
        if before is DISABLED:
            assert state is DISABLED or isinstance(event, Reenabled)
        if isinstance(event, ThresholdFired) and not event.index_matches:
            assert state is before
        if isinstance(event, Armed):
            assert state is SET
        if isinstance(event, Extended):
            assert state is UNSET


@given(st.sampled_from(MonitorState), stats, st.booleans())
def test_reconcile_always_decides(state: MonitorState, observed: BlockStats,
                                  paused: bool) -> None:
    decision = reconcile(state, observed, paused, POLICY)
    assert decision.reason
    assert reconcile_decision(state, observed, paused, POLICY) is decision.action
    if state is DISABLED:
        assert decision.action is Action.NONE
    usable = observed.physical > 0 and observed.allocation >= 0
    if not usable:
        assert decision.action is Action.NONE
    if paused and usable and state is not DISABLED \
            and observed.physical < POLICY.max_physical_bytes:
        assert decision.action in (Action.EXTEND_AND_RESUME, Action.RESUME)
    if decision.action is Action.RESUME:
        assert paused and state is SET and observed.threshold is not None
        assert observed.allocation <= observed.physical


def test_healthy_armed_volume_needs_nothing() -> None:
    physical = 512 * MIB
    armed = physical - RESERVE
    decision = reconcile(SET, BlockStats(armed - 1, physical, armed), False, POLICY)
    assert decision.action is Action.NONE
    assert not decision.missed_event


def test_missing_threshold_is_treated_as_exceeded() -> None:
    decision = reconcile(SET, BlockStats(10 * MIB, 512 * MIB, None), False, POLICY)
    assert decision.action is Action.EXTEND
    assert decision.missed_event


def test_allocation_past_the_armed_threshold_is_treated_as_exceeded() -> None:
    armed = 512 * MIB - RESERVE
    decision = reconcile(SET, BlockStats(armed + 1, 512 * MIB, armed), False, POLICY)
    assert decision.action is Action.EXTEND
    assert decision.missed_event


def test_exceeded_volume_is_extended() -> None:
    decision = reconcile(EXCEEDED, BlockStats(10 * MIB, 512 * MIB, None), False, POLICY)
    assert decision.action is Action.EXTEND
    assert not decision.missed_event


def test_unset_volume_is_armed_or_extended() -> None:
    physical = 512 * MIB
    below = BlockStats(physical - RESERVE - 1, physical, None)
    past = BlockStats(physical - RESERVE, physical, None)
    assert reconcile_decision(UNSET, below, False, POLICY) is Action.ARM
    assert reconcile_decision(UNSET, past, False, POLICY) is Action.EXTEND


def test_unset_volume_too_small_for_a_threshold_is_extended() -> None:
    tiny = BlockStats(0, 100 * MIB, None)
    assert reconcile_decision(UNSET, tiny, False, POLICY) is Action.EXTEND


def test_threshold_in_the_wrong_place_is_rearmed() -> None:
    physical = 1024 * MIB
    stale = BlockStats(10 * MIB, physical, 512 * MIB - RESERVE)
    assert reconcile_decision(SET, stale, False, POLICY) is Action.ARM


def test_paused_on_enospc_is_extended_then_resumed() -> None:
    full = BlockStats(512 * MIB, 512 * MIB, None)
    for state in (UNSET, SET, EXCEEDED):
        assert reconcile_decision(state, full, True, POLICY) is Action.EXTEND_AND_RESUME
    assert reconcile(SET, full, True, POLICY).missed_event


def test_volume_at_its_ceiling_is_disabled_even_when_paused() -> None:
    at_cap = BlockStats(100 * MIB, POLICY.max_physical_bytes, None)
    assert reconcile_decision(SET, at_cap, False, POLICY) is Action.DISABLE
    assert reconcile_decision(UNSET, at_cap, True, POLICY) is Action.DISABLE
    assert reconcile_decision(DISABLED, at_cap, True, POLICY) is Action.NONE


@pytest.mark.parametrize(("chunk", "pct", "ceiling"), [(0, 20, MIB), (MIB, 101, MIB),
                                                       (MIB, 20, 0)])
def test_policy_refuses_nonsense(chunk: int, pct: int, ceiling: int) -> None:
    with pytest.raises(ValueError):
        GrowthPolicy(chunk, pct, ceiling)


def test_paused_but_already_grown_is_only_resumed() -> None:
    physical = 512 * MIB
    armed = physical - RESERVE
    grown = BlockStats(armed - MIB, physical, armed)
    assert reconcile_decision(SET, grown, True, POLICY) is Action.RESUME
    # A failed write past the end shows in allocation: that one still needs room.
    past_end = BlockStats(physical + MIB, physical, armed)
    assert reconcile_decision(SET, past_end, True, POLICY) is Action.EXTEND_AND_RESUME


def test_threshold_cleared_below_the_mark_is_rearmed_not_extended() -> None:
    physical = 512 * MIB
    armed = physical - RESERVE
    restarted = BlockStats(10 * MIB, physical, None)
    decision = reconcile(SET, restarted, False, POLICY, armed=armed)
    assert decision.action is Action.ARM
    assert not decision.missed_event
    crossed = BlockStats(armed + 1, physical, None)
    decision = reconcile(SET, crossed, False, POLICY, armed=armed)
    assert decision.action is Action.EXTEND
    assert decision.missed_event


def test_unusable_stats_change_nothing() -> None:
    for broken in (BlockStats(0, 0, None), BlockStats(-1, 512 * MIB, None)):
        assert reconcile_decision(SET, broken, True, POLICY) is Action.NONE
