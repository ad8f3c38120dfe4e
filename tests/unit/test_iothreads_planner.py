"""The IOThread planner: examples, and hypothesis properties over attach/detach sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.iothreads.model import (
    Decision,
    DiskMapping,
    IOThreadRequest,
    MappingSupport,
    VMIOThreads,
)
from blockplane.iothreads.planner import apply_plan, plan_attach, plan_detach, plan_vm
from blockplane.iothreads.policy import decide
from blockplane.model.disk import Bus

OK = MappingSupport(True, "supported")
NO_BLK = MappingSupport(False, "needs QEMU >= 9.0, host has 8.2.0")
NO_SCSI = MappingSupport(False, "needs QEMU >= 10.0, host has 9.2.0")
EMPTY = VMIOThreads((), ())


def mapped(queues: int, budget: int, bus: Bus = "virtio") -> Decision:
    return Decision("mapped", queues, budget, "test", bus)


def attach_all(vm: VMIOThreads, *disks: tuple[str, Decision]) -> VMIOThreads:
    for target, decision in disks:
        vm = apply_plan(vm, plan_attach(vm, target, decision))
    return vm


# --- examples ---------------------------------------------------------------------------------


def test_first_disk_gets_a_fresh_pool_from_101_with_every_queue_listed() -> None:
    plan = plan_attach(EMPTY, "vda", mapped(4, 4))
    assert plan.disk.mapping == ((101, (0,)), (102, (1,)), (103, (2,)), (104, (3,)))
    assert plan.iothreads_to_add == (101, 102, 103, 104)
    assert plan.disk.mode == "mapped"
    assert plan.reason == "test; 4 queues over IOThreads 101-104 (new: 101-104)"


def test_more_queues_than_threads_round_robin() -> None:
    plan = plan_attach(EMPTY, "vda", mapped(6, 4))
    assert plan.disk.mapping == ((101, (0, 4)), (102, (1, 5)), (103, (2,)), (104, (3,)))


def test_reserved_and_existing_ids_are_skipped() -> None:
    vm = VMIOThreads((1, 102), (), reserved_ids=(101, 104))
    plan = plan_attach(vm, "vda", mapped(3, 3))
    assert plan.iothreads_to_add == (103, 105)
    # 102 is an owned IOThread serving nothing: it is in the pool and gets used first.
    assert plan.disk.iothread_ids == (102, 103, 105)


def test_second_disk_fills_the_lightest_threads() -> None:
    vm = attach_all(EMPTY, ("vda", mapped(6, 4)))
    plan = plan_attach(vm, "vdb", mapped(2, 4))
    assert plan.disk.mapping == ((103, (0,)), (104, (1,)))
    assert plan.iothreads_to_add == ()
    assert set(apply_plan(vm, plan).pool_loads().values()) == {2}


def test_growth_is_held_back_when_it_would_unbalance_the_pool() -> None:
    vm = attach_all(EMPTY, ("vda", mapped(8, 2)))
    plan = plan_attach(vm, "vdb", mapped(4, 4))
    # Two fresh IOThreads would end at 2 queues beside 4; the disk spreads over the pool instead.
    assert plan.iothreads_to_add == ()
    assert plan.disk.iothread_ids == (101, 102)
    assert "pool kept at 2 of up to 4 IOThreads" in plan.reason
    assert apply_plan(vm, plan).pool_loads() == {101: 6, 102: 6}


def test_growth_happens_when_the_new_disk_can_fill_it() -> None:
    vm = attach_all(EMPTY, ("vda", mapped(2, 2)))
    plan = plan_attach(vm, "vdb", mapped(8, 4))
    assert plan.iothreads_to_add == (103, 104)
    assert apply_plan(vm, plan).pool_loads() == {101: 3, 102: 3, 103: 2, 104: 2}


def test_single_gets_its_own_thread_outside_the_pool() -> None:
    vm = attach_all(EMPTY, ("vda", mapped(2, 2)))
    plan = plan_attach(vm, "vdb", Decision("single", 4, 1, "fell back", "scsi"))
    assert plan.disk.mapping == ((103, (0, 1, 2, 3)),)
    assert plan.iothreads_to_add == (103,)
    assert plan.reason == "fell back (103)"
    after = apply_plan(vm, plan)
    assert after.pool_loads() == {101: 1, 102: 1}
    assert plan_attach(after, "vdc", mapped(2, 2)).disk.iothread_ids == (101, 102)


def test_none_uses_no_thread() -> None:
    plan = plan_attach(EMPTY, "vda", Decision("none", 4, 0, "io_threads=0: off"))
    assert plan.disk.mapping == ()
    assert plan.iothreads_to_add == ()
    assert plan.disk.queues == 4


def test_detach_frees_only_the_orphans_it_owns() -> None:
    vm = VMIOThreads((1, 150), (), reserved_ids=(150,))
    vm = attach_all(vm, ("vda", mapped(4, 4)), ("vdb", mapped(2, 4)))
    assert vm.iothread_ids == (1, 101, 102, 103, 104, 150)
    after, removed = plan_detach(vm, "vdb")
    assert removed == ()
    after, removed = plan_detach(after, "vda")
    assert removed == (101, 102, 103, 104)
    assert after.iothread_ids == (1, 150)
    assert after.disks == ()


def test_detach_can_leave_the_pool_uneven_and_an_attach_never_makes_it_worse() -> None:
    vm = attach_all(
        EMPTY,
        ("vda", mapped(4, 2)),
        ("vdb", mapped(1, 2)),
        ("vdc", mapped(1, 2)),
        ("vdd", mapped(1, 2)),
    )
    assert vm.pool_loads() == {101: 4, 102: 3}
    vm, removed = plan_detach(vm, "vdc")
    assert removed == ()
    assert vm.pool_loads() == {101: 4, 102: 2}
    vm = attach_all(vm, ("vde", mapped(1, 2)))
    assert vm.pool_loads() == {101: 4, 102: 3}


def test_attach_rejects_a_known_target_and_detach_an_unknown_one() -> None:
    vm = attach_all(EMPTY, ("vda", mapped(1, 1)))
    with pytest.raises(Conflict):
        plan_attach(vm, "vda", mapped(1, 1))
    with pytest.raises(NotFound):
        plan_detach(vm, "vdz")


@pytest.mark.parametrize(
    "mapping",
    [
        ((101, (0, 1)),),  # queue 2 missing
        ((101, (0, 1, 2)), (102, (2,))),  # queue 2 twice
        ((101, (0, 1, 2)), (102, ())),  # a thread serving nothing
        ((102, (0,)), (101, (1, 2))),  # not ascending
    ],
)
def test_malformed_mapping_is_rejected(mapping: tuple[tuple[int, tuple[int, ...]], ...]) -> None:
    with pytest.raises(InvalidInput):
        DiskMapping("vda", 3, mapping)


def test_plan_vm_plans_big_disks_first_and_returns_plans_in_order() -> None:
    requests = [
        ("vda", IOThreadRequest(1, 1, "virtio")),
        ("vdb", IOThreadRequest(4, 8, "virtio")),
        ("sda", IOThreadRequest(None, 4, "scsi")),
        ("vdc", IOThreadRequest(0, 2, "virtio")),
    ]
    vm, plans = plan_vm(
        8,
        requests,
        host_cpus=16,
        host_cap=64,
        support_blk=OK,
        support_scsi=NO_SCSI,
        reserved_ids=[102],
    )
    assert [plan.disk.target for plan in plans] == ["vda", "vdb", "sda", "vdc"]
    assert [disk.target for disk in vm.disks] == ["vda", "vdb", "sda", "vdc"]
    assert [plan.disk.mode for plan in plans] == ["mapped", "mapped", "single", "none"]
    # vdb (8 queues, largest request 4) first: pool 101, 103, 104, 105; vda joins the lightest.
    assert plans[1].disk.iothread_ids == (101, 103, 104, 105)
    assert plans[0].disk.mapping == ((101, (0,)),)
    assert plans[2].disk.mapping == ((106, (0, 1, 2, 3)),)
    assert vm.iothread_ids == (101, 103, 104, 105, 106)
    assert vm.reserved_ids == (102,)


def test_plan_vm_validates_every_request_first() -> None:
    with pytest.raises(InvalidInput):
        plan_vm(
            4,
            [("vda", IOThreadRequest(1, 1, "virtio")), ("vdb", IOThreadRequest(-1, 1, "virtio"))],
            host_cpus=4,
            host_cap=4,
            support_blk=OK,
            support_scsi=OK,
        )


def test_64_disks_of_16_queues_balance_exactly() -> None:
    requests = [(f"vd{index}", IOThreadRequest(8, 16, "virtio")) for index in range(64)]
    vm, plans = plan_vm(16, requests, host_cpus=32, host_cap=64, support_blk=OK, support_scsi=OK)
    assert vm.pool_loads() == {iothread: 128 for iothread in range(101, 109)}
    assert all(len(plan.disk.mapping) == 8 for plan in plans)


# --- properties -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attach:
    queues: int
    io_threads: int
    bus: Bus


@dataclass(frozen=True)
class Detach:
    pick: int


@dataclass(frozen=True)
class Host:
    cpus: int
    cap: int
    support_blk: MappingSupport
    support_scsi: MappingSupport
    reserved: tuple[int, ...]


attaches = st.builds(
    Attach,
    queues=st.integers(1, 16),
    io_threads=st.integers(0, 8),
    bus=st.sampled_from(["virtio", "scsi"]),
)
detaches = st.builds(Detach, pick=st.integers(0, 1_000))
hosts = st.builds(
    Host,
    cpus=st.integers(1, 16),
    cap=st.integers(1, 16),
    support_blk=st.sampled_from([OK, OK, NO_BLK]),
    support_scsi=st.sampled_from([OK, NO_SCSI]),
    reserved=st.lists(st.integers(95, 125), unique=True, max_size=8).map(
        lambda ids: tuple(sorted(ids))
    ),
)


def check_vm(vm: VMIOThreads, host: Host) -> None:
    """Invariants of any state the planner produces from an empty VM."""
    assert len(set(vm.iothread_ids)) == len(vm.iothread_ids)
    assert all(iothread >= 101 for iothread in vm.iothread_ids)
    assert not set(vm.iothread_ids) & set(host.reserved)
    served: dict[int, list[str]] = {}
    for disk in vm.disks:
        queues = sorted(queue for _, disk_queues in disk.mapping for queue in disk_queues)
        if disk.mode == "none":
            assert queues == []
        else:
            assert queues == list(range(disk.queues))
        for iothread in disk.iothread_ids:
            served.setdefault(iothread, []).append(disk.target)
    # No idle IOThread is ever left behind, and a dedicated one serves only its disk.
    assert set(served) == set(vm.iothread_ids)
    for disk in vm.disks:
        if disk.mode == "single":
            assert served[disk.iothread_ids[0]] == [disk.target]


def attach(vm: VMIOThreads, host: Host, step: Attach, target: str, largest: int) -> VMIOThreads:
    decision = decide(
        IOThreadRequest(step.io_threads, step.queues, step.bus),
        8,
        host.cpus,
        host.cap,
        host.support_blk,
        host.support_scsi,
        vm_largest_request=largest,
    )
    plan = plan_attach(vm, target, decision)
    after = apply_plan(vm, plan)
    assert after.disks[:-1] == vm.disks, "an attach never moves existing disks"
    assert set(plan.iothreads_to_add) == set(after.iothread_ids) - set(vm.iothread_ids)
    assert set(plan.iothreads_to_add) <= set(plan.disk.iothread_ids)
    assert plan.disk.queues == step.queues
    pool_before, pool_after = vm.pool_loads(), after.pool_loads()
    if plan.disk.mode == "mapped":
        assert after.spread() <= max(vm.spread(), 1)
        assert len(pool_after) <= max(len(pool_before), decision.thread_budget)
        assert set(plan.disk.iothread_ids) <= set(pool_after)
    else:
        assert pool_after == pool_before
    return after


@settings(max_examples=150, deadline=None)
@given(host=hosts, steps=st.lists(st.one_of(attaches, detaches), max_size=30))
def test_random_attach_detach_sequences_keep_the_invariants(
    host: Host, steps: list[Attach | Detach]
) -> None:
    vm = VMIOThreads((), (), host.reserved)
    largest = 0
    for number, step in enumerate(steps):
        if isinstance(step, Attach):
            vm = attach(vm, host, step, f"disk{number}", largest)
            largest = max(largest, step.io_threads)
        elif vm.disks:
            target = vm.disks[step.pick % len(vm.disks)].target
            after, removed = plan_detach(vm, target)
            remaining_use = {i for disk in after.disks for i in disk.iothread_ids}
            assert set(removed) == set(vm.iothread_ids) - remaining_use
            assert set(after.iothread_ids) == set(vm.iothread_ids) - set(removed)
            assert [disk.target for disk in after.disks] == [
                disk.target for disk in vm.disks if disk.target != target
            ]
            vm = after
        check_vm(vm, host)


@settings(max_examples=150, deadline=None)
@given(host=hosts, steps=st.lists(attaches, min_size=1, max_size=30))
def test_attach_only_sequences_keep_the_pool_within_one_queue(
    host: Host, steps: list[Attach]
) -> None:
    vm = VMIOThreads((), (), host.reserved)
    largest = 0
    for number, step in enumerate(steps):
        pool_before = len(vm.pool_loads())
        vm = attach(vm, host, step, f"disk{number}", largest)
        largest = max(largest, step.io_threads)
        check_vm(vm, host)
        assert vm.spread() <= 1
        disk = vm.disks[-1]
        if disk.mode == "mapped":
            # Spread over the pool: as many IOThreads as the queues allow, at least the old pool.
            assert len(disk.mapping) >= min(disk.queues, max(pool_before, 1))


@pytest.mark.parametrize(
    ("mode", "queues", "budget"),
    [("mapped", 4, 0), ("single", 4, 2), ("none", 4, 1), ("mapped", 0, 1), ("other", 1, 0)],
)
def test_inconsistent_decision_is_rejected(mode: Any, queues: int, budget: int) -> None:
    with pytest.raises(InvalidInput):
        Decision(mode, queues, budget, "test")
