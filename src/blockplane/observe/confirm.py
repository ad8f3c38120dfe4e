"""``Confirmer``: the last reconcile step, checking what the agent believes against libvirt.

- IOThread plans: each managed disk's stored mapping against its VM's live XML (one XML read per
  VM with managed disks, parsed once).
- Thin volumes: through the thin monitor's status, a volume of a running VM is confirmed when its
  live threshold is the one the monitor armed; a stopped VM's volume, or one the monitor disabled
  at its ceiling, needs no threshold. The status reuses the stats the thin monitor's own
  reconcile step read moments before in the same pass, instead of a second call.

Everything is checked by ``run_full`` (the agent's full passes: at start, then every full
reconcile period). ``run`` (the quick passes in between) checks only what may have changed or
was not confirmed last time: the IOThread plans of VMs an event named or that disagreed, and the
thin volumes of VMs an event named or with a volume unconfirmed; when nothing happened it reports
the last result at the cost of one SQL query. Returns counts for ``ReconcileLog``; changes
nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from blockplane.errors import BlockplaneError
from blockplane.iothreads.state import iothread_report
from blockplane.observe.ports import ThinStatus, XmlDomain
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.thin.views import ThinVolumeView

log = logging.getLogger(__name__)

#: Bulk stats this old are accepted for the thin check: the thin step's call of the same pass.
STATS_REUSE_S = 10.0
EVENTS_PER_LOOK = 1000
#: Event types that cannot change a domain definition (an IOThread plan).
_NOT_DEFINITION = ("thin.", "volume.", "guest.")

ReuseScope = Callable[[float], AbstractContextManager[None]]


@dataclass(frozen=True)
class PlanCheck:
    plans: int
    agreed: int
    disagreements: tuple[str, ...]


@dataclass(frozen=True)
class Changes:
    everything: bool
    vms: frozenset[str]  # whose definition may have changed
    anything: bool
    touched: frozenset[str]  # named by any event at all


class Confirmer:
    def __init__(
        self,
        lookup: Callable[[str], XmlDomain],
        records: Records,
        events: EventPublisher,
        thin: ThinStatus | None,
        reuse_stats: ReuseScope | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._records = records
        self._events = events
        self._thin = thin
        self._reuse_stats = reuse_stats
        self._clock = clock
        self._plans: dict[str, PlanCheck] = {}
        #: Per VM with thin volumes: (volumes, confirmed).
        self._thin_counts: dict[str, tuple[int, int]] = {}
        self._event_mark = 0
        self._checked_all = False
        #: ``time.time()`` of the last pass that checked anything, for the report.
        self.checked_at: float | None = None

    @property
    def last_disagreements(self) -> list[str]:
        return [line for check in self._plans.values() for line in check.disagreements]

    def run_full(self) -> dict[str, int]:
        """Check everything (a full pass)."""
        return self._run(everything=True)

    def run(self) -> dict[str, int]:
        """Check what changed since the last pass, and what was unconfirmed (a quick pass)."""
        return self._run(everything=False)

    def _run(self, *, everything: bool) -> dict[str, int]:
        changes = self._changes(everything)
        managed = {vm.name for vm in self._records.vms()}
        for gone in set(self._plans) - managed:
            del self._plans[gone]
        unconfirmed = {vm for vm, check in self._plans.items() if check.agreed < check.plans}
        stale = managed if changes.everything else (
            changes.vms | unconfirmed | (managed - set(self._plans)))
        for vm in sorted(stale & managed):
            self._plans[vm] = self._check_plans(vm)
        if self._thin is not None:
            self._check_thin(self._thin, changes)
        if stale or changes.anything:
            self.checked_at = time.time()
        if self.last_disagreements:
            log.warning("IOThread plans differing from libvirt: %s",
                        "; ".join(self.last_disagreements))
        return {
            "iothread_plans": sum(check.plans for check in self._plans.values()),
            "iothread_plans_confirmed": sum(check.agreed for check in self._plans.values()),
            **self._thin_totals(),
        }

    def _changes(self, everything: bool) -> Changes:
        """What the event log says since the last pass; everything on a full pass and the
        first, or when too much happened to tell."""
        newer = self._events.history(after=self._event_mark, limit=EVENTS_PER_LOOK)
        if newer:
            self._event_mark = newer[-1].id
        if everything or not self._checked_all or len(newer) == EVENTS_PER_LOOK:
            self._checked_all = True
            return Changes(True, frozenset(), True, frozenset())
        named = frozenset(
            event.vm for event in newer
            if event.vm is not None and not event.type.startswith(_NOT_DEFINITION)
        )
        touched = frozenset(event.vm for event in newer if event.vm is not None)
        return Changes(False, named, bool(newer), touched)

    def _check_plans(self, vm: str) -> PlanCheck:
        stored = {disk.target: disk.plan for disk in self._records.disks(vm)}
        if not stored:
            return PlanCheck(0, 0, ())
        try:
            report = iothread_report(vm, self._lookup(vm).xml(), stored)
        except BlockplaneError as error:
            return PlanCheck(len(stored), 0, (f"{vm}: {error}",))
        wrong = {line.split(":", 1)[0] for line in report.disagreements}
        agreed = sum(1 for target in stored if target not in wrong)
        return PlanCheck(len(stored), agreed,
                         tuple(f"{vm}/{line}" for line in report.disagreements))

    def _check_thin(self, thin: ThinStatus, changes: Changes) -> None:
        if changes.everything:
            wanted: frozenset[str] | None = None
        else:
            unconfirmed = {vm for vm, (volumes, agreed) in self._thin_counts.items()
                           if agreed < volumes}
            wanted = changes.touched | unconfirmed
            if not wanted:
                return
        if self._reuse_stats is None:
            rows = thin.status(vms=wanted)
        else:
            with self._reuse_stats(STATS_REUSE_S):
                rows = thin.status(vms=wanted)
        counts: dict[str, tuple[int, int]] = {vm: (0, 0) for vm in wanted or ()}
        for row in rows:
            volumes, agreed = counts.get(row.vm, (0, 0))
            counts[row.vm] = (volumes + 1, agreed + int(thin_confirmed(row)))
        if wanted is None:
            self._thin_counts = counts
        else:
            self._thin_counts.update(counts)
        self._thin_counts = {vm: count for vm, count in self._thin_counts.items() if count[0]}

    def _thin_totals(self) -> dict[str, int]:
        if self._thin is None:
            return {}
        return {
            "thin_volumes": sum(volumes for volumes, _ in self._thin_counts.values()),
            "thin_volumes_confirmed": sum(agreed for _, agreed in self._thin_counts.values()),
        }


def thin_confirmed(row: ThinVolumeView) -> bool:
    if not row.running or row.state == "disabled":
        return True
    return row.state == "set" and row.threshold is not None and (
        row.threshold == row.armed_threshold)
