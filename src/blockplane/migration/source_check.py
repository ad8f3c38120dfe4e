"""The source's check: may this VM migrate now, and what does the destination need to know?

``refuse_if_busy`` refuses, before anything changes, a VM with a block job (blockplane's or one
libvirt runs on its own), a domain job (a backup), or a snapshot being taken. ``describe``
builds the ``MigrationRequest``: the VM's record; per managed disk where it is, whether its pool
is shared storage (``shared_pools``), what a copy would write (``qemu-img measure`` of the whole
chain), its records (plan, I/O limits) and, for a disk that is not copied, its chain volumes;
the migratable XML (running and defined), the checkpoints and the snapshot records. A disk
blockplane does not manage is refused: nobody here could say where it lands. Must not talk to
the destination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from blockplane.errors import Conflict, InvalidInput
from blockplane.hypervisor.domain import DomainHandle
from blockplane.migration.plan import (
    ChainElement,
    CopyStorage,
    DiskMove,
    MigrationRequest,
    VMDescription,
)
from blockplane.migration.shared_pools import pool_identity
from blockplane.migration.shared_snapshots import carried
from blockplane.storage.images import measure_copy
from blockplane.storage.pools import PoolService
from blockplane.store.chain_records import ChainRecords
from blockplane.store.records import Records
from blockplane.store.throttle_records import ThrottleRecords
from blockplane.xml.disk import parse_disks


@dataclass(frozen=True)
class MigrateOptions:
    """What ``vm migrate`` was asked: the peer, the copy mode, the pool map (source pool ->
    destination pool; unmapped pools keep their name), and libvirt's limits."""

    peer: str
    copy_storage: CopyStorage = "auto"
    pool_map: Mapping[str, str] | None = None
    bandwidth_bps: int = 0
    max_downtime_ms: int = 0

    def destination_pool(self, pool: str) -> str:
        return (self.pool_map or {}).get(pool, pool)

    def to_json(self) -> dict[str, object]:
        return {"peer": self.peer, "copy_storage": self.copy_storage,
                "pool_map": dict(self.pool_map or {}), "bandwidth": self.bandwidth_bps,
                "max_downtime_ms": self.max_downtime_ms}


def refuse_if_busy(vm: str, domain: DomainHandle, targets: list[str],
                   chain_jobs_busy: Callable[[str], None], chain_records: ChainRecords) -> None:
    """``job.busy`` for a block job or a domain job, ``snapshot.in_progress`` for a snapshot."""
    chain_jobs_busy(vm)
    taking = chain_records.snapshots(vm, state="creating")
    if taking:
        raise Conflict(f"a snapshot of {vm} ({taking[0].name}) is being taken; migrate it "
                       "once the snapshot is done", code="snapshot.in_progress")
    for target in targets:
        info = domain.block_job_info(target)
        if info is not None:
            raise Conflict(f"{vm}/{target} runs a libvirt block job (type {info.job_type}); "
                           "migrate it once the job ends", code="job.busy")
    if domain.domain_job_active():
        raise Conflict(f"{vm} runs a libvirt job (a backup or another migration); migrate it "
                       "once it ends", code="job.busy")


class SourceDescriber:
    def __init__(self, records: Records, pools: PoolService, chain_records: ChainRecords,
                 throttle_records: ThrottleRecords) -> None:
        self._records = records
        self._pools = pools
        self._chain = chain_records
        self._throttle = throttle_records

    def describe(self, job_id: str, domain: DomainHandle, options: MigrateOptions,
                 source_host: str) -> MigrationRequest:
        vm = domain.name
        record = self._records.vm(vm)
        if record is None:
            raise InvalidInput(f"VM {vm} is not managed by blockplane", code="vm.not_found")
        migration = domain.migration()
        live_xml = migration.migratable_xml()
        devices = {device.target: device for device in parse_disks(live_xml)}
        managed = {disk.target: disk for disk in self._records.disks(vm)}
        unmanaged = sorted(set(devices) - set(managed))
        if unmanaged:
            raise InvalidInput(
                f"{vm} has disks blockplane does not manage ({', '.join(unmanaged)}); it cannot "
                "say where they land on another host", code="migration.unmanaged_disk")
        moves = []
        for target, disk in sorted(managed.items()):
            volume = self._records.volume(disk.pool, disk.volume)
            pool = self._records.pool(disk.pool)
            device = devices.get(target)
            if volume is None or pool is None or device is None:
                raise InvalidInput(f"{vm}/{target}: its records are incomplete (volume or pool "
                                   "missing, or not in the live XML)", code="migration.invalid")
            identity = pool_identity(pool, self._pools.backend(pool), make=True)
            copied = options.copy_storage == "all" or identity is None
            required = 0
            if copied and options.copy_storage != "none":
                required = measure_copy(device.source)
            chain = tuple(
                ChainElement(row.pool, row.volume, row.path, row.origin)
                for row in reversed(self._chain.volumes(vm=vm, target=target))
                if row.state == "in_chain"
            )
            qos = self._throttle.disk(vm, target)
            moves.append(DiskMove(
                target=target, bus=disk.bus, source_pool=disk.pool, source_volume=disk.volume,
                source_path=device.source, destination_pool=options.destination_pool(disk.pool),
                format=volume.format, thin=volume.thin, virtual_bytes=volume.virtual_bytes,
                required_bytes=required,
                throttled=bool(device.throttle_groups or device.iotune is not None),
                shared_identity=identity, stored_plan=dict(disk.plan),
                qos=None if qos is None else {
                    "mode": qos.mode, "spec": qos.spec, "chain": qos.chain,
                    "size_bytes": qos.size_bytes, "per_disk": qos.per_disk},
                chain=chain,
            ))  # fmt: skip
        return MigrationRequest(
            id=job_id,
            vm=VMDescription(record.name, record.uuid, record.vcpus, record.memory_bytes,
                             record.guest),
            copy_storage=options.copy_storage, disks=tuple(moves), live_xml=live_xml,
            persistent_xml=migration.migratable_xml(inactive=True),
            checkpoints=tuple(domain.checkpoint_documents(with_sizes=False)),
            source_host=source_host,
            snapshots=carried(self._chain.snapshots(vm)),
        )  # fmt: skip

