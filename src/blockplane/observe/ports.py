"""The narrow views of the hypervisor, the thin monitor and the jobs that observe/ is given.

``hypervisor.Hypervisor``/``DomainHandle``, ``thin.monitor.ThinMonitor`` and
``chain.jobs.service.JobsService`` satisfy these structurally; unit tests pass small fakes. Owns
no behaviour.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from blockplane.chain.jobs.views import JobView
from blockplane.hypervisor.stats_reuse import StatsSnapshot
from blockplane.thin.views import ThinVolumeView


class XmlDomain(Protocol):
    def xml(self, *, inactive: bool = False) -> str: ...


class StatsSource(Protocol):
    def bulk_snapshot(self, stats: int = 0, max_age_s: float | None = None) -> StatsSnapshot: ...

    def lookup(self, name: str) -> XmlDomain: ...


class JobsView(Protocol):
    def list(self, vm: str | None = None) -> list[JobView]: ...

    def show(self, job_id: str) -> JobView: ...


class ThinStatus(Protocol):
    def status(
        self, vm: str | None = None, *, vms: Collection[str] | None = None
    ) -> list[ThinVolumeView]: ...
