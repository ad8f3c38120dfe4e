"""The adaptive extension step (``thin.adaptive``) from synthetic event sequences.

A small model of a guest writing into a thin volume drives the same pure function and tracker
the extender uses: the writer's allocation grows at a given rate, the threshold fires when it is
passed, the event reaches the agent ``delivery`` later and the extend lands ``latency`` after
that (the writer keeps going meanwhile; the agent's clock sees only ``latency``), and the guest
pauses if it reaches the end first. A writer's first extend is followed, ``MEASURE_AFTER_S``
later, by the measurement of its rate on the host's side; every measured writer's extend by the
crossing's latency read from QEMU's allocation (``crossing_latency``), and by a lower threshold
if it needs one (``reserve_for``, as ``ThinMonitor._measure_crossing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from blockplane.thin.adaptive import (
    LATENCY_FLOOR_S,
    MEASURE_AFTER_S,
    RATE_MAX_AGE_S,
    RATE_WINDOW,
    SAFETY,
    Crossing,
    Growth,
    GrowthTracker,
    WriteSample,
    adaptive_step,
    crossing_latency,
    reserve_for,
    unmeasured_reserve,
    write_rate,
)
from blockplane.thin.threshold import threshold_for

MIB = 1 << 20
GIB = 1 << 30
CHUNK = 64 * MIB
UTILIZATION = 90  # the stress case: a 6.4 MiB reserve
BASE_RESERVE = CHUNK - threshold_for(CHUNK, CHUNK, UTILIZATION)
CEILING = 8 * GIB


@dataclass
class Extend:
    at: float
    rate: float
    step: int
    reserve: int


@dataclass
class Model:
    """One volume, its writer and the extender, in steps of ``tick`` seconds."""

    latency_s: float
    adaptive: bool = True
    delivery_s: float = 0.0
    measure_crossings: bool = True
    pool_free: int | None = None
    physical: int = CHUNK
    allocation: int = 0
    now: float = 0.0
    tick: float = 0.001
    pauses: int = 0
    extends: list[Extend] = field(default_factory=list)
    tracker: GrowthTracker = field(default_factory=GrowthTracker)

    def __post_init__(self) -> None:
        # The first mark: VDSM's, or, adaptive, the room for a writer nobody measured yet.
        first_reserve = unmeasured_reserve(CHUNK, UTILIZATION) if self.adaptive else BASE_RESERVE
        self.threshold = self.physical - first_reserve
        self._landing: tuple[float, int, int, int, float] | None = None
        self._measure_at: float | None = None
        self._unmeasured: Crossing | None = None
        self._rate = 0.0

    def write(self, rate_mib_s: float, seconds: float) -> None:
        """The guest writes at ``rate_mib_s`` for ``seconds`` (it stalls while paused)."""
        end = self.now + seconds
        self._rate = rate_mib_s * MIB
        while self.now < end:
            self.now += self.tick
            self._land()
            self._measure()
            if self.allocation >= self.physical:
                self.pauses += 1
                self._wait_for_room()
                continue
            self.allocation = min(self.allocation + int(rate_mib_s * MIB * self.tick),
                                  self.physical)
            if self.threshold and self.allocation > self.threshold and self._landing is None:
                self._fire()

    def _fire(self) -> None:
        self.threshold = 0  # one-shot, as in QEMU
        rate = self.tracker.observe("v", WriteSample(self.now, self.allocation))
        step = adaptive_step(
            physical=self.physical, allocation=self.allocation,
            rate=rate if self.adaptive else 0.0, latency_s=self.tracker.latency_s("v"),
            chunk=CHUNK, utilization_pct=UTILIZATION, ceiling=CEILING, pool_free=self.pool_free,
            unmeasured=unmeasured_reserve(CHUNK, UTILIZATION) if self.adaptive else 0,
        )
        self.extends.append(Extend(self.now, rate, step.physical - self.physical, step.reserve))
        self.tracker.grown("v", Growth(rate, step.physical - self.physical, step.reserve))
        self._landing = (self.now + self.delivery_s + self.latency_s, step.physical,
                         step.threshold, self.allocation, rate)
        if self.adaptive and rate == 0.0:
            self._measure_at = self._landing[0] + MEASURE_AFTER_S

    def _land(self) -> None:
        if self._landing is not None and self.now >= self._landing[0]:
            _, self.physical, self.threshold, crossed_at, rate = self._landing
            self.tracker.note_latency("v", self.latency_s)
            self._landing = None
            crossing = Crossing(crossed_at, armed_at=self.now)
            if self._measure_at is not None:
                self._unmeasured = crossing
            elif self.adaptive and rate:
                self._measure_crossing(crossing, rate)
            if self.allocation > self.threshold:
                self._fire()

    def _measure(self) -> None:
        if self._measure_at is None or self.now < self._measure_at or not self.threshold:
            return
        self._measure_at = None
        if self._unmeasured is not None:
            self._measure_crossing(self._unmeasured, self._rate)
            if self.allocation > self.threshold:
                self._fire()

    def _measure_crossing(self, crossing: Crossing, rate: float) -> None:
        if self.measure_crossings:
            latency = crossing_latency(crossing, self.allocation, self.now, rate)
            assert latency is not None
            self.tracker.note_crossing("v", latency)
        reserve = reserve_for(rate, self.tracker.latency_s("v"), CHUNK, UTILIZATION)
        if reserve > self.physical - self.threshold:
            self.threshold = self.physical - reserve

    def _wait_for_room(self) -> None:
        while self.allocation >= self.physical and self._landing is not None:
            self.now += self.tick
            self._land()

    @property
    def over_allocation(self) -> int:
        return self.physical - self.allocation


def test_no_rate_is_exactly_vdsm() -> None:
    step = adaptive_step(physical=CHUNK, allocation=CHUNK - BASE_RESERVE + MIB, rate=0.0,
                         latency_s=0.005, chunk=CHUNK, utilization_pct=UTILIZATION,
                         ceiling=CEILING)
    assert (step.physical, step.threshold) == (2 * CHUNK, 2 * CHUNK - BASE_RESERVE)
    assert step.limited_by is None


def test_a_writer_nobody_measured_gets_half_a_chunk() -> None:
    assert unmeasured_reserve(CHUNK, UTILIZATION) == CHUNK // 2
    # The pool's own reserve where it is larger (20% utilization leaves 80% of a chunk).
    assert unmeasured_reserve(CHUNK, 20) == CHUNK - threshold_for(CHUNK, CHUNK, 20)
    # An extend that knows no rate keeps it too.
    step = adaptive_step(physical=CHUNK, allocation=CHUNK // 4, rate=0.0, latency_s=0.005,
                         chunk=CHUNK, utilization_pct=UTILIZATION, ceiling=CEILING,
                         unmeasured=unmeasured_reserve(CHUNK, UTILIZATION))
    assert (step.physical, step.reserve) == (2 * CHUNK, unmeasured_reserve(CHUNK, UTILIZATION))
    # The stress case flat out (550 MiB/s, 50 ms from the crossing to the grown volume): VDSM's
    # first mark (6.4 MiB: 12 ms) pauses the guest; half a chunk (58 ms) does not.
    fixed, adaptive = Model(latency_s=0.05, adaptive=False), Model(latency_s=0.05)
    for model in (fixed, adaptive):
        model.write(550, 0.5)
    assert fixed.pauses >= 1 and fixed.extends[0].at < 0.12
    assert adaptive.pauses == 0 and len(adaptive.extends) >= 3


def test_the_events_trip_from_qemu_is_measured_and_covered() -> None:
    # Crossed at 100 MiB, re-armed at t=1.0; 10 ms later QEMU has 135 MiB at 500 MiB/s: the
    # guest wrote 70 ms' worth since the crossing, 60 of them before the re-arming.
    crossing = Crossing(100 * MIB, armed_at=1.0)
    assert crossing_latency(crossing, 135 * MIB, 1.01, 500 * MIB) == pytest.approx(0.06)
    assert crossing_latency(crossing, 135 * MIB, 1.01, 0.0) is None
    assert crossing_latency(crossing, 100 * MIB, 1.01, 500 * MIB) == 0.0
    tracker = GrowthTracker()
    tracker.note_latency("v", 0.005)
    tracker.note_crossing("v", 0.06)  # the same extend, seen from QEMU's side
    tracker.note_crossing("v", 0.001)  # never shorter than the agent's own clock
    assert tracker.latency_s("v") == 0.06
    # A loaded host: 200 ms from QEMU to the agent, 5 ms of extend, 150 MiB/s flat out. By
    # the agent's clock alone the reserve lasts the 50 ms floor three times (22 MiB): every
    # crossing pauses. Measured from QEMU's side, it lasts 205 ms three times.
    blind = Model(latency_s=0.005, delivery_s=0.2, measure_crossings=False)
    seeing = Model(latency_s=0.005, delivery_s=0.2)
    for model in (blind, seeing):
        model.write(150, 6.0)
    assert blind.pauses >= len(blind.extends) // 2 > 5
    assert seeing.pauses == 0 and len(seeing.extends) > 5
    assert seeing.extends[-1].reserve == pytest.approx(150 * MIB * 0.205 * SAFETY, rel=0.05)
    # What the pool carries beyond the data: the reserve and what the last step added.
    assert seeing.over_allocation <= seeing.extends[-1].reserve + seeing.extends[-1].step


def test_write_rate_needs_two_samples_close_enough() -> None:
    first = WriteSample(10.0, 100 * MIB)
    assert write_rate(None, first) == 0.0
    assert write_rate(first, WriteSample(10.5, 250 * MIB)) == 300 * MIB
    assert write_rate(first, WriteSample(10.0 + RATE_MAX_AGE_S + 1, 900 * MIB)) == 0.0


def test_constant_rate_keeps_a_reserve_for_the_latency_and_steps_one_chunk() -> None:
    fixed, adaptive = Model(latency_s=0.06, adaptive=False), Model(latency_s=0.06)
    for model in (fixed, adaptive):
        model.write(300, 4.0)
    # 6.4 MiB lasts 21 ms at 300 MiB/s: the fixed chunk pauses at every extend.
    assert fixed.pauses >= len(fixed.extends) - 1 > 10
    # Adaptive: the first crossing, with nothing measured, has half a chunk (107 ms here).
    assert adaptive.pauses == 0
    assert {extend.step for extend in adaptive.extends} == {CHUNK}
    later = adaptive.extends[2:]  # from the second one on, sized by the measured rate
    demand = 300 * MIB * 0.06 * SAFETY
    assert all(extend.reserve == pytest.approx(demand, rel=0.05) for extend in later)
    assert all(extend.rate == pytest.approx(300 * MIB, rel=0.05) for extend in later)
    # What the pool carries beyond the data: at most the reserve and one chunk.
    assert adaptive.over_allocation <= demand * 1.05 + CHUNK
    assert adaptive.over_allocation <= fixed.over_allocation + 2 * CHUNK


def test_an_accelerating_writer_gets_larger_steps_and_no_pause() -> None:
    model = Model(latency_s=0.01)
    for rate in (50, 100, 200, 400, 800, 1600):
        model.write(rate, 0.5)
    assert model.pauses == 0
    # The first extend knows no rate (half a chunk); from the second on the reserve follows.
    first, *reserves = [extend.reserve for extend in model.extends]
    assert first == CHUNK // 2
    assert reserves == sorted(reserves) and reserves[-1] > 10 * BASE_RESERVE
    # The reserve grows faster than one chunk per extend at the end: the steps follow.
    assert max(extend.step for extend in model.extends) >= 2 * CHUNK
    assert all(extend.step % CHUNK == 0 for extend in model.extends)


def test_a_fast_writer_whose_demand_passes_a_chunk_steps_several() -> None:
    step = adaptive_step(physical=GIB, allocation=GIB - 200 * MIB, rate=2000 * MIB,
                         latency_s=0.05, chunk=CHUNK, utilization_pct=UTILIZATION,
                         ceiling=CEILING)
    demand = int(2000 * MIB * 0.05 * SAFETY)
    assert step.demand == demand and step.reserve == demand
    # From 200 MiB below the end: 300 MiB to write before the next event, then 300 reserve.
    assert step.physical - GIB == 7 * CHUNK
    assert step.threshold - (GIB - 200 * MIB) >= demand


def test_a_writer_that_stops_or_slows_is_back_to_the_base_step() -> None:
    model = Model(latency_s=0.01)
    model.write(600, 1.0)
    assert model.extends[-1].reserve > BASE_RESERVE
    model.write(0, RATE_MAX_AGE_S + 1)  # stops: no events
    model.write(600, 0.3)  # starts again
    restarted = next(e for e in model.extends if e.at > 1.0 + RATE_MAX_AGE_S)
    # Unknown again: one chunk, and the reserve of a writer nobody measured.
    assert (restarted.rate, restarted.step, restarted.reserve) == (
        0.0, CHUNK, unmeasured_reserve(CHUNK, UTILIZATION))
    slow = Model(latency_s=0.01)
    slow.write(600, 1.0)
    slow.write(20, 40.0)  # slows down (sized by 600 MiB/s for RATE_WINDOW extends, then by
    # 20 MiB/s): 20 MiB/s x 50 ms x 3 is below 6.4 MiB
    last = slow.extends[-1]
    assert last.rate == pytest.approx(20 * MIB, rel=0.05)
    assert (last.step, last.reserve) == (CHUNK, BASE_RESERVE)


def test_a_dip_between_two_events_is_not_a_slower_writer_and_a_pause_is_not_a_rate() -> None:
    tracker = GrowthTracker()
    tracker.observe("v", WriteSample(0.0, 0))
    assert tracker.observe("v", WriteSample(0.1, 40 * MIB)) == pytest.approx(400 * MIB)
    # 127 MiB/s between two events (the guest's vCPU preempted): still sized for 400 MiB/s,
    # for RATE_WINDOW extends.
    assert tracker.observe("v", WriteSample(0.6, 104 * MIB)) == pytest.approx(400 * MIB)
    at, allocation = 0.6, 104 * MIB
    for _ in range(RATE_WINDOW - 2):
        at, allocation = at + 0.5, allocation + 10 * MIB
        assert tracker.observe("v", WriteSample(at, allocation)) == pytest.approx(400 * MIB)
    # A writer that slowed: RATE_WINDOW extends later, its own rate.
    assert tracker.observe("v", WriteSample(at + 0.5, allocation + 10 * MIB)) == pytest.approx(
        127 * MIB, rel=0.01)
    assert tracker.observe("v", WriteSample(at + 1.0, allocation + 20 * MIB)) == pytest.approx(
        20 * MIB)
    # Paused and resumed: the next event starts a new measurement, the writer is unmeasured.
    tracker.restart_rate("v")
    assert tracker.rate("v", 1.2) == 0.0
    assert tracker.observe("v", WriteSample(at + 2.0, allocation + 30 * MIB)) == 0.0
    assert tracker.observe("v", WriteSample(at + 2.1, allocation + 60 * MIB)) == pytest.approx(
        300 * MIB)


def test_the_pool_capacity_limits_the_step() -> None:
    wanted = dict(physical=GIB, allocation=GIB - BASE_RESERVE, rate=2000 * MIB, latency_s=0.05,
                  chunk=CHUNK, utilization_pct=UTILIZATION, ceiling=CEILING)
    free = adaptive_step(**wanted)  # type: ignore[arg-type]
    assert free.physical - GIB == 10 * CHUNK and free.limited_by is None
    tight = adaptive_step(**wanted, pool_free=2 * CHUNK + CHUNK // 2)  # type: ignore[arg-type]
    assert tight.physical - GIB == 2 * CHUNK and tight.limited_by == "pool"
    # The reserve no longer fits above what is written: armed where VDSM would.
    assert tight.threshold == tight.physical - BASE_RESERVE
    # Less than a chunk free: still one chunk, for the backend to refuse (pool.full).
    full = adaptive_step(**wanted, pool_free=CHUNK // 2)  # type: ignore[arg-type]
    assert full.physical - GIB == CHUNK and full.limited_by == "pool"
    model = Model(latency_s=0.01, pool_free=CHUNK)
    model.write(800, 1.0)
    assert {extend.step for extend in model.extends} == {CHUNK}


def test_the_qcow2_ceiling_limits_the_step() -> None:
    step = adaptive_step(physical=CEILING - CHUNK, allocation=CEILING - CHUNK - BASE_RESERVE,
                         rate=2000 * MIB, latency_s=0.05, chunk=CHUNK,
                         utilization_pct=UTILIZATION, ceiling=CEILING)
    assert (step.physical, step.limited_by) == (CEILING, "ceiling")


def test_the_latency_is_the_slowest_recent_extend_and_never_below_the_floor() -> None:
    tracker = GrowthTracker()
    assert tracker.latency_s("v") == 0.0
    for latency in (0.004, 0.035, 0.006):
        tracker.note_latency("v", latency)
    assert tracker.latency_s("v") == 0.035
    for _ in range(8):
        tracker.note_latency("v", 0.005)
    assert tracker.latency_s("v") == 0.005
    step = adaptive_step(physical=GIB, allocation=GIB - BASE_RESERVE, rate=1000 * MIB,
                         latency_s=0.005, chunk=CHUNK, utilization_pct=UTILIZATION,
                         ceiling=CEILING)
    assert step.latency_s == LATENCY_FLOOR_S
