"""The IOThread policy: capability gating matrix, defaults, budget and input validation."""

from __future__ import annotations

from typing import Any

import pytest

from blockplane.errors import InvalidInput
from blockplane.iothreads.model import IOThreadRequest, MappingSupport
from blockplane.iothreads.policy import MAX_QUEUES, decide
from blockplane.model.disk import Bus

BLK_OK = MappingSupport(True, "QEMU 10.0.2 >= 9.0, libvirt 11.3.0 >= 10.0")
SCSI_OK = MappingSupport(True, "QEMU 10.0.2 >= 10.0, libvirt 11.3.0 >= 11.2")
BLK_OLD_QEMU = MappingSupport(False, "needs QEMU >= 9.0, host has 8.2.0")
SCSI_OLD_QEMU = MappingSupport(False, "needs QEMU >= 10.0, host has 8.2.0")
SCSI_QEMU_9 = MappingSupport(False, "needs QEMU >= 10.0, host has 9.2.0")
BLK_OLD_LIBVIRT = MappingSupport(False, "needs libvirt >= 10.0, host has 9.0.0")
SCSI_OLD_LIBVIRT = MappingSupport(False, "needs libvirt >= 11.2, host has 11.0.0")

# Hosts as (virtio-blk support, virtio-scsi support), the way facts would compute them.
HOSTS = {
    "qemu 8.2 / libvirt 9.0": (BLK_OLD_QEMU, SCSI_OLD_QEMU),
    "qemu 9.2 / libvirt 9.0": (BLK_OLD_LIBVIRT, SCSI_QEMU_9),
    "qemu 9.2 / libvirt 10.5": (BLK_OK, SCSI_QEMU_9),
    "qemu 10.0 / libvirt 11.0": (BLK_OK, SCSI_OLD_LIBVIRT),
    "qemu 10.0 / libvirt 11.3": (BLK_OK, SCSI_OK),
}

NONE = "io_threads=0: automatic mapping disabled"

# host, bus, io_threads -> mode, and for a fallback the support reason the answer must quote
GATING: list[tuple[str, Bus, int | None, str, str | None]] = [
    ("qemu 8.2 / libvirt 9.0", "virtio", 4, "single", "needs QEMU >= 9.0, host has 8.2.0"),
    ("qemu 8.2 / libvirt 9.0", "scsi", 4, "single", "needs QEMU >= 10.0, host has 8.2.0"),
    ("qemu 8.2 / libvirt 9.0", "virtio", None, "single", "needs QEMU >= 9.0, host has 8.2.0"),
    ("qemu 8.2 / libvirt 9.0", "virtio", 0, "none", None),
    ("qemu 9.2 / libvirt 9.0", "virtio", 2, "single", "needs libvirt >= 10.0, host has 9.0.0"),
    ("qemu 9.2 / libvirt 10.5", "virtio", 2, "mapped", None),
    ("qemu 9.2 / libvirt 10.5", "scsi", 2, "single", "needs QEMU >= 10.0, host has 9.2.0"),
    ("qemu 10.0 / libvirt 11.0", "virtio", 2, "mapped", None),
    ("qemu 10.0 / libvirt 11.0", "scsi", 2, "single", "needs libvirt >= 11.2, host has 11.0.0"),
    ("qemu 10.0 / libvirt 11.3", "virtio", 2, "mapped", None),
    ("qemu 10.0 / libvirt 11.3", "scsi", 2, "mapped", None),
    ("qemu 10.0 / libvirt 11.3", "scsi", None, "mapped", None),
    ("qemu 10.0 / libvirt 11.3", "scsi", 0, "none", None),
]


