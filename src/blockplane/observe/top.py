"""``TopService``: the data behind ``blockplane top`` and the per-disk metrics.

Each refresh makes ONE bulk stats call (state and block groups of every running domain, the
same groups the thin monitor reads, so a caller that accepts a moment-old answer can share its
call) and computes rates against the newest earlier sample at least ``MIN_WINDOW_S`` old (any
caller's: top clients and metric scrapes share the history). Only a first frame with no such
sample waits one window and samples again. Effective limits and the IOThread count come from
each domain's live XML, parsed once and cached until an event names the VM (or
``LIMITS_TTL_S`` passes), so a refresh does not re-read 100 XML documents. Thin fill is the
same sample's allocation and physical size. Running jobs come from the job service when the
agent has one. Observes only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blockplane.chain.jobs.views import JobView
from blockplane.errors import BlockplaneError, InvalidInput
from blockplane.hypervisor.bulk_stats import DiskSample, DomainSample, domain_sample
from blockplane.hypervisor.connection import STATS_BLOCK, STATS_STATE
from blockplane.hypervisor.domain import STATE_NAMES
from blockplane.model.view import view_fields
from blockplane.observe.limits import DomainLimits, domain_limits
from blockplane.observe.ports import JobsView, StatsSource
from blockplane.observe.rates import DiskRates, disk_rates
from blockplane.observe.views import DiskRow, JobBrief, Rates, TopFrame, Totals, VMRow
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records, VolumeRecord

MIN_WINDOW_S = 0.2
MAX_BASELINE_AGE_S = 120.0
HISTORY = 8
LIMITS_TTL_S = 60.0
SORT_KEYS = ("name", "iops", "bw", "fill")
ENDED_PHASES = ("cleanup", "done", "failed", "aborted")
STATS_GROUPS = STATS_STATE | STATS_BLOCK
#: Event types that never change a domain's definition; every other event naming a VM does.
_DEFINITION_NEUTRAL = ("thin.", "volume.", "guest.")


@dataclass(frozen=True)
class Sample:
    #: When the bulk stats call started (the clock's time), and how long it took (0: reused).
    at: float
    wall: float
    call_seconds: float
    domains: dict[str, DomainSample]


class TopService:
    def __init__(
        self,
        hypervisor: StatsSource,
        records: Records,
        events: EventPublisher,
        jobs: JobsView | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._events = events
        self.jobs = jobs
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._history: deque[Sample] = deque(maxlen=HISTORY)
        self._limits: dict[str, tuple[float, DomainLimits]] = {}
        self._event_mark: int | None = None
        self.stats_calls = 0

    def sample(self, max_age_s: float = 0.0) -> Sample:
        """One bulk stats call (or a kept answer at most ``max_age_s`` old), kept as a baseline
        for later rates."""
        started = self._clock()
        snapshot = self._hypervisor.bulk_snapshot(STATS_GROUPS, max_age_s)
        fresh = snapshot.taken_at >= started
        with self._lock:
            known = next((s for s in self._history if s.at == snapshot.taken_at), None)
        if known is not None:
            return known
        sample = Sample(
            at=snapshot.taken_at,
            wall=time.time() - (self._clock() - snapshot.taken_at),
            call_seconds=self._clock() - started if fresh else 0.0,
            domains={vm: domain_sample(vm, stats) for vm, stats in snapshot.records},
        )
        with self._lock:
            self.stats_calls += int(fresh)
            self._history.append(sample)
        return sample

    def age_s(self, sample: Sample) -> float:
        return self._clock() - sample.at

    def baseline(self, now: Sample) -> Sample | None:
        with self._lock:
            earlier = [s for s in self._history if s is not now and s.at <= now.at - MIN_WINDOW_S]
        fresh = [s for s in earlier if now.at - s.at <= MAX_BASELINE_AGE_S]
        return max(fresh, key=lambda s: s.at) if fresh else None

    def _volume_of(self, vm: str, target: str) -> VolumeRecord | None:
        """A network disk (rbd) has no path in the bulk stats: its disk record names it."""
        disk = self._records.disk(vm, target)
        return self._records.volume(disk.pool, disk.volume) if disk is not None else None

    def limits(self, vm: str) -> DomainLimits | None:
        """``vm``'s effective limits, from its cached parsed live XML (``expire_changed`` first)."""
        with self._lock:
            cached = self._limits.get(vm)
        if cached is not None and self._clock() - cached[0] < LIMITS_TTL_S:
            return cached[1]
        try:
            parsed = domain_limits(self._hypervisor.lookup(vm).xml())
        except BlockplaneError:
            return None
        with self._lock:
            self._limits[vm] = (self._clock(), parsed)
        return parsed

    def frame(
        self, *, vm: str | None = None, sort: str = "name", window_s: float = 1.0
    ) -> TopFrame:
        if sort not in SORT_KEYS:
            raise InvalidInput(
                f"unknown sort key {sort!r}: use one of {', '.join(SORT_KEYS)}", code="top.invalid"
            )
        calls_before = self.stats_calls
        self.expire_changed()
        now = self.sample()
        before = self.baseline(now)
        if before is None:
            self._sleep(max(window_s, MIN_WINDOW_S))
            before, now = now, self.sample()
        seconds = now.at - before.at
        volumes = {volume.path: volume for volume in self._records.volumes()}
        jobs = self._running_jobs(vm)
        rows: list[DiskRow] = []
        vms: list[VMRow] = []
        for name in sorted(now.domains):
            if vm is not None and name != vm:
                continue
            domain = now.domains[name]
            previous = before.domains.get(name)
            limits = self.limits(name)
            iothreads = limits.iothreads if limits is not None else 0
            disk_rows = [
                _disk_row(domain, disk, _rates(previous, disk, seconds), limits,
                          volumes.get(disk.path) or self._volume_of(name, disk.target),
                          jobs.get((name, disk.target), ()), iothreads)
                for disk in domain.disks
            ]
            rows.extend(disk_rows)
            vms.append(_vm_row(domain, disk_rows, iothreads))
        rows.sort(key=_SORTS[sort])
        return TopFrame(
            at=now.wall,
            window_s=round(seconds, 3),
            stats_calls=self.stats_calls - calls_before,
            stats_call_s=round(now.call_seconds, 4),
            sort=sort,
            vm=vm,
            jobs_available=self.jobs is not None,
            totals=Totals(vms=len(vms), disks=len(rows), **view_fields(_sums(rows))),
            vms=tuple(vms),
            disks=tuple(rows),
        )

    def _running_jobs(self, vm: str | None) -> dict[tuple[str, str], tuple[JobBrief, ...]]:
        if self.jobs is None:
            return {}
        running: dict[tuple[str, str], tuple[JobBrief, ...]] = {}
        for job in running_jobs(self.jobs, vm):
            end = job.progress.end if job.progress else 0
            cur = job.progress.cur if job.progress else 0
            brief = JobBrief(job.id, job.kind, job.phase,
                             round(100.0 * cur / end, 1) if end else None)
            running[(job.vm, job.target)] = (*running.get((job.vm, job.target), ()), brief)
        return running

    def expire_changed(self) -> None:
        """Drop the cached limits of every VM an event named since the last look."""
        with self._lock:
            mark = self._event_mark
        if mark is None:
            latest = self._events.history(limit=1)
            with self._lock:
                self._event_mark = latest[-1].id if latest else 0
            return
        newer = self._events.history(after=mark, limit=1000)
        if not newer:
            return
        with self._lock:
            self._event_mark = newer[-1].id
            if len(newer) == 1000:
                self._limits.clear()  # more happened than we read: start over
                return
            for event in newer:
                if event.vm is not None and not event.type.startswith(_DEFINITION_NEUTRAL):
                    self._limits.pop(event.vm, None)


