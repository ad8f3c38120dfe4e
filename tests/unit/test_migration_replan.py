"""Re-planning a VM's IOThreads for the destination: what it can run stays as it is, the rest
falls back by the hotplug policy with the reason, and the guest keeps every queue."""

from __future__ import annotations

from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.iothreads.model import DiskMapping, MappingSupport, VMIOThreads
from blockplane.migration.replan import DiskRequest, replan

OK = MappingSupport(True, "supported")
NO_MAPPING = MappingSupport(False, "needs QEMU >= 9.0, host has 8.2.0")
THROTTLE_DEADLOCK = MappingSupport(False, "QEMU 10.0.2 throttle groups deadlock")

VDA = DiskMapping("vda", 4, ((101, (0, 2)), (102, (1, 3))))
VDB = DiskMapping("vdb", 2, ((103, (0, 1)),), mode="single")
WIDE = DiskMapping("vdc", 4, ((104, (0,)), (105, (1,)), (106, (2,)), (107, (3,))))
VM = VMIOThreads((101, 102, 103), (VDA, VDB))


def limits(cpus: int = 8, cap: int = 16, blk: MappingSupport = OK,
           throttled: MappingSupport = OK) -> HostIOThreadLimits:
    return HostIOThreadLimits(cpus, cap, blk, OK, throttled)


def every_queue_once(disk: DiskMapping) -> bool:
    served = sorted(queue for _, queues in disk.mapping for queue in queues)
    return served == list(range(disk.queues))


def test_a_host_that_runs_every_mapping_keeps_them_ids_and_all() -> None:
    result = replan(VM, {"vda": DiskRequest(2, False)}, 4, limits())
    assert [(d.disk, d.kept) for d in result.disks] == [(VDA, True), (VDB, True)]
    assert result.iothread_ids == (101, 102, 103)


def test_without_the_mapping_a_mapped_disk_falls_back_to_one_iothread_with_the_reason() -> None:
    result = replan(VM, {"vda": DiskRequest(2, False)}, 4, limits(blk=NO_MAPPING))
    vda = result.disk("vda")
    assert not vda.kept
    assert vda.disk.mode == "single" and vda.disk.queues == 4 and every_queue_once(vda.disk)
    assert "mapping not supported: needs QEMU >= 9.0, host has 8.2.0" in vda.reason
    assert "fell back to one dedicated IOThread" in vda.reason
    # the single disk keeps its own; the fallback gets an id nobody else holds
    assert result.disk("vdb").disk == VDB
    assert vda.disk.mapping[0][0] not in (103,)
    assert set(result.iothread_ids) == {103, vda.disk.mapping[0][0]}


def test_more_queues_than_destination_cpus_keeps_the_queues_over_fewer_iothreads() -> None:
    vm = VMIOThreads((104, 105, 106, 107), (WIDE,))
    result = replan(vm, {"vdc": DiskRequest(4, False)}, 4, limits(cpus=2))
    vdc = result.disk("vdc")
    assert not vdc.kept and "host has 2 CPUs" in vdc.reason
    assert vdc.disk.mode == "mapped" and vdc.disk.queues == 4 and every_queue_once(vdc.disk)
    assert len(vdc.disk.mapping) == 2
    assert len(result.iothread_ids) == 2


def test_a_host_cap_below_the_mapping_replans_it() -> None:
    vm = VMIOThreads((104, 105, 106, 107), (WIDE,))
    result = replan(vm, {"vdc": DiskRequest(None, False)}, 4, limits(cap=3))
    assert len(result.disk("vdc").disk.mapping) == 3
    assert "allows 3 per VM" in result.disk("vdc").reason


def test_a_throttled_disk_over_several_iothreads_gets_one_where_qemu_needs_it() -> None:
    result = replan(VM, {"vda": DiskRequest(2, True)}, 4, limits(throttled=THROTTLE_DEADLOCK))
    vda = result.disk("vda")
    assert vda.disk.mode == "single" and every_queue_once(vda.disk)
    assert "throttle groups deadlock" in vda.reason


def test_reserved_ids_below_101_are_kept_and_never_handed_out() -> None:
    vm = VMIOThreads((1, 101, 102), (DiskMapping("vda", 2, ((101, (0,)), (102, (1,)))),), (1,))
    result = replan(vm, {}, 2, limits(blk=NO_MAPPING))
    assert 1 in result.iothread_ids
    assert result.disk("vda").disk.mapping[0][0] >= 101