@pytest.mark.parametrize(("host", "bus", "io_threads", "mode", "missing"), GATING)
def test_gating_matrix(
    host: str, bus: Bus, io_threads: int | None, mode: str, missing: str | None
) -> None:
    support_blk, support_scsi = HOSTS[host]
    decision = decide(IOThreadRequest(io_threads, 4, bus), 8, 16, 64, support_blk, support_scsi)
    assert (decision.mode, decision.bus, decision.queues) == (mode, bus, 4)
    budgets = {"mapped": min(io_threads or 4, 4), "single": 1, "none": 0}
    assert decision.thread_budget == budgets[mode]
    if mode == "none":
        assert decision.reason == NONE
    if mode == "single":
        asked = "io_threads not set" if io_threads is None else f"io_threads {io_threads} requested"
        assert decision.reason == (
            f"{asked}, mapping not supported: {missing}: fell back to one dedicated IOThread"
        )


def test_the_issue_example_reason_word_for_word() -> None:
    decision = decide(IOThreadRequest(4, None, "virtio"), 8, 8, 64, BLK_OLD_QEMU, SCSI_OLD_QEMU)
    assert decision.reason == (
        "io_threads 4 requested, mapping not supported: needs QEMU >= 9.0, host has 8.2.0: "
        "fell back to one dedicated IOThread"
    )


# io_threads, queues, vcpus, host_cpus, host_cap, vm_largest -> queues, budget, bound by
BUDGETS = [
    (None, None, 4, 16, 64, 0, 4, 4, "queues"),
    (None, None, 1, 16, 64, 0, 1, 1, "queues"),
    (4, None, 8, 16, 64, 0, 8, 4, "the largest request on this VM"),
    (4, 8, 2, 16, 64, 0, 8, 4, "the largest request on this VM"),
    (8, 2, 8, 16, 64, 0, 2, 2, "queues"),
    (4, None, 8, 2, 64, 0, 8, 2, "host CPUs"),
    (8, 16, 8, 16, 3, 0, 16, 3, "the host cap"),
    (1, 8, 8, 16, 64, 6, 8, 6, "the largest request on this VM"),
    (None, 8, 8, 16, 64, 2, 8, 2, "the largest request on this VM"),
    (8, 8, 8, 16, 64, 2, 8, 8, "the largest request on this VM"),
]


@pytest.mark.parametrize(
    (
        "io_threads",
        "queues",
        "vcpus",
        "host_cpus",
        "host_cap",
        "vm_largest",
        "want_queues",
        "want_budget",
        "bound",
    ),
    BUDGETS,
)
def test_mapped_budget_is_min_of_largest_request_queues_cpus_and_cap(
    io_threads: int | None,
    queues: int | None,
    vcpus: int,
    host_cpus: int,
    host_cap: int,
    vm_largest: int,
    want_queues: int,
    want_budget: int,
    bound: str,
) -> None:
    decision = decide(
        IOThreadRequest(io_threads, queues, "virtio"),
        vcpus,
        host_cpus,
        host_cap,
        BLK_OK,
        SCSI_OK,
        vm_largest_request=vm_largest,
    )
    assert (decision.mode, decision.queues, decision.thread_budget) == (
        "mapped",
        want_queues,
        want_budget,
    )
    assert decision.reason.endswith(f"(bound by {bound})")
    assert f"mapped over up to {want_budget} IOThread" in decision.reason


def test_reason_reads_like_the_spec() -> None:
    decision = decide(IOThreadRequest(4, None, "virtio"), 8, 2, 64, BLK_OK, SCSI_OK)
    assert decision.reason == (
        "io_threads 4 requested, 8 queues (vCPUs): mapped over up to 2 IOThreads "
        "(bound by host CPUs)"
    )


@pytest.mark.parametrize(("bus", "vcpus", "want"), [("virtio", 2000, 1024), ("scsi", 2000, 1022)])
def test_default_queues_stay_within_the_bus_maximum(bus: Bus, vcpus: int, want: int) -> None:
    decision = decide(IOThreadRequest(None, None, bus), vcpus, 4, 64, BLK_OK, SCSI_OK)
    assert decision.queues == want


