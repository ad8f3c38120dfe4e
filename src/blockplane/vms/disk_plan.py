"""What attaching one disk applies, computed without applying it: the ONE planner of an attach.

``plan_disk`` is pure: from the volume descriptor, the domain's definitions (or a stand-in built
from a VM's vCPUs and IOThread ids) and the host's limits it returns the disk's target, its
IOThread plan, its I/O limits plan and the device blockplane would plug. ``disk attach`` applies
exactly this plan (``vms.disks``); ``POST /v1/plan/disk``, ``blockplane plan disk`` and
``blockplane.plan`` return it, with the XML fragments a platform that writes its own domain XML
puts in place: the ``<disk>`` (``<driver>`` with its ``<iothreads>``, ``<throttlefilters>`` or
``<iotune>``), the ``<iothreadids>`` to add, the throttle groups to create, and every reason.
Must not call libvirt, read the store or touch files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blockplane.errors import CapabilityMissing, InvalidInput
from blockplane.facts.capabilities import Capability
from blockplane.iothreads.apply import AppliedPlan, HostIOThreadLimits, plan_disk_iothreads
from blockplane.model.disk import (
    Bus,
    DiskDevice,
    ImageFormat,
    NetworkSource,
    SourceKind,
    next_free_target,
)
from blockplane.model.throttle import ThrottleGroup
from blockplane.throttle.disk_limits import DiskLimitsPlan, prepare_disk_limits
from blockplane.throttle.domain_view import view_of
from blockplane.throttle.tiers import CapacityScaling, GroupSpec
from blockplane.xml.build import el
from blockplane.xml.disk import (
    disk_element,
    parse_disks,
    scsi_controller_element,
    scsi_controller_indexes,
    to_xml,
)
from blockplane.xml.inventory import parse_inventory
from blockplane.xml.throttle import throttle_groups_element

BUSES = ("virtio", "scsi")
FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class DiskDescriptor:
    """The volume descriptor a platform sends, as far as it shapes the device."""

    size_bytes: int
    bus: str = "virtio"
    #: None: the pool's default (raw on rbd, qcow2 elsewhere; qcow2 with no pool).
    format: str | None = None
    thin: bool = False
    queues: int | None = None
    io_threads: int | None = None
    throttle_groups: tuple[str, ...] = ()
    limits: Mapping[str, int | str] = field(default_factory=dict)
    scaling: CapacityScaling | None = None
    vm_group: GroupSpec | None = None

    @property
    def asks_for_limits(self) -> bool:
        return bool(self.throttle_groups or self.limits or self.scaling or self.vm_group)


@dataclass(frozen=True)
class DomainContext:
    """The domain an attach would change: its definitions as libvirt has them now.

    ``reserved_iothreads``: IOThreads that are not blockplane's (an adopted domain's own);
    ``largest_request``: the largest ``io_threads`` already asked for on the VM.
    """

    vm: str
    vcpus: int
    running: bool
    persistent: bool
    live_xml: str | None
    config_xml: str | None
    reserved_iothreads: tuple[int, ...] = ()
    largest_request: int = 0

    @property
    def current_xml(self) -> str:
        xml = self.live_xml if self.running else self.config_xml
        if xml is None:
            raise InvalidInput(f"no definition of {self.vm} to plan on", code="plan.invalid")
        return xml

    def definitions(self) -> list[str]:
        return [xml for xml in (self.config_xml, self.live_xml if self.running else None) if xml]


@dataclass(frozen=True)
class HostPlanning:
    iothreads: HostIOThreadLimits
    #: Throttle groups on this host; None where no I/O limit support is wired in.
    throttle: Capability | None


@dataclass(frozen=True)
class DiskPlan:
    vm: str
    target: str
    applied: AppliedPlan
    limits: DiskLimitsPlan | None
    #: The device as planned; its ``source`` is empty until a volume exists.
    device: DiskDevice

    @property
    def controller_index(self) -> int | None:
        return self.device.controller_index

    @property
    def notes(self) -> list[str]:
        return [self.applied.plan.reason, *([self.limits.reason] if self.limits else [])]

    def plan_json(self) -> dict[str, Any]:
        """What the disk record keeps of the plan (and the attach intent)."""
        return {**self.applied.to_json(), "controller_index": self.controller_index}

    def for_source(self, source: str, kind: SourceKind,
                   network: NetworkSource | None = None) -> DiskDevice:
        """The planned device on its volume (``network``: an RBD image's ``<source>``)."""
        return dataclasses.replace(self.device, source=source, source_kind=kind,
                                   network=network)

    def to_json(self, source: str | None = None) -> dict[str, Any]:
        """The plan with its XML fragments (``source``: the image, if already known)."""
        device = self.device if source is None else dataclasses.replace(self.device,
                                                                        source=source)
        disk = disk_element(device)
        source_node = disk.find("source")
        if not device.source and source_node is not None:
            disk.remove(source_node)
        driver = disk.find("driver")
        controller = (to_xml(scsi_controller_element(device))
                      if device.controller_index is not None else None)
        if controller is not None:
            driver = scsi_controller_element(device).find("driver")
        new_ids = list(self.applied.plan.iothreads_to_add)
        groups = self._groups_to_create()
        return {
            "vm": self.vm,
            "target": self.target,
            "bus": device.bus,
            "iothreads": self.applied.to_json(),
            "iothreads_to_add": new_ids,
            "throttle": dataclasses.asdict(self.limits.view()) if self.limits else None,
            "throttle_filters": list(device.throttle_groups),
            "throttle_groups_to_create": [
                {"name": group.name, "limits": group.limits.to_dict(nonzero_only=True),
                 "definitions": list(kinds)} for group, kinds in groups],
            "notes": self.notes,
            "fallbacks": self._fallbacks(),
            "xml": {
                "disk": to_xml(disk),
                "driver": to_xml(driver) if driver is not None else None,
                "controller": controller,
                "iothreadids": to_xml(el("iothreadids", *[el("iothread", id=str(i))
                                                          for i in new_ids])),
                "throttlegroups": to_xml(throttle_groups_element(
                    ThrottleGroup(group.name, group.limits) for group, _ in groups)),
            },
        }

    def _groups_to_create(self) -> list[tuple[GroupSpec, tuple[str, ...]]]:
        if self.limits is None:
            return []
        return [(create.group, tuple(create.kinds)) for create in self.limits.creates]

    def _fallbacks(self) -> list[str]:
        """The reasons for every way the plan falls short of the descriptor."""
        reasons = []
        decision = self.applied.decision
        asked = self.applied.io_threads_requested
        spread = len(self.applied.plan.disk.mapping)
        if decision.mode == "single" or (
            decision.mode == "mapped" and asked and spread < min(asked, decision.queues)
        ):
            reasons.append(self.applied.plan.reason)
        if self.limits is not None and self.limits.plan.mode == "iotune":
            reasons.append(self.limits.reason)
        return reasons


def plan_disk(
    context: DomainContext,
    descriptor: DiskDescriptor,
    host: HostPlanning,
    source_kind: SourceKind,
) -> DiskPlan:
    """Plan one disk of ``context``'s domain; refuses (nothing changed) what cannot be done."""
    if descriptor.bus not in BUSES:
        raise InvalidInput(
            f"unknown bus {descriptor.bus!r}: use virtio or scsi", code="disk.invalid"
        )
    if descriptor.format is not None and descriptor.format not in FORMATS:
        raise InvalidInput(
            f"unknown format {descriptor.format!r}: use qcow2 or raw", code="volume.invalid"
        )
    bus: Bus = "scsi" if descriptor.bus == "scsi" else "virtio"
    target = choose_target(context, bus)
    limits = _limits(context, target, descriptor, host.throttle)
    applied = plan_disk_iothreads(
        host.iothreads,
        context.current_xml,
        target,
        bus,
        context.vcpus,
        descriptor.io_threads,
        descriptor.queues,
        context.largest_request,
        throttled=limits is not None and limits.throttles,
        rbd=source_kind == "network",
        reserved=context.reserved_iothreads,
    )
    image_format: ImageFormat = "raw" if descriptor.format == "raw" else "qcow2"
    device = DiskDevice(
        target=target,
        bus=bus,
        source="",
        source_kind=source_kind,
        format=image_format,
        queues=applied.queues,
        iothread=applied.single_iothread,
        queue_mapping=applied.queue_mapping,
        error_policy="enospace" if descriptor.thin else None,
        controller_index=_next_controller(context) if bus == "scsi" else None,
    )
    return DiskPlan(context.vm, target, applied, limits, with_limits(with_io_policy(device),
                                                                      limits))


def choose_target(context: DomainContext, bus: Bus) -> str:
    """The first target of ``bus`` free in every definition of the domain."""
    used: set[str] = set()
    for xml in context.definitions():
        used |= {disk.target for disk in parse_disks(xml)}
    return next_free_target(bus, used)


def _limits(
    context: DomainContext, target: str, descriptor: DiskDescriptor,
    capability: Capability | None,
) -> DiskLimitsPlan | None:
    """Validate the disk's I/O limits before anything is created (throttle.disk_limits)."""
    if capability is None:
        if descriptor.asks_for_limits:
            raise CapabilityMissing(
                "this agent has no I/O limit support wired in", code="capability.missing"
            )
        return None
    view = view_of(context.running, context.persistent, context.live_xml, context.config_xml)
    return prepare_disk_limits(
        view, context.vm, target, descriptor.size_bytes, descriptor.throttle_groups,
        descriptor.limits, capability, descriptor.scaling, descriptor.vm_group,
    )


def _next_controller(context: DomainContext) -> int:
    used: set[int] = set()
    for xml in context.definitions():
        used |= scsi_controller_indexes(xml)
    return next(index for index in range(len(used) + 1) if index not in used)


def with_io_policy(device: DiskDevice) -> DiskDevice:
    """How QEMU serves every disk blockplane attaches: without the host page cache
    (``cache='none'``: a host crash loses no write the guest saw completed, and native AIO needs
    it; on rbd it also turns librbd's cache off), with the guest's discards passed down so a
    thin volume's pool gets space back (``discard='unmap'``), and with Linux native AIO on block
    devices (``io='native'``), the thread pool on files (``io='threads'``); an rbd image is
    served by librbd's own threads (no ``io``)."""
    io: str | None = {"block": "native", "file": "threads"}.get(device.source_kind)
    return dataclasses.replace(device, cache="none", discard="unmap", io=io)


def with_limits(device: DiskDevice, plan: DiskLimitsPlan | None) -> DiskDevice:
    if plan is None:
        return device
    return dataclasses.replace(
        device,
        throttle_groups=plan.throttle_groups,
        iotune=plan.iotune,
        iotune_group=plan.iotune_group,
    )


def stand_in_domain(vm: str, vcpus: int, iothread_ids: Sequence[int]) -> str:
    """A domain XML with only ``vcpus`` and IOThreads ``iothread_ids``: what planning needs
    when a platform gives no more than that."""
    domain = el("domain", el("name", vm), el("vcpu", str(vcpus)), type="kvm")
    if iothread_ids:
        domain.append(el("iothreads", str(len(set(iothread_ids)))))
        domain.append(el("iothreadids",
                         *[el("iothread", id=str(i)) for i in sorted(set(iothread_ids))]))
    domain.append(el("devices"))
    return to_xml(domain)


def context_from_xml(
    domain_xml: str, *, vm: str | None = None, reserved_iothreads: Sequence[int] | None = None
) -> DomainContext:
    """The context of a domain a platform writes itself: its (persistent) XML as given.

    ``reserved_iothreads`` None: every IOThread the XML has is the platform's, as ``vm adopt``
    would record them; a platform that wants its disks to share IOThreads with earlier plans
    passes the ids it keeps for itself (e.g. ``[]``).
    """
    inventory = parse_inventory(domain_xml)
    reserved = inventory.iothread_ids if reserved_iothreads is None else reserved_iothreads
    return DomainContext(
        vm=vm or inventory.name or "vm",
        vcpus=inventory.vcpus,
        running=False,
        persistent=True,
        live_xml=None,
        config_xml=domain_xml,
        reserved_iothreads=tuple(sorted(set(reserved))),
    )
