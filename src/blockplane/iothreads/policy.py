"""IOThread policy: from a volume request and the host's limits to a mode, queues and a budget.

Owns input validation (``iothreads.invalid``), the defaults (queues = vCPUs; the VM's pool may
use min(largest request on the VM, queues, host CPUs, host cap) IOThreads), the capability gate
and the human reason. Must not pick IOThread ids (``planner``), read facts (the capability comes
in as ``MappingSupport``), import libvirt or touch XML.

A request's ``io_threads`` sizes the VM's one shared pool, not a per-disk limit: a disk's queues
are spread over the whole pool so that the load stays even (see ``planner``).
"""

from __future__ import annotations

from blockplane.errors import InvalidInput
from blockplane.iothreads.model import (
    ERROR_CODE,
    NO_KNOWN_DEFECT,
    Decision,
    IOThreadRequest,
    MappingSupport,
)
from blockplane.model.disk import Bus

# QEMU's VIRTIO_QUEUE_MAX (include/hw/virtio/virtio.h). virtio-blk adds every queue with
# virtio_add_queue(), which aborts past it; virtio-scsi also needs its control and event queues
# (VIRTIO_SCSI_VQ_NUM_FIXED = 2) and rejects num_queues > VIRTIO_QUEUE_MAX - 2 at realize.
VIRTIO_QUEUE_MAX = 1024
MAX_QUEUES: dict[Bus, int] = {"virtio": VIRTIO_QUEUE_MAX, "scsi": VIRTIO_QUEUE_MAX - 2}
# An IOThread serves at least one queue, so a larger request can never be used.
MAX_IO_THREADS = VIRTIO_QUEUE_MAX


def _invalid(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, code=ERROR_CODE, field=field)


def _check_count(value: object, field: str, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(f"{field} must be an integer, got {value!r}", field)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise _invalid(f"{field} must be {bound}, got {value}", field)
    return value


def validate_request(request: IOThreadRequest) -> None:
    """Raise ``InvalidInput`` (``iothreads.invalid``) unless the request is well formed."""
    if request.bus not in MAX_QUEUES:
        raise _invalid(f"bus must be virtio or scsi, got {request.bus!r}", "bus")
    if request.queues is not None:
        _check_count(request.queues, "queues", 1, MAX_QUEUES[request.bus])
    if request.io_threads is not None:
        _check_count(request.io_threads, "io_threads", 0, MAX_IO_THREADS)


def _requested(request: IOThreadRequest) -> str:
    if request.io_threads is None:
        return "io_threads not set"
    return f"io_threads {request.io_threads} requested"


def decide(
    request: IOThreadRequest,
    vcpus: int,
    host_cpus: int,
    host_cap: int,
    support_blk: MappingSupport,
    support_scsi: MappingSupport,
    *,
    vm_largest_request: int = 0,
    support_throttled: MappingSupport = NO_KNOWN_DEFECT,
    support_rbd: MappingSupport = NO_KNOWN_DEFECT,
) -> Decision:
    """Decide how one disk is served.

    ``host_cap``: the agent config's most IOThreads per VM. ``vm_largest_request``: the largest
    ``io_threads`` already requested on this VM (0 if none), so a smaller request on a later disk
    does not shrink what the VM may grow to. ``support_throttled``: whether this host's QEMU may
    run a throttled disk's queues in several IOThreads; where it may not, a throttled disk gets
    one dedicated IOThread for all its queues (the guest still sees every queue).
    ``support_rbd``: the same for an rbd disk (QEMU's rbd multiqueue fix, facts
    ``rbd_multi_iothread``).
    """
    validate_request(request)
    _check_count(vcpus, "vcpus", 1)
    _check_count(host_cpus, "host_cpus", 1)
    _check_count(host_cap, "host_cap", 1)
    _check_count(vm_largest_request, "vm_largest_request", 0, MAX_IO_THREADS)
    bus_max = MAX_QUEUES[request.bus]
    queues = request.queues if request.queues is not None else min(vcpus, bus_max)
    queues_note = f"{queues} queues" if request.queues is not None else f"{queues} queues (vCPUs)"
    if request.io_threads == 0:
        return Decision("none", queues, 0, "io_threads=0: automatic mapping disabled", request.bus)
    support = support_blk if request.bus == "virtio" else support_scsi
    if not support.supported:
        reason = (
            f"{_requested(request)}, mapping not supported: {support.reason}: "
            "fell back to one dedicated IOThread"
        )
        return Decision("single", queues, 1, reason, request.bus)
    if request.rbd and not support_rbd.supported:
        reason = (
            f"{_requested(request)}, {queues_note}, on an rbd disk: {support_rbd.reason}: "
            f"fell back to one dedicated IOThread for all {queues} queues"
        )
        return Decision("single", queues, 1, reason, request.bus)
    if request.throttled and not support_throttled.supported:
        reason = (
            f"{_requested(request)}, {queues_note}, with I/O limits: "
            f"{support_throttled.reason}: all {queues} queues on one dedicated IOThread"
        )
        return Decision("single", queues, 1, reason, request.bus)
    largest = max(request.io_threads or 0, vm_largest_request)
    limits = [("queues", queues), ("host CPUs", host_cpus), ("the host cap", host_cap)]
    # With no request on the VM yet, only the queues and the host bound the pool.
    if largest:
        limits.insert(0, ("the largest request on this VM", largest))
    budget = min(limit for _, limit in limits)
    binding = next(name for name, limit in limits if limit == budget)
    plural = "IOThread" if budget == 1 else "IOThreads"
    reason = (
        f"{_requested(request)}, {queues_note}: mapped over up to {budget} {plural} "
        f"(bound by {binding})"
    )
    return Decision("mapped", queues, budget, reason, request.bus)
