"""IOThread planner: picks IOThread ids and writes each disk's explicit queue mapping.

Owns the VM's one shared pool of IOThreads and the arithmetic of attach and detach. Must not
decide modes or budgets (``policy``), talk to libvirt, or write XML; its output is applied by
the hypervisor layer (add the IOThreads, then attach; roll both back on failure).

The pool: the VM's IOThreads with ids >= 101 that are not in ``reserved_ids``, minus those
dedicated to a ``single`` disk. New ids are the lowest free ids >= 101 that are neither in use
on the VM nor reserved. Load = queues served by an IOThread; spread = max load - min load.

Live disks cannot be remapped, so existing mappings are never moved, and after a detach the
spread can exceed 1 with no way back short of a re-plan. What is guaranteed:

1. Every queue of a ``mapped`` or ``single`` disk is served exactly once, and every listed
   IOThread serves at least one queue; a ``none`` disk lists none.
2. Ids the planner creates are >= 101, unique on the VM, and never reserved.
3. An attach leaves every other disk's mapping unchanged, and ``iothreads_to_add`` is exactly
   the ids of the new disk's mapping that the VM did not have.
4. An attach of a ``mapped`` disk leaves spread <= max(spread before, 1). Hence over any
   sequence of attaches without detaches (from an empty pool) the spread is at most 1.
5. The pool grows only up to the decision's ``thread_budget``, and only as far as (4) allows:
   each queue goes to the least-loaded IOThread (ties: lowest id), so a brand-new IOThread at
   load 0 beside IOThreads at load 4 would break (4) unless the new disk can fill it. Growth
   is then held back and happens on a later attach. Among the growths (4) allows, the one that
   spreads the new disk over the most IOThreads wins, then the larger pool: a disk is never
   piled onto one fresh IOThread when the existing pool could spread it. After attaches only,
   a disk is spread over at least min(its queues, the pool's size before it) IOThreads.
6. A detach removes exactly the owned IOThreads (>= 101, not reserved) that serve no queue
   of a remaining disk.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from blockplane.errors import Conflict, NotFound
from blockplane.iothreads.model import (
    FIRST_PLANNER_ID,
    Decision,
    DiskMapping,
    IOThreadPlan,
    IOThreadRequest,
    MappingSupport,
    VMIOThreads,
)
from blockplane.iothreads.policy import decide, validate_request

Assignment = dict[int, list[int]]


def _free_ids(vm: VMIOThreads, count: int) -> list[int]:
    taken = set(vm.iothread_ids) | set(vm.reserved_ids)
    fresh: list[int] = []
    candidate = FIRST_PLANNER_ID
    while len(fresh) < count:
        if candidate not in taken:
            fresh.append(candidate)
        candidate += 1
    return fresh


def _assign(loads: dict[int, int], queues: int) -> tuple[Assignment, dict[int, int]]:
    """Greedy: each queue to the least-loaded IOThread, ties by lowest id."""
    heap = [(load, iothread) for iothread, load in loads.items()]
    heapq.heapify(heap)
    assignment: Assignment = {}
    for queue in range(queues):
        load, iothread = heapq.heappop(heap)
        assignment.setdefault(iothread, []).append(queue)
        heapq.heappush(heap, (load + 1, iothread))
    return assignment, {iothread: load for load, iothread in heap}


def _spread_with_growth(
    loads: dict[int, int], fresh: list[int], queues: int
) -> tuple[int, Assignment]:
    candidates = dict(loads) | dict.fromkeys(fresh, 0)
    assignment, after = _assign(candidates, queues)
    unused = set(fresh) - set(assignment)
    final = [load for iothread, load in after.items() if iothread not in unused]
    return max(final) - min(final), assignment


def _ranges(ids: Iterable[int]) -> str:
    ordered = sorted(ids)
    parts: list[str] = []
    start = previous = ordered[0]
    for iothread in [*ordered[1:], None]:
        if iothread is not None and iothread == previous + 1:
            previous = iothread
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if iothread is not None:
            start = previous = iothread
    return ", ".join(parts)


def _plan_mapped(vm: VMIOThreads, target: str, decision: Decision) -> IOThreadPlan:
    loads = vm.pool_loads()
    queues = decision.queues
    room = max(0, min(decision.thread_budget - len(loads), queues))
    fresh = _free_ids(vm, room)
    allowed = max(max(loads.values(), default=0) - min(loads.values(), default=0), 1)
    # Growth 0 keeps the spread within bounds on a non-empty pool, and a growth that breaks
    # it means every larger one does too: search the largest growth that keeps it.
    low, high = (0 if loads else 1), room
    while low < high:
        middle = (low + high + 1) // 2
        if _spread_with_growth(loads, fresh[:middle], queues)[0] <= allowed:
            low = middle
        else:
            high = middle - 1
    # Among the growths that keep it, spread this disk over the most IOThreads, then prefer
    # the larger pool; no smaller growth can beat min(queues, pool) IOThreads.
    best: Assignment = {}
    for growth in range(low, -1 if loads else 0, -1):
        if min(queues, len(loads) + growth) <= len(best):
            break
        spread, assignment = _spread_with_growth(loads, fresh[:growth], queues)
        if spread <= allowed and len(assignment) > len(best):
            best = assignment
    mapping = tuple((iothread, tuple(served)) for iothread, served in sorted(best.items()))
    disk = DiskMapping(target, decision.queues, mapping, "mapped", decision.bus)
    added = tuple(iothread for iothread in fresh if iothread in best)
    threads = "IOThread" if len(best) == 1 else "IOThreads"
    reason = f"{decision.reason}; {queues} queues over {threads} {_ranges(best)}"
    if added:
        reason += f" (new: {_ranges(added)})"
    pool_after = len(loads) + len(added)
    if pool_after < decision.thread_budget and len(added) < room:
        reason += (
            f"; pool kept at {pool_after} of up to {decision.thread_budget} IOThreads to keep "
            "the load even and this disk spread"
        )
    return IOThreadPlan(disk, added, reason)


def plan_attach(vm: VMIOThreads, target: str, decision: Decision) -> IOThreadPlan:
    """Plan one disk's IOThreads on ``vm``; ``vm`` itself is not changed (see ``apply_plan``)."""
    if vm.disk(target) is not None:
        raise Conflict(f"{target} already has an IOThread mapping", code="disk.exists")
    if decision.mode == "none":
        disk = DiskMapping(target, decision.queues, (), "none", decision.bus)
        return IOThreadPlan(disk, (), decision.reason)
    if decision.mode == "single":
        (dedicated,) = _free_ids(vm, 1)
        mapping = ((dedicated, tuple(range(decision.queues))),)
        disk = DiskMapping(target, decision.queues, mapping, "single", decision.bus)
        return IOThreadPlan(disk, (dedicated,), f"{decision.reason} ({dedicated})")
    return _plan_mapped(vm, target, decision)


