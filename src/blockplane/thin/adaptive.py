"""Adaptive extension: how far to grow a thin volume, and where to arm its next threshold, from
how fast the guest writes it.

VDSM grows a volume by one fixed chunk and arms the threshold ``(100 - utilization)%`` of a chunk
below the end. That reserve, not the extender, sets the fastest writer that never pauses: the
guest keeps writing while the event travels and the extend runs. Here the reserve follows the
writer, measured at every extend:

- ``demand = rate x latency x SAFETY``: what the guest may write while one extend is under way,
  with ``rate`` from the allocation at this event and the one before it (``write_rate``) and
  ``latency`` the slowest of the volume's last extends (QEMU's crossing to re-armed, at least
  ``LATENCY_FLOOR_S``): timed from the event's arrival, and then, for a measured writer, from
  QEMU's allocation read just after the re-arming (``crossing_latency``), which also counts
  the event's trip from QEMU (tens of milliseconds on a loaded host, and not on our clock);
- ``reserve = max(base reserve, demand)``, the base reserve being VDSM's;
- the new size: the allocation at the event, plus ``demand`` to write before the next event,
  plus the reserve, in whole chunks, at least one chunk more than now, at most the qcow2 ceiling
  and what the pool has free;
- the threshold: the new size minus the reserve.

A writer that slows is back to the base reserve and one chunk within a few extends (it is sized
by its fastest rate over its last ``RATE_WINDOW`` extends); one that stopped (an earlier sample
older than ``RATE_MAX_AGE_S`` gives no rate) or was paused is unmeasured again: one chunk, as
VDSM steps. A writer nobody has measured (a fresh volume, any volume after an agent restart, an
extend with no rate) gets at least half a chunk of reserve (``unmeasured_reserve``), whatever
the pool's utilization: VDSM's 10% at 90% lasts less than one extend at the rates a guest
reaches here. Its writer is measured right after the first extend, from the host's own count of
bytes written to the volume's device over ``MEASURE_AFTER_S`` (``reserve_for``), so that its
next crossing already has its reserve. The reserve grows rather than the step because at 90%
utilization a reserve of 10% of the step would need a step ten times the demand, all of it
carried by the pool.

Pure functions and a small per-volume tracker; must not call QEMU, libvirt or the backends.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from blockplane.thin.threshold import base_reserve as vdsm_reserve

#: How many times the measured extend latency the reserve must last at the measured rate.
SAFETY = 3.0
#: The least latency assumed, measured or not: the event's trip from QEMU, which the agent sees
#: only after the extend, varies from one crossing to the next on a loaded host (a CI run's
#: writer paused once with a floor of 20 ms, its smallest reserve 20 ms x 3 of its writing).
LATENCY_FLOOR_S = 0.05
#: The extends whose latency counts (the slowest of them).
LATENCY_WINDOW = 8
#: An earlier allocation sample this old says nothing of the current writer.
RATE_MAX_AGE_S = 10.0
#: Samples closer together than this are too coarse for a rate (QEMU counts whole requests).
RATE_MIN_INTERVAL_S = 0.02
#: The extends whose rates size a writer (the fastest of them): a dip between two events, the
#: guest's vCPU preempted on a loaded host, is not a writer that slowed down.
RATE_WINDOW = 4
#: A writer first seen at an extend is measured over this long after it (host-side counters).
MEASURE_AFTER_S = 0.03
#: The least reserve, in chunks, above the mark of a volume whose writer is not measured yet
#: (half a chunk: 32 MiB of a 64 MiB chunk last 60 ms at 530 MiB/s, several extends here; pools
#: at 50% utilization or less keep their own).
UNMEASURED_RESERVE_FRACTION = 0.5


@dataclass(frozen=True)
class WriteSample:
    """QEMU's allocation (highest written offset) of a volume at ``at`` (``time.monotonic()``)."""

    at: float
    allocation: int


