"""Disks of VMs: attach (define-time or hotplug), detach and list.

Owns the attach/detach sequence and its rollback. What an attach applies is planned by
``vms.disk_plan.plan_disk`` (the same pure function ``POST /v1/plan/disk`` answers with), from
the IOThread and throttle packages' policies; this module only applies that plan. Everything it
works with is handed to its constructor: the observers told of each disk, the guards that may
refuse a detach, the throttle hook, the adopted domains' foreign disks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from blockplane.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    OperationFailed,
    outcome_unknown,
)
from blockplane.failpoints import failpoint
from blockplane.hypervisor.domain import DomainHandle
from blockplane.iothreads.apply import AppliedPlan, IOThreadApplier
from blockplane.iothreads.model import MappingSupport
from blockplane.iothreads.state import iothread_report
from blockplane.iothreads.views import IOThreadsView
from blockplane.model.disk import Bus, DiskDevice, SourceKind
from blockplane.model.view import view_fields
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.events import EventPublisher
from blockplane.store.pending import PendingOperations
from blockplane.store.records import DiskRecord, PoolRecord, Records, VolumeRecord
from blockplane.throttle.disk_limits import DiskThrottle
from blockplane.throttle.tiers import CapacityScaling, GroupSpec
from blockplane.vms.disk_plan import (
    DiskDescriptor,
    DomainContext,
    HostPlanning,
    choose_target,
    plan_disk,
)
from blockplane.vms.foreign import AdoptedDisks, NothingAdopted
from blockplane.vms.lifecycle import VMService
from blockplane.vms.locks import VMLocks
from blockplane.vms.observers import DiskObservers
from blockplane.vms.shared_volumes import VolumeUsers, shared_volume_in_use
from blockplane.vms.views import AttachResult, DetachResult, DiskView
from blockplane.xml.disk import (
    disk_element,
    parse_disks,
    scsi_controller_element,
    scsi_controller_indexes,
    to_xml,
)

DETACH_TIMEOUT_S = 15.0
BUSES = ("virtio", "scsi")


#: Called as guard(vm, target) before a detach, guard(vm, None) before a VM's disks are
#: released; a guard raises to refuse (e.g. a block job holds the disk).
DetachGuard = Callable[[str, str | None], None]


@dataclass(frozen=True)
class AttachRequest:
    vm: str
    pool: str
    size_bytes: int
    name: str | None = None
    thin: bool = False
    #: None: the pool's default (raw on rbd, qcow2 elsewhere).
    format: str | None = None
    bus: str = "virtio"
    queues: int | None = None
    io_threads: int | None = None
    throttle_groups: tuple[str, ...] = ()
    limits: dict[str, int | str] = field(default_factory=dict)
    scaling: CapacityScaling | None = None
    vm_group: GroupSpec | None = None
    #: Attach the volume ``name`` that already exists in ``pool`` (a restored one) instead of
    #: creating one; it is left in place if the attach fails.
    existing: bool = False

    def descriptor(self, default_format: str = "qcow2") -> DiskDescriptor:
        return DiskDescriptor(
            size_bytes=self.size_bytes,
            bus=self.bus,
            format=self.format or default_format,
            thin=self.thin,
            queues=self.queues,
            io_threads=self.io_threads,
            throttle_groups=self.throttle_groups,
            limits=self.limits,
            scaling=self.scaling,
            vm_group=self.vm_group,
        )


class DiskService:
    def __init__(
        self,
        vms: VMService,
        pools: PoolService,
        volumes: VolumeService,
        records: Records,
        events: EventPublisher,
        iothreads: IOThreadApplier,
        pending: PendingOperations,
        locks: VMLocks,
        observers: DiskObservers,
        guards: Sequence[DetachGuard] = (),
        throttle: DiskThrottle | None = None,
        adopted: AdoptedDisks | None = None,
        volume_users: VolumeUsers | None = None,
    ) -> None:
        """``throttle``: the disk side of I/O limits; without it limits are refused.
        ``adopted``: adopted domains' foreign disks and own IOThreads (vms.foreign).
        ``volume_users``: who references a volume's path besides its disk record (live chains
        and jobs), consulted before a shared (rbd) volume is deleted."""
        self._pending = pending
        self._iothreads = iothreads
        self._vms = vms
        self._pools = pools
        self._volumes = volumes
        self._records = records
        self._events = events
        self._locks = locks
        self._observers = observers
        self._guards = tuple(guards)
        self._throttle = throttle
        self.adopted: AdoptedDisks = adopted or NothingAdopted()
        self._volume_users = volume_users

    @property
    def rbd_mapping(self) -> MappingSupport:
        """Whether an rbd disk's queues may run in several IOThreads on this host."""
        return self._iothreads.limits.support_rbd

    def attach(self, request: AttachRequest) -> AttachResult:
        self._vms.record(request.vm)
        pool = self._pools.get(request.pool)
        if request.bus not in BUSES:
            raise InvalidInput(
                f"unknown bus {request.bus!r}: use virtio or scsi", code="disk.invalid"
            )
        bus = _bus(request.bus)
        with self._locks.lock_for(request.vm):
            domain = self._vms.domain(request.vm)
            context = self.context(request.vm, domain)
            live = context.running
            target = choose_target(context, bus)
            volume_name = request.name or f"{request.vm}-{target}"
            existing = self._existing(request) if request.existing else None
            image_format = request.format or (
                existing.format if existing is not None else self._volumes.default_format(pool))
            if existing is None:
                self._volumes.validate(
                    pool, volume_name, request.size_bytes, image_format, request.thin
                )
            source_kind = self.source_kind(pool)
            plan = plan_disk(context, request.descriptor(image_format), self.planning(),
                             source_kind)
            limits_plan = plan.limits
            applied = plan.applied
            controller_index = plan.controller_index
            plan_json = plan.plan_json()
            intent = self._pending.begin(
                "disk.attach",
                request.vm,
                target,
                {
                    "pool": pool.name,
                    "volume": volume_name,
                    "bus": request.bus,
                    "plan": plan_json,
                    "controller_index": controller_index,
                    **({"existing": True} if existing is not None else {}),
                },
            )
            started = time.monotonic()
            try:
                volume = existing or self._volumes.create(
                    pool, volume_name, request.size_bytes, image_format, request.thin
                )
            except BaseException:
                self._pending.finish(intent)
                raise
            failpoint("attach.after_volume")
            network = (self._pools.network_source(pool, volume.path)
                       if source_kind == "network" else None)
            device = plan.for_source(volume.path, source_kind, network)
            try:
                if self._throttle is not None and limits_plan is not None:
                    self._throttle.apply_disk_plan(domain, limits_plan, live)
                self._plug(domain, device, applied, live)
                failpoint("attach.after_device")
                self._records.add_disk(
                    DiskRecord(request.vm, target, pool.name, volume_name, request.bus, plan_json)
                )
            except BaseException as error:
                if outcome_unknown(error):
                    raise  # the call may still land: the intent is recovered once it returns
                self._unplug_after_failure(domain, device, applied, live)
                if self._throttle is not None and limits_plan is not None:
                    self._throttle.rollback_disk_plan(domain, limits_plan)
                if existing is None:
                    self._volumes.delete(pool.name, volume_name)
                self._pending.finish(intent)
                raise
            self._pending.finish(intent)
            self._observers.attached(request.vm, target, volume)
            seconds = round(time.monotonic() - started, 3)
            self._events.publish(
                "disk.attached",
                request.vm,
                target=target,
                volume=volume_name,
                pool=pool.name,
                live=live,
                seconds=seconds,
                iothreads=applied.to_json(),
            )
        return AttachResult(
            **view_fields(self._describe(request.vm, device)),
            live=live,
            seconds=seconds,
            notes=(applied.plan.reason, *([limits_plan.reason] if limits_plan else [])),
            throttle=limits_plan.view() if limits_plan else None,
        )

    def _existing(self, request: AttachRequest) -> VolumeRecord:
        volume = self._records.volume(request.pool, request.name or "")
        if volume is None:
            raise NotFound(f"no volume {request.name!r} in pool {request.pool}",
                           code="volume.not_found")
        if any(disk.pool == volume.pool and disk.volume == volume.name
               for vm in self._records.vms() for disk in self._records.disks(vm.name)):
            raise Conflict(f"volume {volume.name} is already a disk of a VM",
                           code="volume.in_use")
        return volume

    def _plug(
        self, domain: DomainHandle, device: DiskDevice, applied: AppliedPlan, live: bool
    ) -> None:
        """IOThreads first, then the controller (scsi), then the disk."""
        self._iothreads.add_iothreads(domain, applied.plan.iothreads_to_add, live)
        failpoint("attach.after_iothreads")
        if device.controller_index is not None:
            domain.attach_device(to_xml(scsi_controller_element(device)), live=live, config=True)
            failpoint("attach.after_controller")
        domain.attach_device(to_xml(disk_element(device)), live=live, config=True)

    def _unplug_after_failure(
        self, domain: DomainHandle, device: DiskDevice, applied: AppliedPlan, live: bool
    ) -> None:
        """Undo whatever part of ``_plug`` happened, so nothing is left behind."""
        for inactive in (True, False) if live else (True,):
            xml = domain.xml(inactive=inactive)
            disk_present = any(d.target == device.target for d in parse_disks(xml))
            with contextlib.suppress(OperationFailed):
                if disk_present:
                    domain.detach_device(
                        to_xml(disk_element(device)), live=not inactive, config=inactive
                    )
                if device.controller_index is not None and _has_controller(
                    xml, device.controller_index
                ):
                    domain.detach_device(
                        to_xml(scsi_controller_element(device)),
                        live=not inactive,
                        config=inactive,
                    )
        self._iothreads.remove_iothreads(domain, applied.plan.iothreads_to_add, live)
        self._records.delete_disk(domain.name, device.target)

    def context(self, vm: str, domain: DomainHandle) -> DomainContext:
        """What an attach to ``vm`` plans on: its definitions as libvirt has them now."""
        live = domain.is_active()
        persistent = domain.is_persistent()
        return DomainContext(
            vm=vm,
            vcpus=self._vms.record(vm).vcpus,
            running=live,
            persistent=persistent,
            live_xml=domain.xml() if live else None,
            config_xml=domain.xml(inactive=True) if persistent or not live else None,
            reserved_iothreads=self.adopted.reserved_iothreads(vm),
            largest_request=self._largest_request(vm),
        )

    def source_kind(self, pool: PoolRecord) -> SourceKind:
        """How QEMU reaches a volume of ``pool``: an RBD image over the network, a block
        device (loop, lvm) or a file."""
        if pool.type == "rbd":
            return "network"
        return "block" if self._volumes.is_block(pool) else "file"

    def planning(self) -> HostPlanning:
        capability = self._throttle.capability if self._throttle is not None else None
        return HostPlanning(self._iothreads.limits, capability)

    def _largest_request(self, vm: str) -> int:
        requested = [record.plan.get("io_threads_requested") for record in self._records.disks(vm)]
        return max((value for value in requested if isinstance(value, int)), default=0)

    def iothreads(self, vm: str) -> IOThreadsView:
        self._vms.record(vm)
        domain = self._vms.domain(vm)
        xml = domain.xml(inactive=not domain.is_active())
        stored = {record.target: record.plan for record in self._records.disks(vm)}
        return iothread_report(vm, xml, stored)

    def detach(self, vm: str, target: str) -> DetachResult:
        self._vms.record(vm)
        # A platform's disk of an adopted VM has no record: say so, not "no such disk".
        self.adopted.refuse(vm, target, "detach (which deletes the volume)")
        with self._locks.lock_for(vm):
            record = self._records.disk(vm, target)
            if record is None:
                raise NotFound(
                    f"VM {vm} has no disk {target} managed by blockplane", code="disk.not_found"
                )
            for guard in self._guards:
                guard(vm, target)
            domain = self._vms.domain(vm)
            live = domain.is_active()
            xml_before = domain.xml(inactive=not live)
            device = self._find(domain, target, inactive=not live)
            if device is None:
                device = self._find(domain, target, inactive=True)
            orphans = IOThreadApplier.orphans_after_detach(
                xml_before, target, self.adopted.reserved_iothreads(vm)
            )
            intent = self._pending.begin(
                "disk.detach",
                vm,
                target,
                {
                    "pool": record.pool,
                    "volume": record.volume,
                    "orphans": list(orphans),
                },
            )
            try:
                if device is not None:
                    self._detach_device(domain, device, live)
                    if device.controller_index is not None:
                        self._detach_controller(domain, device, live)
            except BaseException as error:
                if not outcome_unknown(error):
                    self._pending.finish(intent)
                raise
            failpoint("detach.after_device")
            self._iothreads.remove_iothreads(domain, orphans, live)
            self._observers.detached(vm, target)
            self._records.delete_disk(vm, target)
            kept = self.release_volume(record.pool, record.volume)
            self._pending.finish(intent)
            self._events.publish(
                "disk.detached",
                vm,
                target=target,
                volume=record.volume,
                iothreads_removed=list(orphans),
                **({"volume_kept": kept} if kept else {}),
            )
        return DetachResult(vm, target, detached=True,
                            volume_deleted=None if kept else record.volume,
                            iothreads_removed=tuple(orphans), volume_kept=kept)

    def release_volume(self, pool: str, volume: str) -> str | None:
        """Delete a volume no disk needs any more; on a shared (rbd) pool only once nothing
        else references it: the reason it was kept, or None once deleted."""
        record = self._records.pool(pool)
        if record is not None and self._pools.is_shared(record):
            kept = shared_volume_in_use(self._records, self._volume_users, pool, volume)
            if kept is not None:
                return kept
            try:
                self._volumes.delete(pool, volume)
            except Conflict as error:  # Ceph: another client (host) still has it open
                return f"kept: {error.message}"
            return None
        self._volumes.delete(pool, volume)
        return None

    def _detach_device(self, domain: DomainHandle, device: DiskDevice, live: bool) -> None:
        xml = to_xml(disk_element(device))
        in_config = self._find(domain, device.target, inactive=True) is not None
        if in_config:
            domain.detach_device(xml, live=False, config=True)
        if not live:
            return
        domain.detach_device(xml, live=True, config=False)
        deadline = time.monotonic() + DETACH_TIMEOUT_S
        while self._find(domain, device.target, inactive=False) is not None:
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"the guest of {domain.name} did not release {device.target} within "
                    f"{DETACH_TIMEOUT_S:.0f} s; the volume is kept. Retry, or stop the VM and "
                    "detach again",
                    code="disk.detach_pending",
                )
            time.sleep(0.1)

    def _detach_controller(self, domain: DomainHandle, device: DiskDevice, live: bool) -> None:
        xml = to_xml(scsi_controller_element(device))
        index = device.controller_index
        assert index is not None
        if _has_controller(domain.xml(inactive=True), index):
            domain.detach_device(xml, live=False, config=True)
        if live and _has_controller(domain.xml(), index):
            domain.detach_device(xml, live=True, config=False)

    def list_disks(self, vm: str) -> list[DiskView]:
        self._vms.record(vm)
        domain = self._vms.domain(vm)
        devices = parse_disks(domain.xml(inactive=not domain.is_active()))
        return [self._describe(vm, device) for device in devices]

    def release_vm(self, vm: str) -> list[str]:
        """Delete the volumes of a stopped VM's disks; used by ``vm delete``."""
        for guard in self._guards:
            guard(vm, None)
        released = []
        for record in self._records.disks(vm):
            self._observers.detached(vm, record.target)
            self._records.delete_disk(vm, record.target)
            if self.release_volume(record.pool, record.volume) is None:
                released.append(record.volume)
        return released

    def _find(self, domain: DomainHandle, target: str, *, inactive: bool) -> DiskDevice | None:
        for disk in parse_disks(domain.xml(inactive=inactive)):
            if disk.target == target:
                return disk
        return None

    def _describe(self, vm: str, device: DiskDevice) -> DiskView:
        record = self._records.disk(vm, device.target)
        volume = self._records.volume(record.pool, record.volume) if record else None
        return DiskView(
            vm=vm,
            target=device.target,
            bus=device.bus,
            source=device.source,
            format=device.format,
            pool=record.pool if record else None,
            volume=record.volume if record else None,
            virtual_bytes=volume.virtual_bytes if volume else None,
            physical_bytes=volume.physical_bytes if volume else None,
            thin=volume.thin if volume else False,
            managed=record is not None,
            plan=record.plan if record else {},
            throttle_groups=device.throttle_groups,
            foreign=self.adopted.foreign_reason(vm, device.target),
        )


def _has_controller(domain_xml: str, index: int) -> bool:
    return index in scsi_controller_indexes(domain_xml)


def _bus(value: str) -> Bus:
    if value == "scsi":
        return "scsi"
    return "virtio"