def running_jobs(jobs: JobsView, vm: str | None = None) -> list[JobView]:
    """Jobs that have not ended, each with libvirt's live progress where it has one."""
    found = []
    for job in jobs.list(vm):
        if job.phase in ENDED_PHASES:
            continue
        with contextlib.suppress(BlockplaneError):
            job = jobs.show(job.id)
        found.append(job)
    return found


def _rates(previous: DomainSample | None, disk: DiskSample, seconds: float) -> DiskRates:
    before = previous.disk(disk.target) if previous is not None else None
    if before is not None and before.path != disk.path:
        before = None  # a pivot or a new disk under the same name: its counters restarted
    return disk_rates(before, disk, seconds)


def _disk_row(
    domain: DomainSample,
    disk: DiskSample,
    rates: DiskRates,
    limits: DomainLimits | None,
    volume: VolumeRecord | None,
    jobs: tuple[JobBrief, ...],
    iothreads: int,
) -> DiskRow:
    disk_limits = limits.disk(disk.target) if limits is not None else None
    effective = disk_limits.effective if disk_limits is not None else {}
    return DiskRow(
        vm=domain.vm,
        target=disk.target,
        path=disk.path,
        pool=volume.pool if volume else None,
        volume=volume.name if volume else None,
        thin=volume.thin if volume else False,
        read_iops=round(rates.read_iops, 1),
        write_iops=round(rates.write_iops, 1),
        read_bytes_per_s=round(rates.read_bytes_per_s),
        write_bytes_per_s=round(rates.write_bytes_per_s),
        iops_limit=effective.get("total_iops_sec"),
        bytes_limit=effective.get("total_bytes_sec"),
        limits=effective,
        bound_by=disk_limits.bound_by if disk_limits is not None else {},
        chain=disk_limits.chain if disk_limits is not None else (),
        virtual=disk.capacity,
        physical=disk.physical,
        allocation=disk.allocation,
        fill_pct=round(100.0 * disk.allocation / disk.physical, 1) if disk.physical else None,
        threshold=disk.threshold,
        iothreads=iothreads,
        jobs=jobs,
    )


def _vm_row(domain: DomainSample, rows: list[DiskRow], iothreads: int) -> VMRow:
    return VMRow(
        vm=domain.vm,
        state=STATE_NAMES.get(domain.state, "unknown") if domain.state is not None else None,
        iothreads=iothreads,
        disks=len(rows),
        **view_fields(_sums(rows)),
    )


def _sums(rows: list[DiskRow]) -> Rates:
    return Rates(
        read_iops=round(sum(float(row.read_iops) for row in rows), 1),
        write_iops=round(sum(float(row.write_iops) for row in rows), 1),
        read_bytes_per_s=round(sum(float(row.read_bytes_per_s) for row in rows), 1),
        write_bytes_per_s=round(sum(float(row.write_bytes_per_s) for row in rows), 1),
    )


def _fill(row: DiskRow) -> float:
    return -float(row.fill_pct) if row.fill_pct is not None else 1.0


_SORTS: dict[str, Callable[[DiskRow], Any]] = {
    "name": lambda row: (row.vm, row.target),
    "iops": lambda row: (-(row.read_iops + row.write_iops), row.vm, row.target),
    "bw": lambda row: (
        -(row.read_bytes_per_s + row.write_bytes_per_s), row.vm, row.target
    ),
    "fill": lambda row: (_fill(row), row.vm, row.target),
}