@pytest.mark.parametrize(("bus", "queues"), [("virtio", 1024), ("scsi", 1022), ("virtio", 1)])
def test_queue_limits_are_accepted(bus: Bus, queues: int) -> None:
    assert decide(IOThreadRequest(None, queues, bus), 1, 1, 1, BLK_OK, SCSI_OK).queues == queues


REQUEST_OK: dict[str, Any] = {"io_threads": 2, "queues": 4, "bus": "virtio"}
HOST_OK: dict[str, Any] = {"vcpus": 4, "host_cpus": 4, "host_cap": 8, "vm_largest_request": 0}

INVALID = [
    ({"io_threads": -1}, {}, "io_threads"),
    ({"io_threads": MAX_QUEUES["virtio"] + 1}, {}, "io_threads"),
    ({"io_threads": True}, {}, "io_threads"),
    ({"io_threads": "4"}, {}, "io_threads"),
    ({"queues": 0}, {}, "queues"),
    ({"queues": -3}, {}, "queues"),
    ({"queues": 1025}, {}, "queues"),
    ({"queues": 1023, "bus": "scsi"}, {}, "queues"),
    ({"queues": 2.0}, {}, "queues"),
    ({"bus": "ide"}, {}, "bus"),
    ({}, {"vcpus": 0}, "vcpus"),
    ({}, {"host_cpus": 0}, "host_cpus"),
    ({}, {"host_cap": 0}, "host_cap"),
    ({}, {"vm_largest_request": -1}, "vm_largest_request"),
]


@pytest.mark.parametrize(("request_fields", "host_fields", "field"), INVALID)
def test_invalid_input_is_rejected_with_iothreads_invalid(
    request_fields: dict[str, Any], host_fields: dict[str, Any], field: str
) -> None:
    request = IOThreadRequest(**(REQUEST_OK | request_fields))
    host = HOST_OK | host_fields
    with pytest.raises(InvalidInput) as raised:
        decide(
            request,
            host["vcpus"],
            host["host_cpus"],
            host["host_cap"],
            BLK_OK,
            SCSI_OK,
            vm_largest_request=host["vm_largest_request"],
        )
    assert raised.value.code == "iothreads.invalid"
    assert raised.value.details["field"] == field
    assert raised.value.exit_code == 2


def test_invalid_input_is_rejected_even_when_mapping_is_unsupported() -> None:
    with pytest.raises(InvalidInput):
        decide(IOThreadRequest(0, 0, "virtio"), 4, 4, 4, BLK_OLD_QEMU, SCSI_OLD_QEMU)


THROTTLE_DEADLOCK = MappingSupport(False, "QEMU 10.0.2 deadlocks a throttled disk on 2+ IOThreads")


@pytest.mark.parametrize("bus", ["virtio", "scsi"])
@pytest.mark.parametrize("io_threads", [None, 2, 4])
def test_a_throttled_disk_gets_one_iothread_for_all_its_queues(
    bus: Bus, io_threads: int | None
) -> None:
    request = IOThreadRequest(io_threads, 4, bus, throttled=True)
    decision = decide(request, 4, 8, 8, BLK_OK, SCSI_OK, support_throttled=THROTTLE_DEADLOCK)
    assert (decision.mode, decision.queues, decision.thread_budget) == ("single", 4, 1)
    assert THROTTLE_DEADLOCK.reason in decision.reason
    assert "all 4 queues on one dedicated IOThread" in decision.reason


def test_an_unthrottled_disk_is_still_mapped_where_throttled_ones_are_not() -> None:
    request = IOThreadRequest(None, 4, "virtio")
    decision = decide(request, 4, 8, 8, BLK_OK, SCSI_OK, support_throttled=THROTTLE_DEADLOCK)
    assert (decision.mode, decision.thread_budget) == ("mapped", 4)


def test_io_threads_zero_wins_over_the_throttle_gate() -> None:
    request = IOThreadRequest(0, 4, "virtio", throttled=True)
    decision = decide(request, 4, 8, 8, BLK_OK, SCSI_OK, support_throttled=THROTTLE_DEADLOCK)
    assert decision.mode == "none"
