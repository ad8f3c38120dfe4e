"""Placement: migration gaps per disk, and the host-allocator filter."""

from __future__ import annotations

import pytest

from blockplane.errors import InvalidInput
from blockplane.iothreads.model import DiskMapping, MappingSupport, VMIOThreads
from blockplane.iothreads.placement import Gap, hosts_that_can_run, migration_gaps

OK = MappingSupport(True, "supported")
NO_BLK = MappingSupport(False, "needs QEMU >= 9.0, host has 8.2.0")
NO_SCSI = MappingSupport(False, "needs QEMU >= 10.0, host has 9.2.0")

VDA = DiskMapping("vda", 4, ((101, (0, 2)), (102, (1, 3))))
SDA = DiskMapping("sda", 4, ((103, (0,)), (104, (1,)), (105, (2,)), (106, (3,))), bus="scsi")
VDB_SINGLE = DiskMapping("vdb", 2, ((107, (0, 1)),), mode="single")
VDC_NONE = DiskMapping("vdc", 2, (), mode="none")
VM = VMIOThreads(tuple(range(101, 108)), (VDA, SDA, VDB_SINGLE, VDC_NONE))


def test_a_host_with_everything_has_no_gap() -> None:
    assert migration_gaps(VM.disks, OK, OK, 8) == []


def test_a_host_without_scsi_mapping_lists_the_scsi_disk_with_its_fallback() -> None:
    assert migration_gaps(VM.disks, OK, NO_SCSI, 8) == [
        Gap(
            "sda",
            "scsi_iothread_vq_mapping",
            "4 queues mapped over 4 IOThreads; mapping not supported: "
            "needs QEMU >= 10.0, host has 9.2.0",
            "one dedicated IOThread for all 4 queues",
        )
    ]


def test_an_old_host_lists_every_mapped_disk_in_order() -> None:
    gaps = migration_gaps(VM.disks, NO_BLK, NO_SCSI, 8)
    assert [(gap.target, gap.feature) for gap in gaps] == [
        ("vda", "iothread_vq_mapping"),
        ("sda", "scsi_iothread_vq_mapping"),
    ]
    assert "needs QEMU >= 9.0, host has 8.2.0" in gaps[0].reason


def test_a_disk_spread_wider_than_the_host_has_cpus_is_a_gap() -> None:
    assert migration_gaps(VM.disks, OK, OK, 3) == [
        Gap(
            "sda",
            "iothread_cpus",
            "mapped over 4 IOThreads, host has 3 CPUs",
            "a mapping over at most 3 IOThreads",
        )
    ]


def test_single_and_none_disks_never_need_mapping_support() -> None:
    assert migration_gaps((VDB_SINGLE, VDC_NONE), NO_BLK, NO_SCSI, 1) == []


def test_cpu_count_must_be_positive() -> None:
    with pytest.raises(InvalidInput):
        migration_gaps(VM.disks, OK, OK, 0)


def test_hosts_that_can_run_keeps_order_and_drops_any_host_with_a_gap() -> None:
    hosts = [
        ("h1", OK, OK, 16),
        ("old", NO_BLK, NO_SCSI, 16),
        ("no-scsi", OK, NO_SCSI, 16),
        ("small", OK, OK, 2),
        ("h2", OK, OK, 4),
    ]
    assert hosts_that_can_run(VM, hosts) == ["h1", "h2"]


def test_a_vm_without_mappings_runs_anywhere() -> None:
    vm = VMIOThreads((107,), (VDB_SINGLE, VDC_NONE))
    assert hosts_that_can_run(vm, [("a", NO_BLK, NO_SCSI, 1), ("b", OK, OK, 1)]) == ["a", "b"]
