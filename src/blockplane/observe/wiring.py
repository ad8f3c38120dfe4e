"""Builds the observe services for the agent and registers the per-disk metrics collector.

Owns only the wiring; the agent calls ``build`` once, after every feature service exists, and
appends ``confirmer.run`` as its last reconcile step.
"""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.hypervisor.connection import Hypervisor
from blockplane.metrics import AgentMetrics
from blockplane.observe.collector import ObserveCollector
from blockplane.observe.confirm import Confirmer
from blockplane.observe.ports import JobsView, ThinStatus
from blockplane.observe.reconcile import ReconcileLog
from blockplane.observe.top import TopService
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records


@dataclass(frozen=True)
class ObserveServices:
    reconcile: ReconcileLog
    confirmer: Confirmer
    top: TopService

    @classmethod
    def build(
        cls,
        hypervisor: Hypervisor,
        records: Records,
        events: EventPublisher,
        metrics: AgentMetrics,
        *,
        thin: ThinStatus | None = None,
        jobs: JobsView | None = None,
    ) -> ObserveServices:
        services = cls(
            reconcile=ReconcileLog(),
            confirmer=Confirmer(hypervisor.lookup, records, events, thin,
                                hypervisor.stats_reuse.scope),
            top=TopService(hypervisor, records, events, jobs),
        )
        metrics.registry.register(ObserveCollector(services.top, services.reconcile))
        return services
