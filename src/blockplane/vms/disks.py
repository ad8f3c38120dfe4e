"""Disks of VMs: attach (define-time or hotplug), detach and list.

Owns the attach/detach sequence and its rollback. The IOThread plan and the throttle chain
are computed by their own packages and arrive here as fields of the ``DiskDevice``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from blockplane.deadlines import BoundedLock
from blockplane.errors import (
    CapabilityMissing,
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
from blockplane.model.disk import Bus, DiskDevice, ImageFormat, next_free_target
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.events import EventPublisher
from blockplane.store.pending import PendingOperations
from blockplane.store.records import DiskRecord, Records, VolumeRecord
from blockplane.throttle.disk_limits import DiskLimitsPlan, DiskThrottle
from blockplane.throttle.tiers import CapacityScaling, GroupSpec
from blockplane.vms.lifecycle import VMService
from blockplane.vms.shared_volumes import VolumeUsers, shared_volume_in_use
from blockplane.xml.disk import (
    disk_element,
    parse_disks,
    scsi_controller_element,
    scsi_controller_indexes,
    to_xml,
)

DETACH_TIMEOUT_S = 15.0
BUSES = ("virtio", "scsi")


class DiskObserver(Protocol):
    """Told about every managed disk that comes or goes (thin monitor, QoS, ...)."""

    def disk_attached(self, vm: str, target: str, volume: VolumeRecord) -> None: ...

    def disk_detached(self, vm: str, target: str) -> None: ...


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
    ) -> None:
        self.pending = pending
        self._iothreads = iothreads
        self._vms = vms
        self._pools = pools
        self._volumes = volumes
        self._records = records
        self._events = events
        self.observers: list[DiskObserver] = []
        #: Called as guard(vm, target) before a detach, guard(vm, None) before a VM's disks
        #: are released; a guard raises to refuse (e.g. a block job holds the disk).
        self.guards: list[Callable[[str, str | None], None]] = []
        #: I/O limits (throttle.disk_limits); set by the agent. Without it limits are refused.
        self.throttle: DiskThrottle | None = None
        #: Who references a volume's path besides its disk record (chains, jobs); set by the
        #: agent. Consulted before a shared (rbd) volume is deleted.
        self.volume_users: VolumeUsers | None = None
        self._vm_locks: dict[str, BoundedLock] = {}
        self._locks_guard = threading.Lock()

    @property
    def rbd_mapping(self) -> MappingSupport:
        """Whether an rbd disk's queues may run in several IOThreads on this host."""
        return self._iothreads.limits.support_rbd

    def vm_lock(self, vm: str) -> BoundedLock:
        """The lock every multi-step change of ``vm`` holds; waited for within the deadline."""
        with self._locks_guard:
            lock = self._vm_locks.get(vm)
            if lock is None:
                lock = self._vm_locks[vm] = BoundedLock(f"the lock of VM {vm}", "timeout.vm_lock")
            return lock

    def attach(self, request: AttachRequest) -> dict[str, Any]:
        vm_record = self._vms.record(request.vm)
        pool = self._pools.get(request.pool)
        if request.bus not in BUSES:
            raise InvalidInput(
                f"unknown bus {request.bus!r}: use virtio or scsi", code="disk.invalid"
            )
        bus = _bus(request.bus)
        with self.vm_lock(request.vm):
            domain = self._vms.domain(request.vm)
            live = domain.is_active()
            current_xml = domain.xml(inactive=not live)
            target = next_free_target(bus, self._used_targets(domain))
            volume_name = request.name or f"{request.vm}-{target}"
            image_format = request.format or self._volumes.default_format(pool)
            rbd = pool.type == "rbd"
            self._volumes.validate(
                pool, volume_name, request.size_bytes, image_format, request.thin
            )
            limits_plan = self._prepare_limits(domain, target, request)
            applied = self._iothreads.plan(
                current_xml,
                target,
                bus,
                vm_record.vcpus,
                request.io_threads,
                request.queues,
                self._largest_request(request.vm),
                throttled=limits_plan is not None and limits_plan.throttles,
                rbd=rbd,
            )
            controller_index = self._next_controller(domain) if bus == "scsi" else None
            plan_json = {**applied.to_json(), "controller_index": controller_index}
            intent = self.pending.begin(
                "disk.attach",
                request.vm,
                target,
                {
                    "pool": pool.name,
                    "volume": volume_name,
                    "bus": request.bus,
                    "plan": plan_json,
                    "controller_index": controller_index,
                },
            )
            started = time.monotonic()
            try:
                volume = self._volumes.create(
                    pool, volume_name, request.size_bytes, image_format, request.thin
                )
            except BaseException:
                self.pending.finish(intent)
                raise
            failpoint("attach.after_volume")
            network = self._pools.network_source(pool, volume.path) if rbd else None
            device = DiskDevice(
                target=target,
                bus=bus,
                source=volume.path,
                source_kind="network" if rbd else (
                    "block" if self._volumes.is_block(pool) else "file"),
                format=_format(image_format),
                queues=applied.queues,
                iothread=applied.single_iothread,
                queue_mapping=applied.queue_mapping,
                error_policy="enospace" if request.thin else None,
                controller_index=controller_index,
                network=network,
            )
            device = _with_limits(with_io_policy(device), limits_plan)
            try:
                if self.throttle is not None and limits_plan is not None:
                    self.throttle.apply_disk_plan(domain, limits_plan, live)
                self._plug(domain, device, applied, live)
                failpoint("attach.after_device")
                self._records.add_disk(
                    DiskRecord(request.vm, target, pool.name, volume_name, request.bus, plan_json)
                )
            except BaseException as error:
                if outcome_unknown(error):
                    raise  # the call may still land: the intent is recovered once it returns
                self._unplug_after_failure(domain, device, applied, live)
                if self.throttle is not None and limits_plan is not None:
                    self.throttle.rollback_disk_plan(domain, limits_plan)
                self._volumes.delete(pool.name, volume_name)
                self.pending.finish(intent)
                raise
            self.pending.finish(intent)
            for observer in self.observers:
                observer.disk_attached(request.vm, target, volume)
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
        return {
            **self._describe(request.vm, device),
            "live": live,
            "seconds": seconds,
            "notes": [applied.plan.reason, *([limits_plan.reason] if limits_plan else [])],
            "throttle": limits_plan.to_json() if limits_plan else None,
        }

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

    def _largest_request(self, vm: str) -> int:
        requested = [record.plan.get("io_threads_requested") for record in self._records.disks(vm)]
        return max((value for value in requested if isinstance(value, int)), default=0)

    def _next_controller(self, domain: DomainHandle) -> int:
        used: set[int] = set()
        for inactive in (True, False):
            used |= scsi_controller_indexes(domain.xml(inactive=inactive))
        return next(index for index in range(len(used) + 1) if index not in used)

    def iothreads(self, vm: str) -> dict[str, Any]:
        self._vms.record(vm)
        domain = self._vms.domain(vm)
        xml = domain.xml(inactive=not domain.is_active())
        stored = {record.target: record.plan for record in self._records.disks(vm)}
        return {"vm": vm, **iothread_report(xml, stored)}

    def detach(self, vm: str, target: str) -> dict[str, Any]:
        self._vms.record(vm)
        with self.vm_lock(vm):
            record = self._records.disk(vm, target)
            if record is None:
                raise NotFound(
                    f"VM {vm} has no disk {target} managed by blockplane", code="disk.not_found"
                )
            for guard in self.guards:
                guard(vm, target)
            domain = self._vms.domain(vm)
            live = domain.is_active()
            xml_before = domain.xml(inactive=not live)
            device = self._find(domain, target, inactive=not live)
            if device is None:
                device = self._find(domain, target, inactive=True)
            orphans = IOThreadApplier.orphans_after_detach(xml_before, target)
            intent = self.pending.begin(
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
                    self.pending.finish(intent)
                raise
            failpoint("detach.after_device")
            self._iothreads.remove_iothreads(domain, orphans, live)
            for observer in self.observers:
                observer.disk_detached(vm, target)
            self._records.delete_disk(vm, target)
            kept = self.release_volume(record.pool, record.volume)
            self.pending.finish(intent)
            self._events.publish(
                "disk.detached",
                vm,
                target=target,
                volume=record.volume,
                iothreads_removed=list(orphans),
                **({"volume_kept": kept} if kept else {}),
            )
        return {
            "vm": vm,
            "target": target,
            "detached": True,
            "volume_deleted": None if kept else record.volume,
            **({"volume_kept": kept} if kept else {}),
            "iothreads_removed": list(orphans),
        }

    def release_volume(self, pool: str, volume: str) -> str | None:
        """Delete a volume no disk needs any more; on a shared (rbd) pool only once nothing
        else references it: the reason it was kept, or None once deleted."""
        record = self._records.pool(pool)
        if record is not None and self._pools.is_shared(record):
            kept = shared_volume_in_use(self._records, self.volume_users, pool, volume)
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

    def list_disks(self, vm: str) -> list[dict[str, Any]]:
        self._vms.record(vm)
        domain = self._vms.domain(vm)
        devices = parse_disks(domain.xml(inactive=not domain.is_active()))
        return [self._describe(vm, device) for device in devices]

    def release_vm(self, vm: str) -> list[str]:
        """Delete the volumes of a stopped VM's disks; used by ``vm delete``."""
        for guard in self.guards:
            guard(vm, None)
        released = []
        for record in self._records.disks(vm):
            for observer in self.observers:
                observer.disk_detached(vm, record.target)
            self._records.delete_disk(vm, record.target)
            if self.release_volume(record.pool, record.volume) is None:
                released.append(record.volume)
        return released

    def _used_targets(self, domain: DomainHandle) -> set[str]:
        used = {disk.target for disk in parse_disks(domain.xml(inactive=True))}
        if domain.is_active():
            used |= {disk.target for disk in parse_disks(domain.xml())}
        return used

    def _find(self, domain: DomainHandle, target: str, *, inactive: bool) -> DiskDevice | None:
        for disk in parse_disks(domain.xml(inactive=inactive)):
            if disk.target == target:
                return disk
        return None

    def _describe(self, vm: str, device: DiskDevice) -> dict[str, Any]:
        record = self._records.disk(vm, device.target)
        volume = self._records.volume(record.pool, record.volume) if record else None
        return {
            "vm": vm,
            "target": device.target,
            "bus": device.bus,
            "source": device.source,
            "format": device.format,
            "pool": record.pool if record else None,
            "volume": record.volume if record else None,
            "virtual_bytes": volume.virtual_bytes if volume else None,
            "physical_bytes": volume.physical_bytes if volume else None,
            "thin": volume.thin if volume else False,
            "managed": record is not None,
            "plan": record.plan if record else {},
            "throttle_groups": list(device.throttle_groups),
        }

    def _prepare_limits(
        self, domain: DomainHandle, target: str, request: AttachRequest
    ) -> DiskLimitsPlan | None:
        """Validate the disk's I/O limits before anything is created (throttle.disk_limits)."""
        asks = request.throttle_groups or request.limits or request.scaling or request.vm_group
        if self.throttle is None:
            if asks:
                raise CapabilityMissing(
                    "this agent has no I/O limit support wired in", code="capability.missing"
                )
            return None
        return self.throttle.prepare_disk(
            domain,
            target,
            request.size_bytes,
            request.throttle_groups,
            request.limits,
            request.scaling,
            request.vm_group,
        )


def with_io_policy(device: DiskDevice) -> DiskDevice:
    """How QEMU serves every disk blockplane attaches: without the host page cache
    (``cache='none'``: a host crash loses no write the guest saw completed, and native AIO needs
    it; on rbd it also turns librbd's cache off), with the guest's discards passed down so a
    thin volume's pool gets space back (``discard='unmap'``), and with Linux native AIO on block
    devices (``io='native'``), the thread pool on files (``io='threads'``); an rbd image is
    served by librbd's own threads (no ``io``)."""
    io: str | None = {"block": "native", "file": "threads"}.get(device.source_kind)
    return dataclasses.replace(device, cache="none", discard="unmap", io=io)


def _with_limits(device: DiskDevice, plan: DiskLimitsPlan | None) -> DiskDevice:
    if plan is None:
        return device
    return dataclasses.replace(
        device,
        throttle_groups=plan.throttle_groups,
        iotune=plan.iotune,
        iotune_group=plan.iotune_group,
    )


def _has_controller(domain_xml: str, index: int) -> bool:
    return index in scsi_controller_indexes(domain_xml)


def _bus(value: str) -> Bus:
    if value == "scsi":
        return "scsi"
    return "virtio"


def _format(value: str) -> ImageFormat:
    return "raw" if value == "raw" else "qcow2"
