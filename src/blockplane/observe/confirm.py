"""``Confirmer``: the last reconcile step, checking what the agent believes against libvirt.

- IOThread plans: each managed disk's stored mapping against its VM's live XML (one XML read per
  VM with managed disks, parsed once).
- Thin volumes: through the thin monitor's status, a volume of a running VM is confirmed when its
  live threshold is the one the monitor armed; a stopped VM's volume, or one the monitor disabled
  at its ceiling, needs no threshold. The status reuses the bulk stats the thin monitor's own
  reconcile step read moments before in the same pass, instead of a second call.

It checks everything on the first pass (agent start) and then every ``FULL_EVERY_S``; passes in
between report the last result, since the features' own reconcile steps already repair what they
find and a full check costs one XML read per VM. Returns counts for ``ReconcileLog``; changes
nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from blockplane.errors import BlockplaneError
from blockplane.store.records import Records
from blockplane.vms.iothread_state import iothread_report

log = logging.getLogger(__name__)

FULL_EVERY_S = 30.0
#: Bulk stats this old are accepted for the thin check: the thin step's call of the same pass.
STATS_REUSE_S = 10.0

ReuseScope = Callable[[float], AbstractContextManager[None]]


class XmlDomain(Protocol):
    def xml(self, *, inactive: bool = False) -> str: ...


class ThinStatus(Protocol):
    def status(self, vm: str | None = None) -> list[dict[str, Any]]: ...


class Confirmer:
    def __init__(
        self,
        lookup: Callable[[str], XmlDomain],
        records: Records,
        thin: ThinStatus | None,
        reuse_stats: ReuseScope | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._records = records
        self._thin = thin
        self._reuse_stats = reuse_stats
        self._clock = clock
        self.last_disagreements: list[str] = []
        self.last_counts: dict[str, int] = {}
        #: ``time.time()`` of the last full check, for the report.
        self.checked_at: float | None = None
        self._checked: float | None = None

    def run(self) -> dict[str, int]:
        if self._checked is not None and self._clock() - self._checked < FULL_EVERY_S:
            return self.last_counts
        self.last_counts = self.check()
        return self.last_counts

    def check(self) -> dict[str, int]:
        plans, agreed, disagreements = self._iothread_plans()
        counts = {"iothread_plans": plans, "iothread_plans_confirmed": agreed}
        if self._thin is not None:
            if self._reuse_stats is None:
                rows = self._thin.status()
            else:
                with self._reuse_stats(STATS_REUSE_S):
                    rows = self._thin.status()
            counts["thin_volumes"] = len(rows)
            counts["thin_volumes_confirmed"] = sum(1 for row in rows if thin_confirmed(row))
        self.last_disagreements = disagreements
        self._checked, self.checked_at = self._clock(), time.time()
        return counts

    def _iothread_plans(self) -> tuple[int, int, list[str]]:
        plans = agreed = 0
        disagreements: list[str] = []
        for vm in self._records.vms():
            stored = {disk.target: disk.plan for disk in self._records.disks(vm.name)}
            if not stored:
                continue
            plans += len(stored)
            try:
                report = iothread_report(self._lookup(vm.name).xml(), stored)
            except BlockplaneError as error:
                disagreements.append(f"{vm.name}: {error}")
                continue
            wrong = {line.split(":", 1)[0] for line in report["disagreements"]}
            agreed += sum(1 for target in stored if target not in wrong)
            disagreements.extend(f"{vm.name}/{line}" for line in report["disagreements"])
        if disagreements:
            log.warning("IOThread plans differing from libvirt: %s", "; ".join(disagreements))
        return plans, agreed, disagreements


def thin_confirmed(row: dict[str, Any]) -> bool:
    if not row.get("running") or row.get("state") == "disabled":
        return True
    return bool(
        row.get("state") == "set"
        and row.get("threshold") is not None
        and row.get("threshold") == row.get("armed_threshold")
    )
