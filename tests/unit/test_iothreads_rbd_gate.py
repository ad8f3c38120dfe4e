"""The IOThread policy for an rbd disk where QEMU lacks the rbd multiqueue fix."""

from __future__ import annotations

from blockplane.iothreads import IOThreadRequest, MappingSupport, decide

YES = MappingSupport(True, "QEMU 10.0.2 and libvirt 11.3.0 support it")
NO_FIX = MappingSupport(False, "QEMU 10.0.2 lacks the rbd multiqueue fix")


def test_an_rbd_disk_falls_back_to_one_dedicated_iothread_with_the_reason() -> None:
    decision = decide(IOThreadRequest(4, 4, "virtio", rbd=True), 4, 8, 8, YES, YES,
                      support_rbd=NO_FIX)
    assert (decision.mode, decision.queues, decision.thread_budget) == ("single", 4, 1)
    assert "on an rbd disk" in decision.reason and "rbd multiqueue fix" in decision.reason
    assert "fell back to one dedicated IOThread" in decision.reason


def test_with_the_fix_an_rbd_disk_is_mapped_like_any_other() -> None:
    fixed = MappingSupport(True, "QEMU 10.2.0 carries the rbd multiqueue fix")
    decision = decide(IOThreadRequest(4, 4, "virtio", rbd=True), 4, 8, 8, YES, YES,
                      support_rbd=fixed)
    assert decision.mode == "mapped" and decision.thread_budget == 4


def test_a_local_disk_is_not_held_by_the_rbd_gate() -> None:
    decision = decide(IOThreadRequest(4, 4, "virtio"), 4, 8, 8, YES, YES, support_rbd=NO_FIX)
    assert decision.mode == "mapped"


def test_io_threads_zero_still_means_no_iothread() -> None:
    decision = decide(IOThreadRequest(0, 2, "virtio", rbd=True), 2, 8, 8, YES, YES,
                      support_rbd=NO_FIX)
    assert decision.mode == "none"
