"""Applying IOThread plans to a domain: which IOThreads to add or remove, and the device fields.

Owns the glue between the pure planner (``planner``, ``policy``) and the domain adapter. The
policy (how many threads, which queues) stays there; this module only asks it and applies the
answer, undoing what it added when asked to roll back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from blockplane.errors import OperationFailed
from blockplane.hypervisor.domain import DomainHandle
from blockplane.iothreads import (
    Decision,
    IOThreadPlan,
    IOThreadRequest,
    MappingSupport,
    decide,
    plan_attach,
    plan_detach,
)
from blockplane.iothreads.model import NO_KNOWN_DEFECT
from blockplane.iothreads.state import vm_iothreads
from blockplane.model.disk import Bus, QueueMapping


@dataclass(frozen=True)
class HostIOThreadLimits:
    host_cpus: int
    host_cap: int
    support_blk: MappingSupport
    support_scsi: MappingSupport
    #: Several IOThreads for one throttled disk (facts: ``throttle_multi_iothread``).
    support_throttled: MappingSupport = NO_KNOWN_DEFECT
    #: Several IOThreads for one rbd disk (facts: ``rbd_multi_iothread``).
    support_rbd: MappingSupport = NO_KNOWN_DEFECT


@dataclass(frozen=True)
class AppliedPlan:
    decision: Decision
    plan: IOThreadPlan
    io_threads_requested: int | None

    @property
    def queues(self) -> int:
        return self.decision.queues

    @property
    def single_iothread(self) -> int | None:
        if self.plan.disk.mode != "single":
            return None
        return self.plan.disk.mapping[0][0]

    @property
    def queue_mapping(self) -> QueueMapping:
        return self.plan.disk.mapping if self.plan.disk.mode == "mapped" else ()

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.plan.disk.mode,
            "bus": self.plan.disk.bus,
            "queues": self.decision.queues,
            "mapping": [[iothread, list(queues)] for iothread, queues in self.plan.disk.mapping],
            "iothreads_added": list(self.plan.iothreads_to_add),
            "io_threads_requested": self.io_threads_requested,
            "reason": self.plan.reason,
        }


def plan_disk_iothreads(
    limits: HostIOThreadLimits,
    domain_xml: str,
    target: str,
    bus: Bus,
    vcpus: int,
    io_threads: int | None,
    queues: int | None,
    largest_request: int,
    *,
    throttled: bool = False,
    rbd: bool = False,
    reserved: Iterable[int] = (),
) -> AppliedPlan:
    """One disk's IOThreads on the domain ``domain_xml`` describes; pure (``reserved``: ids
    that are not blockplane's to use, as an adopted domain's own IOThreads)."""
    decision = decide(
        IOThreadRequest(io_threads, queues, bus, throttled=throttled, rbd=rbd),
        vcpus,
        limits.host_cpus,
        limits.host_cap,
        limits.support_blk,
        limits.support_scsi,
        vm_largest_request=largest_request,
        support_throttled=limits.support_throttled,
        support_rbd=limits.support_rbd,
    )
    plan = plan_attach(vm_iothreads(domain_xml, reserved), target, decision)
    return AppliedPlan(decision, plan, io_threads)


class IOThreadApplier:
    def __init__(self, limits: HostIOThreadLimits) -> None:
        self.limits = limits

    def plan(
        self,
        domain_xml: str,
        target: str,
        bus: Bus,
        vcpus: int,
        io_threads: int | None,
        queues: int | None,
        largest_request: int,
        *,
        throttled: bool = False,
        rbd: bool = False,
        reserved: Iterable[int] = (),
    ) -> AppliedPlan:
        return plan_disk_iothreads(
            self.limits, domain_xml, target, bus, vcpus, io_threads, queues, largest_request,
            throttled=throttled, rbd=rbd, reserved=reserved,
        )

    @staticmethod
    def add_iothreads(domain: DomainHandle, iothread_ids: tuple[int, ...], live: bool) -> list[int]:
        """Add each IOThread; on a failure remove the ones this call added, then re-raise."""
        added: list[int] = []
        try:
            for iothread in iothread_ids:
                domain.add_iothread(iothread, live=live, config=True)
                added.append(iothread)
        except BaseException:
            IOThreadApplier.remove_iothreads(domain, tuple(added), live)
            raise
        return added

    @staticmethod
    def remove_iothreads(domain: DomainHandle, iothread_ids: tuple[int, ...], live: bool) -> None:
        for iothread in iothread_ids:
            with contextlib.suppress(OperationFailed):
                domain.del_iothread(iothread, live=live, config=True)

    @staticmethod
    def orphans_after_detach(
        domain_xml_before: str, target: str, reserved: Iterable[int] = ()
    ) -> tuple[int, ...]:
        state = vm_iothreads(domain_xml_before, reserved)
        if state.disk(target) is None:
            return ()
        _after, orphans = plan_detach(state, target)
        return orphans
