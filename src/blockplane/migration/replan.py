"""Re-planning a VM's IOThreads for the host it migrates to, keeping what the guest sees.

A disk whose mapping the destination can run as it is keeps it, IOThread ids included. A disk it
cannot run (the bus's mapping is not supported there, more IOThreads than that host has CPUs or
allows a VM, or a throttled disk over several IOThreads where that host's QEMU must not) is
planned again by the same policy a hotplug there would use (``iothreads.decide`` and
``plan_attach``) over the pool the kept disks leave, with its queue count unchanged: the guest
sees the same queues, and only the host side (which IOThread serves which queue) changes. The
reason says what was kept, or what fell back and why.

Pure: the destination's limits come in as ``HostIOThreadLimits``; must not read facts, XML or
talk to libvirt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blockplane.iothreads import (
    DiskMapping,
    IOThreadRequest,
    VMIOThreads,
    apply_plan,
    decide,
    migration_gaps,
    plan_attach,
)
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.iothreads.model import FIRST_PLANNER_ID


@dataclass(frozen=True)
class DiskRequest:
    """What a disk asked for when it was attached (its record's plan) and whether it has I/O
    limits (a throttled disk keeps all its queues on one IOThread where QEMU needs it)."""

    io_threads: int | None
    throttled: bool


@dataclass(frozen=True)
class Replanned:
    disk: DiskMapping
    kept: bool
    reason: str

    @property
    def target(self) -> str:
        return self.disk.target


@dataclass(frozen=True)
class ReplanResult:
    disks: tuple[Replanned, ...]
    iothread_ids: tuple[int, ...]

    def disk(self, target: str) -> Replanned:
        return next(disk for disk in self.disks if disk.target == target)


def _why_not(disk: DiskMapping, request: DiskRequest, limits: HostIOThreadLimits) -> str | None:
    """Why the destination cannot run ``disk``'s mapping as it is; None if it can."""
    gaps = migration_gaps([disk], limits.support_blk, limits.support_scsi, limits.host_cpus)
    if gaps:
        return gaps[0].reason
    threads = len(disk.mapping)
    if disk.mode == "mapped" and threads > limits.host_cap:
        return f"mapped over {threads} IOThreads, this host allows {limits.host_cap} per VM"
    if disk.mode == "mapped" and threads > 1 and request.throttled and (
        not limits.support_throttled.supported
    ):
        return f"a throttled disk over {threads} IOThreads: {limits.support_throttled.reason}"
    return None


def replan(
    source: VMIOThreads,
    requests: Mapping[str, DiskRequest],
    vcpus: int,
    limits: HostIOThreadLimits,
) -> ReplanResult:
    """The VM's IOThreads on the destination, in the order of ``source.disks``."""
    kept: list[DiskMapping] = []
    redo: list[tuple[DiskMapping, str]] = []
    for disk in source.disks:
        request = requests.get(disk.target, DiskRequest(None, False))
        why = _why_not(disk, request, limits)
        if why is None:
            kept.append(disk)
        else:
            redo.append((disk, why))
    used = {iothread for disk in kept for iothread in disk.iothread_ids}
    reserved = tuple(i for i in source.iothread_ids if i < FIRST_PLANNER_ID)
    state = VMIOThreads(tuple(sorted(used | set(reserved))), tuple(kept), reserved)
    largest = max((r.io_threads or 0 for r in requests.values()), default=0)
    planned: dict[str, Replanned] = {
        disk.target: Replanned(disk, True, "kept: this host runs it as it is") for disk in kept
    }
    for disk, why in redo:
        request = requests.get(disk.target, DiskRequest(None, False))
        decision = decide(
            IOThreadRequest(request.io_threads, disk.queues, disk.bus, throttled=request.throttled),
            vcpus, limits.host_cpus, limits.host_cap, limits.support_blk, limits.support_scsi,
            vm_largest_request=largest, support_throttled=limits.support_throttled,
        )  # fmt: skip
        plan = plan_attach(state, disk.target, decision)
        state = apply_plan(state, plan)
        planned[disk.target] = Replanned(
            plan.disk, False, f"re-planned here ({why}): {plan.reason}"
        )
    ordered = tuple(planned[disk.target] for disk in source.disks)
    return ReplanResult(ordered, state.iothread_ids)

