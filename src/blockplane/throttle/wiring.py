"""Builds the throttle services for the agent and hooks them into the disk service.

Owns only the wiring (which service gets which collaborator); the agent calls ``build`` once.
"""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.facts.host import HostFacts
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.pending import PendingOperations
from blockplane.store.throttle_records import ThrottleRecords
from blockplane.throttle.disk_limits import DiskThrottle
from blockplane.throttle.rescale import DiskRescaler
from blockplane.throttle.service import ThrottleService
from blockplane.vms.disks import DiskService
from blockplane.vms.lifecycle import VMService


@dataclass(frozen=True)
class ThrottleServices:
    groups: ThrottleService
    disks: DiskThrottle
    rescaler: DiskRescaler

    @classmethod
    def build(
        cls,
        vms: VMService,
        disks: DiskService,
        database: Database,
        events: EventPublisher,
        facts: HostFacts,
    ) -> ThrottleServices:
        capability = facts.capabilities["throttle_groups"]
        records = ThrottleRecords(database)
        services = cls(
            groups=ThrottleService(
                vms.domain, disks.vm_lock, events, capability, PendingOperations(database)
            ),
            disks=DiskThrottle(vms.domain, records, events, capability),
            rescaler=DiskRescaler(vms.domain, disks.vm_lock, records, events),
        )
        disks.throttle = services.disks
        disks.observers.append(services.disks)
        return services
