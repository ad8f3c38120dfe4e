"""The per-volume thin monitor state machine and the reconcile decision, as pure functions.

States follow VDSM's thinp.py: UNSET (no threshold armed), SET (armed; the armed value is kept by
the caller alongside the state), EXCEEDED (crossed: an extend is due), DISABLED (at the size
ceiling: no more monitoring). Observations (a threshold event, bulk stats) never raise: they are
facts. Our own actions in a state where they make no sense raise ``ImpossibleTransition``.
Must not perform I/O, persist anything or talk to libvirt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from blockplane.hypervisor.bulk_stats import BlockStats
from blockplane.thin.threshold import should_disable, threshold_for


class MonitorState(Enum):
    UNSET = "unset"
    SET = "set"
    EXCEEDED = "exceeded"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Armed:
    value: int


@dataclass(frozen=True)
class ThresholdFired:
    """``index_matches``: the event named the indexed target we armed (``vda[1]``), not the
    duplicate that libvirt also sends for the bare ``vda``."""

    index_matches: bool


@dataclass(frozen=True)
class Extended:
    new_physical: int


@dataclass(frozen=True)
class ReachedCap:
    pass


@dataclass(frozen=True)
class Reconciled:
    stats: BlockStats


@dataclass(frozen=True)
class Reenabled:
    """The ceiling moved (the virtual disk was resized): monitoring may start again."""


Event = Armed | ThresholdFired | Extended | ReachedCap | Reconciled | Reenabled


class ImpossibleTransition(ValueError):
    def __init__(self, state: MonitorState, event: Event, why: str) -> None:
        super().__init__(f"{event!r} is not possible in state {state.name}: {why}")
        self.state = state
        self.event = event


def transition(state: MonitorState, event: Event) -> MonitorState:
    """The state after ``event``; raises ImpossibleTransition for an action that cannot apply."""
    match event:
        case Armed(value):
            if state in (MonitorState.DISABLED, MonitorState.EXCEEDED):
                why = ("the volume is at its ceiling" if state is MonitorState.DISABLED
                       else "allocation is already past the mark: extend first")
                raise ImpossibleTransition(state, event, why)
            if value <= 0:
                raise ImpossibleTransition(state, event, "QEMU reads a threshold <= 0 as disarm")
            return MonitorState.SET
        case ThresholdFired(index_matches):
            if not index_matches or state is MonitorState.DISABLED:
                return state
            # Even in UNSET: a threshold we did not know of fired, so space is short.
            return MonitorState.EXCEEDED
        case Extended(new_physical):
            if state is MonitorState.DISABLED:
                raise ImpossibleTransition(state, event, "the volume is at its ceiling")
            if new_physical <= 0:
                raise ImpossibleTransition(state, event, "a volume size must be positive")
            return MonitorState.UNSET
        case ReachedCap():
            return MonitorState.DISABLED
        case Reconciled(stats):
            return _observe(state, stats)
        case Reenabled():
            if state is not MonitorState.DISABLED:
                raise ImpossibleTransition(state, event, "only a disabled volume is re-enabled")
            return MonitorState.UNSET
    raise TypeError(f"not a monitor event: {event!r}")


def _observe(state: MonitorState, stats: BlockStats) -> MonitorState:
    if state is MonitorState.SET and (stats.threshold is None
                                      or stats.allocation >= stats.threshold):
        return MonitorState.EXCEEDED
    if state is MonitorState.UNSET and stats.threshold is not None:
        return MonitorState.SET
    return state


class Action(Enum):
    NONE = "none"
    ARM = "arm"
    EXTEND = "extend"
    EXTEND_AND_RESUME = "extend_and_resume"
    RESUME = "resume"
    DISABLE = "disable"


@dataclass(frozen=True)
class GrowthPolicy:
    """A volume's growth step, trigger and ceiling (``storage.qcow2.qcow2_max_physical``).

    ``reserve_bytes``: the room to leave above the threshold when more than VDSM's
    ``(100 - utilization)%`` of a chunk (the adaptive extension's, ``thin.adaptive``).
    """

    chunk_bytes: int
    utilization_pct: int
    max_physical_bytes: int
    reserve_bytes: int = 0

    def __post_init__(self) -> None:
        threshold_for(0, self.chunk_bytes, self.utilization_pct)
        if self.max_physical_bytes <= 0:
            raise ValueError(f"ceiling must be positive, got {self.max_physical_bytes}")

    def threshold(self, physical: int) -> int:
        """Where the threshold belongs at ``physical`` bytes (0: none fits, extend)."""
        base = threshold_for(physical, self.chunk_bytes, self.utilization_pct)
        return max(min(base, physical - self.reserve_bytes), 0)


@dataclass(frozen=True)
class ReconcileDecision:
    """``missed_event``: reconcile found a crossing no event reported (counted in metrics)."""

    action: Action
    reason: str
    missed_event: bool = False


def reconcile(
    state: MonitorState,
    stats: BlockStats,
    paused_enospc: bool,
    policy: GrowthPolicy,
    *,
    armed: int | None = None,
) -> ReconcileDecision:
    """What the periodic (and start-up) reconcile must do for one volume, and why.

    ``armed`` is the threshold we last set, as recorded; without it a vanished threshold always
    counts as fired. With it, a threshold that vanished while allocation stayed below it was
    cleared, not crossed (the VM was restarted), and is simply armed again.
    """
    decide = ReconcileDecision
    if state is MonitorState.DISABLED:
        return decide(Action.NONE, "monitoring is disabled: the volume is at its ceiling")
    if stats.physical <= 0 or stats.allocation < 0:
        return decide(Action.NONE, "the stats carry no usable sizes: look again later")
    if should_disable(stats.physical, policy.max_physical_bytes):
        return decide(Action.DISABLE, "the volume reached its ceiling")
    armed_in_qemu = state is MonitorState.SET and stats.threshold is not None
    if paused_enospc:
        if armed_in_qemu and stats.allocation <= stats.physical:
            # The failed write did not pass the end we have now: it was grown since.
            return decide(Action.RESUME, "the VM is paused on ENOSPC; the volume has room")
        return decide(Action.EXTEND_AND_RESUME, "the VM is paused on ENOSPC",
                      missed_event=state is MonitorState.SET)
    if state is MonitorState.EXCEEDED:
        return decide(Action.EXTEND, "the threshold was crossed and the extend is pending")
    expected = policy.threshold(stats.physical)
    if state is MonitorState.SET:
        if stats.threshold is None and (armed is None or stats.allocation >= armed):
            return decide(Action.EXTEND, "the armed threshold is gone: it fired unseen",
                          missed_event=True)
        if stats.threshold is not None and stats.allocation >= stats.threshold:
            return decide(Action.EXTEND, "allocation is past the armed threshold",
                          missed_event=True)
    if expected == 0 or stats.allocation >= expected:
        return decide(Action.EXTEND, "allocation is past where the threshold belongs")
    if state is MonitorState.UNSET or stats.threshold != expected:
        return decide(Action.ARM, f"the threshold belongs at {expected}")
    return decide(Action.NONE, "armed where it belongs")


def reconcile_decision(
    volume_state: MonitorState, stats: BlockStats, paused_enospc: bool, policy: GrowthPolicy
) -> Action:
    """``reconcile(...).action``."""
    return reconcile(volume_state, stats, paused_enospc, policy).action
