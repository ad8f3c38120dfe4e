"""``POST /v1/plan/disk`` and ``blockplane plan disk``: what ``disk attach`` would apply.

Owns choosing the domain a plan is made on, then hands it to ``vms.disk_plan.plan_disk``, the
function ``disk attach`` applies. The domain is, in this order: the XML the request carries; a
managed VM (as ``disk attach`` sees it, with its records); a domain libvirt has that blockplane
does not manage (as it would be once adopted: its IOThreads are the platform's); or a stand-in
made of the vCPUs and IOThread ids the request gives. Changes nothing anywhere: no volume, no
record, no libvirt call but reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blockplane.errors import InvalidInput, NotFound
from blockplane.hypervisor.connection import Hypervisor
from blockplane.model.disk import Bus, SourceKind
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.records import Records
from blockplane.vms.disk_plan import (
    DiskDescriptor,
    DiskPlan,
    DomainContext,
    choose_target,
    context_from_xml,
    plan_disk,
    stand_in_domain,
)
from blockplane.vms.disks import DiskService

MAX_DOMAIN_XML = 512 * 1024


@dataclass(frozen=True)
class PlanRequest:
    descriptor: DiskDescriptor
    vm: str | None = None
    domain_xml: str | None = None
    vcpus: int | None = None
    iothread_ids: tuple[int, ...] = ()
    reserved_iothreads: tuple[int, ...] | None = None
    pool: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class PlannedDisk:
    """A plan, and what it was made on (``basis``: domain_xml, vcpus, managed VM or
    unmanaged domain)."""

    plan: DiskPlan
    basis: str
    source_kind: SourceKind
    pool: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "basis": self.basis, "source_kind": self.source_kind,
                "pool": self.pool}


class PlanService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        records: Records,
        disks: DiskService,
        pools: PoolService,
        volumes: VolumeService,
    ) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._disks = disks
        self._pools = pools
        self._volumes = volumes

    def plan(self, request: PlanRequest) -> PlannedDisk:
        try:
            return self._plan(request)
        except (ValueError, TypeError) as error:
            if request.domain_xml is None:
                raise
            # A number libvirt would never have written (an id of "x"): the XML is the input.
            raise InvalidInput(f"the domain XML cannot be planned on: {error}",
                               code="plan.invalid") from error

    def _plan(self, request: PlanRequest) -> PlannedDisk:
        context, basis = self._context(request)
        source_kind: SourceKind = "block" if request.descriptor.thin else "file"
        descriptor = request.descriptor
        if request.pool is not None:
            pool = self._pools.get(request.pool)
            source_kind = self._disks.source_kind(pool)
            image_format = descriptor.format or self._volumes.default_format(pool)
            descriptor = dataclasses.replace(descriptor, format=image_format)
            bus: Bus = "scsi" if descriptor.bus == "scsi" else "virtio"
            name = request.name or f"{context.vm}-{choose_target(context, bus)}"
            self._volumes.validate(pool, name, descriptor.size_bytes, image_format,
                                   descriptor.thin)
        plan = plan_disk(context, descriptor, self._disks.planning(), source_kind)
        return PlannedDisk(plan, basis, source_kind, request.pool)

    def _context(self, request: PlanRequest) -> tuple[DomainContext, str]:
        given = [x is not None for x in (request.domain_xml, request.vcpus)]
        if sum(given) > 1:
            raise InvalidInput("give the domain XML or the vCPUs and IOThread ids, not both",
                               code="plan.invalid")
        if request.domain_xml is not None:
            if len(request.domain_xml) > MAX_DOMAIN_XML:
                raise InvalidInput("the domain XML is over 512 KiB", code="plan.invalid")
            return context_from_xml(request.domain_xml, vm=request.vm,
                                    reserved_iothreads=request.reserved_iothreads), "domain_xml"
        if request.vcpus is not None:
            if not 1 <= request.vcpus <= 1024:
                raise InvalidInput(f"vcpus must be 1..1024, got {request.vcpus}",
                                   code="plan.invalid")
            _check_ids(request.iothread_ids)
            xml = stand_in_domain(request.vm or "vm", request.vcpus, request.iothread_ids)
            return context_from_xml(xml, vm=request.vm,
                                    reserved_iothreads=request.reserved_iothreads), "vcpus"
        if request.vm is None:
            raise InvalidInput("give a VM, its domain XML, or its vCPUs and IOThread ids",
                               code="plan.invalid")
        if self._records.vm(request.vm) is not None:
            domain = self._hypervisor.lookup(request.vm)
            return self._disks.context(request.vm, domain), "managed VM"
        try:
            domain = self._hypervisor.lookup(request.vm)
        except NotFound:
            raise NotFound(f"no VM named {request.vm!r} in libvirt", code="vm.not_found") from None
        running = domain.is_active()
        context = context_from_xml(domain.xml(inactive=not running), vm=request.vm,
                                   reserved_iothreads=request.reserved_iothreads)
        return context, "unmanaged domain"


def _check_ids(ids: Sequence[int]) -> None:
    for iothread in ids:
        if isinstance(iothread, bool) or not 1 <= iothread <= 2**31 - 1:
            raise InvalidInput(f"IOThread id {iothread} is not between 1 and 2^31-1",
                               code="plan.invalid")
