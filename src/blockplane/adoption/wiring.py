"""Builds adopt, release, the watch on adopted domains and disk planning for the agent.

Owns only the wiring (which service gets which collaborator); the agent calls ``build`` once,
after the disk, thin and chain services exist, and runs ``watch.reconcile`` with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from blockplane.adoption.adopt import AdoptService
from blockplane.adoption.release import ReleaseService, ThinRelease
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.ports import ThinHook
from blockplane.deadlines import BoundedLock
from blockplane.hypervisor.connection import Hypervisor
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.adoption import AdoptionRecords
from blockplane.store.chain_records import ChainRecords
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.pending import PendingOperations
from blockplane.store.records import Records
from blockplane.vms.disks import DiskService
from blockplane.vms.domain_watch import AdoptedDomainWatch
from blockplane.vms.plan_service import PlanService


class ThinMonitorLike(ThinHook, ThinRelease, Protocol):
    """The thin monitor as adoption (``track``) and release (``monitored``, ``forget``) use it."""


@dataclass(frozen=True)
class AdoptionServices:
    adopt: AdoptService
    release: ReleaseService
    watch: AdoptedDomainWatch
    planner: PlanService
    records: AdoptionRecords

    @classmethod
    def build(
        cls,
        hypervisor: Hypervisor,
        database: Database,
        records: Records,
        adoptions: AdoptionRecords,
        disks: DiskService,
        pools: PoolService,
        volumes: VolumeService,
        events: EventPublisher,
        thin: ThinMonitorLike | None,
        vm_lock: Callable[[str], BoundedLock],
        pending: PendingOperations,
    ) -> AdoptionServices:
        """``vm_lock``: the lock every multi-step change of a VM holds; ``pending``: the
        intents of multi-step changes (a release waits until the VM has none)."""
        chain_records = ChainRecords(database)
        jobs = JobStore(database)
        return cls(
            adopt=AdoptService(hypervisor, database, records, chain_records, jobs, adoptions,
                               pools, events, vm_lock, thin),
            release=ReleaseService(hypervisor, database, records, chain_records, jobs,
                                   adoptions, pending, events, vm_lock, thin),
            watch=AdoptedDomainWatch(hypervisor, adoptions, events),
            planner=PlanService(hypervisor, records, disks, pools, volumes),
            records=adoptions,
        )
