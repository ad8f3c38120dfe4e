"""Builds the migration services for the agent: the source's jobs and the destination's side.

Owns only the wiring (which service gets which collaborator) and the rule for the libvirt URI
this host tells a source to migrate to: ``--migration-uri`` when given; none for embedded
libvirt (it cannot receive a migration) or an API on loopback only; else
``qemu+tls://HOST/system`` for the address the API listens on. The agent calls ``build``
once and runs ``reconcile`` with its other reconciles.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.config import Settings
from blockplane.deadlines import BoundedLock
from blockplane.facts.capabilities import Capability
from blockplane.hypervisor.connection import Hypervisor
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.migration.destination import DestinationService, HostSide
from blockplane.migration.peers import PeerService
from blockplane.migration.source import SourceMigrations
from blockplane.migration.source_check import SourceDescriber
from blockplane.migration.source_cleanup import ForgetThin, SourceCleanup
from blockplane.migration.store import MigrationStore
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.chain_records import ChainRecords
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records, VolumeRecord
from blockplane.store.throttle_records import ThrottleRecords


def receiving_uri(settings: Settings, embedded: bool) -> str | None:
    if settings.migration_uri:
        return settings.migration_uri
    if embedded or not settings.listen:
        return None
    host = settings.listen.rsplit(":", 1)[0].strip("[]")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None  # no other host reaches it; on one machine, give --migration-uri
    except ValueError:
        pass  # a host name
    return f"qemu+tls://{host}/system"


@dataclass(frozen=True)
class MigrationServices:
    source: SourceMigrations
    destination: DestinationService

    @classmethod
    def build(
        cls, settings: Settings, hypervisor: Hypervisor, database: Database, records: Records,
        pools: PoolService, volumes: VolumeService, peers: PeerService,
        events: EventPublisher, *, limits: Callable[[], HostIOThreadLimits],
        capabilities: Callable[[], Mapping[str, Capability]],
        facts: Callable[[], Mapping[str, Any]],
        vm_lock: Callable[[str], BoundedLock],
        chain_busy: Callable[[str], None],
        thin_track: Callable[[str, str, VolumeRecord], object], forget_thin: ForgetThin,
    ) -> MigrationServices:
        store = MigrationStore(database)
        chain_records = ChainRecords(database)
        throttle_records = ThrottleRecords(database)
        source = SourceMigrations(
            hypervisor, records, store, peers,
            SourceDescriber(records, pools, chain_records, throttle_records),
            SourceCleanup(hypervisor, records, chain_records, volumes, forget_thin),
            vm_lock, chain_busy, chain_records, events,
        )  # fmt: skip
        destination = DestinationService(
            hypervisor, records, pools, volumes, store, chain_records, throttle_records, events,
            HostSide(limits=limits, capabilities=capabilities, facts=facts,
                     libvirt_uri=receiving_uri(settings, hypervisor.is_embedded),
                     thin_track=thin_track),
        )  # fmt: skip
        return cls(source, destination)

    def reconcile(self) -> None:
        self.destination.reconcile()
        self.source.recover()