def write_rate(earlier: WriteSample | None, later: WriteSample,
               max_age_s: float = RATE_MAX_AGE_S) -> float:
    """Bytes per second written between two samples; 0.0 when they say nothing of a writer."""
    if earlier is None:
        return 0.0
    interval = later.at - earlier.at
    if interval < RATE_MIN_INTERVAL_S or interval > max_age_s:
        return 0.0
    return max(later.allocation - earlier.allocation, 0) / interval


@dataclass(frozen=True)
class Step:
    """One extend's plan: grow to ``physical``, then arm at ``threshold``."""

    physical: int
    threshold: int
    reserve: int
    demand: int
    rate: float
    latency_s: float
    limited_by: str | None = None  # "ceiling" or "pool" when that cut the step short

    def growth(self, current_physical: int) -> int:
        return self.physical - current_physical


def adaptive_step(
    *,
    physical: int,
    allocation: int | None,
    rate: float,
    latency_s: float,
    chunk: int,
    utilization_pct: int,
    ceiling: int,
    pool_free: int | None = None,
    safety: float = SAFETY,
    unmeasured: int = 0,
) -> Step:
    """Where to grow a volume of ``physical`` bytes whose threshold just fired (see module).

    ``allocation``: QEMU's allocation at the event (None: unknown, taken as right at the base
    threshold). ``pool_free``: bytes the pool may still grow by (None: no limit). At least one
    chunk more unless the ceiling is nearer; the caller refuses what the pool cannot hold.
    ``unmeasured``: the least reserve when ``rate`` is 0 (no writer measured; 0: VDSM's).
    """
    if rate < 0 or latency_s < 0:
        raise ValueError("rate and latency must not be negative")
    base_reserve = vdsm_reserve(chunk, utilization_pct)
    latency = max(latency_s, LATENCY_FLOOR_S)
    demand = int(rate * latency * safety)
    reserve = reserve_for(rate, latency_s, chunk, utilization_pct, safety)
    if rate == 0:
        reserve = max(reserve, unmeasured)
    at = physical - base_reserve if allocation is None else allocation
    chunks = max(1, -(-(at + demand + reserve - physical) // chunk))
    wanted = physical + chunks * chunk
    limited_by = None
    if pool_free is not None and wanted - physical > pool_free:
        wanted = physical + max(pool_free // chunk, 1) * chunk
        limited_by = "pool"
    if wanted >= ceiling:
        wanted = max(ceiling, physical)
        limited_by = "ceiling"
    threshold = wanted - reserve
    if threshold <= at:
        # Cut short: the whole reserve no longer fits above what is written. Arm where VDSM
        # would; if that is passed already, the next event comes at once and finds the limit.
        threshold = wanted - base_reserve
    return Step(physical=wanted, threshold=max(threshold, 0), reserve=wanted - threshold,
                demand=demand, rate=rate, latency_s=latency, limited_by=limited_by)


def reserve_for(
    rate: float, latency_s: float, chunk: int, utilization_pct: int, safety: float = SAFETY
) -> int:
    """The room to leave above the threshold for a writer at ``rate`` bytes/s: what it writes
    in ``safety`` times the extend latency, at least VDSM's reserve."""
    demand = int(rate * max(latency_s, LATENCY_FLOOR_S) * safety)
    return max(vdsm_reserve(chunk, utilization_pct), demand)


@dataclass(frozen=True)
class Crossing:
    """A threshold QEMU crossed: its allocation then (the event's threshold plus excess), and
    when the extend that answered it had armed the next one (``time.monotonic()``)."""

    allocation: int
    armed_at: float


def crossing_latency(crossing: Crossing, allocation: int, read_at: float,
                     rate: float) -> float | None:
    """Seconds from QEMU's crossing to the re-arming, from what the guest wrote meanwhile at
    ``rate``: ``allocation`` is QEMU's, read at ``read_at`` (after the re-arming). The
    extend's own clock starts when the event arrives and cannot see its trip from QEMU, which
    a loaded host makes the longer part. None without a rate."""
    if rate <= 0:
        return None
    return max((allocation - crossing.allocation) / rate - (read_at - crossing.armed_at), 0.0)


def unmeasured_reserve(chunk: int, utilization_pct: int) -> int:
    """The room above the first mark of a volume whose writer nobody measured yet: VDSM's,
    but at least ``UNMEASURED_RESERVE_FRACTION`` of a chunk."""
    return max(vdsm_reserve(chunk, utilization_pct), int(chunk * UNMEASURED_RESERVE_FRACTION))


@dataclass(frozen=True)
class Growth:
    """What ``thin status`` shows of a volume's last extend: the rate it measured, the bytes it
    added, the reserve it left."""

    rate: float
    step: int
    reserve: int


class GrowthTracker:
    """Per volume, in memory: the last allocation sample, the rates and latencies of the last
    extends, and the last step. Forgotten on restart (the first extend after it is a base step)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[object, WriteSample] = {}
        self._measured: dict[object, deque[float]] = {}
        self._latencies: dict[object, deque[float]] = {}
        self._growth: dict[object, Growth] = {}

    def observe(self, key: object, sample: WriteSample) -> float:
        """Note the allocation at ``sample.at``; return the writer's rate: the fastest of those
        measured between the samples of its last ``RATE_WINDOW`` extends (0.0: unmeasured).

        Samples too close together for a rate keep the earlier one as the baseline and the
        last rate; a sample older than the baseline is ignored.
        """
        with self._lock:
            earlier = self._samples.get(key)
            if earlier is not None and (sample.at < earlier.at
                                        or sample.at - earlier.at < RATE_MIN_INTERVAL_S):
                return self._fastest(key)
            measured = self._measured.setdefault(key, deque(maxlen=RATE_WINDOW))
            rate = write_rate(earlier, sample)
            if rate > 0:
                measured.append(rate)
            else:
                measured.clear()
            self._samples[key] = sample
            return self._fastest(key)

    def _fastest(self, key: object) -> float:
        return max(self._measured.get(key, ()), default=0.0)

    def restart_rate(self, key: object) -> None:
        """The guest was paused: the time to the next sample says nothing of its writer, which
        is unmeasured again (and measured at its next extend)."""
        with self._lock:
            for table in (self._samples, self._measured):
                table.pop(key, None)

    def rate(self, key: object, now: float | None = None) -> float:
        """The last rate measured (0.0: none, or its sample older than ``RATE_MAX_AGE_S``
        at ``now``)."""
        with self._lock:
            sample = self._samples.get(key)
            if sample is None or (now is not None and now - sample.at > RATE_MAX_AGE_S):
                return 0.0
            return self._fastest(key)

    def latency_s(self, key: object) -> float:
        """The slowest of the last ``LATENCY_WINDOW`` extends (0.0 before the first)."""
        with self._lock:
            window = self._latencies.get(key)
            return max(window) if window else 0.0

    def grown(self, key: object, growth: Growth) -> None:
        """An extend grew the volume: the reserve to arm from now on, and what status shows."""
        with self._lock:
            self._growth[key] = growth

    def note_latency(self, key: object, latency_s: float) -> None:
        with self._lock:
            self._latencies.setdefault(key, deque(maxlen=LATENCY_WINDOW)).append(latency_s)

    def note_crossing(self, key: object, latency_s: float) -> None:
        """The last extend's latency seen from QEMU's side (``crossing_latency``): it replaces
        the extend's own measure when longer."""
        with self._lock:
            window = self._latencies.setdefault(key, deque(maxlen=LATENCY_WINDOW))
            if not window:
                window.append(latency_s)
            elif latency_s > window[-1]:
                window[-1] = latency_s

    def reserve(self, key: object) -> int | None:
        """The reserve the last extend armed, None before one (the base reserve applies)."""
        with self._lock:
            growth = self._growth.get(key)
            return growth.reserve if growth else None

    def growth(self, key: object) -> Growth | None:
        with self._lock:
            return self._growth.get(key)

    def forget(self, key: object) -> None:
        with self._lock:
            for table in (self._samples, self._measured, self._latencies, self._growth):
                table.pop(key, None)