def apply_plan(vm: VMIOThreads, plan: IOThreadPlan) -> VMIOThreads:
    """The VM's state once ``plan`` has been applied."""
    iothread_ids = tuple(sorted({*vm.iothread_ids, *plan.iothreads_to_add}))
    return VMIOThreads(iothread_ids, (*vm.disks, plan.disk), vm.reserved_ids)


def plan_detach(vm: VMIOThreads, target: str) -> tuple[VMIOThreads, tuple[int, ...]]:
    """The VM without ``target``, and the IOThreads to remove because nothing uses them."""
    if vm.disk(target) is None:
        raise NotFound(f"{target} has no IOThread mapping", code="disk.not_found")
    remaining = tuple(disk for disk in vm.disks if disk.target != target)
    used = {iothread for disk in remaining for iothread in disk.iothread_ids}
    to_remove = tuple(sorted(vm.owned_ids() - used))
    kept = tuple(iothread for iothread in vm.iothread_ids if iothread not in to_remove)
    return VMIOThreads(kept, remaining, vm.reserved_ids), to_remove


def plan_vm(
    vcpus: int,
    requests: Sequence[tuple[str, IOThreadRequest]],
    *,
    host_cpus: int,
    host_cap: int,
    support_blk: MappingSupport,
    support_scsi: MappingSupport,
    reserved_ids: Iterable[int] = (),
) -> tuple[VMIOThreads, tuple[IOThreadPlan, ...]]:
    """Define-time plan for a new VM's disks; plans come back in the order of ``requests``.

    Every request is validated before anything is planned. The largest ``io_threads`` counts
    for every disk, and disks with more queues are planned first so the pool reaches its size
    at once instead of being held back by (5).
    """
    for _, request in requests:
        validate_request(request)
    largest = max((request.io_threads or 0 for _, request in requests), default=0)
    decisions = [
        decide(
            request,
            vcpus,
            host_cpus,
            host_cap,
            support_blk,
            support_scsi,
            vm_largest_request=largest,
        )
        for _, request in requests
    ]
    vm = VMIOThreads((), (), tuple(sorted(set(reserved_ids))))
    order = sorted(range(len(requests)), key=lambda index: -decisions[index].queues)
    plans: dict[int, IOThreadPlan] = {}
    for index in order:
        plans[index] = plan_attach(vm, requests[index][0], decisions[index])
        vm = apply_plan(vm, plans[index])
    disks_in_order = tuple(plans[index].disk for index in range(len(requests)))
    return (
        VMIOThreads(vm.iothread_ids, disks_in_order, vm.reserved_ids),
        tuple(plans[index] for index in range(len(requests))),
    )
