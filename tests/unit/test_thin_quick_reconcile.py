"""Quick reconcile passes: QEMU is asked only about VMs where something changed.

The thin monitor against the fakes of ``tests.thin_fakes``, with each volume's path a real file
whose modification the host-side activity check sees (as it sees a loop device's write count).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockplane.metrics import AgentMetrics
from blockplane.runtime.eventlog import EventLog
from blockplane.runtime.reconcile_schedule import PassKind, ReconcileSchedule
from blockplane.store.database import Database
from blockplane.store.records import DiskRecord, PoolRecord, Records, VMRecord, VolumeRecord
from blockplane.thin.monitor import ThinMonitor
from tests.thin_fakes import FakeDomain, FakeHypervisor, FakePools

MIB = 1 << 20
CHUNK = 64 * MIB


class QuickRig:
    def __init__(self, tmp_path: Path, vms: int = 3, capacity: int | None = None) -> None:
        self.records = Records(Database(tmp_path / "state.db"))
        self.records.add_pool(PoolRecord("tp", "loop", str(tmp_path), capacity, CHUNK, 50))
        self.pools = FakePools(self.records)
        self.hypervisor = FakeHypervisor()
        self.events = EventLog(self.records)
        self.paths: dict[str, Path] = {}
        sizes = self.pools.sizes.setdefault("tp", {})
        for number in range(vms):
            vm, volume = f"vm{number}", f"vm{number}-vda"
            path = tmp_path / f"{volume}.img"
            path.write_bytes(b"")
            self.paths[vm] = path
            self.records.add_vm(VMRecord(vm, f"uuid-{number}", 1, 256 * MIB, "none"))
            record = VolumeRecord("tp", volume, str(path), "qcow2", 1 << 30, CHUNK, True)
            self.records.add_volume(record)
            self.records.add_disk(DiskRecord(vm, "vda", "tp", volume, "virtio", {}))
            sizes[volume] = CHUNK
            self.hypervisor.domains[vm] = FakeDomain(vm, "vda", str(path), 1, sizes, volume)
        self.monitor = ThinMonitor(self.hypervisor, self.pools, self.records,
                                   Database(tmp_path / "state.db"), self.events, AgentMetrics())
        self.monitor.reconcile()  # the start-up (full) pass arms every volume

    def guest_writes(self, vm: str, offset: int) -> None:
        """The guest writes up to ``offset``: QEMU's view, and the host's (the file changes)."""
        self.hypervisor.domains[vm].write_to(offset)
        with self.paths[vm].open("ab") as image:
            image.write(b"x")
        os.utime(self.paths[vm], ns=(1, self.paths[vm].stat().st_mtime_ns + 1))

    def quick(self) -> list[str] | None:
        """One quick pass; the domains its stats call asked for (None: no call at all)."""
        calls = len(self.hypervisor.asked)
        self.monitor.quick_reconcile()
        asked = self.hypervisor.asked[calls:]
        return asked[0] if asked else None


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("blockplane.thin.reconciler.time.sleep", lambda _s: None)


def test_an_idle_host_asks_qemu_nothing(tmp_path: Path) -> None:
    rig = QuickRig(tmp_path)
    assert rig.hypervisor.asked == [None]  # the full pass: every domain
    for _ in range(3):
        assert rig.quick() is None
    assert rig.monitor.quick_reconcile() == {"thin_vms_looked_at": 0}


def test_a_written_volume_has_its_vm_looked_at_alone(tmp_path: Path) -> None:
    rig = QuickRig(tmp_path)
    rig.guest_writes("vm1", MIB)  # below the threshold: nothing to do but look
    assert rig.quick() == ["vm1"]
    assert rig.quick() is None  # nothing written since


def test_a_crossing_whose_event_never_came_is_extended_by_the_next_quick_pass(
    tmp_path: Path,
) -> None:
    rig = QuickRig(tmp_path)
    rig.guest_writes("vm2", CHUNK // 2 + MIB)  # fires; the event is lost
    assert rig.quick() == ["vm2"]
    # Looked at again in the same pass (its event given a moment), then extended.
    assert rig.hypervisor.asked[-2:] == [["vm2"], ["vm2"]]
    assert rig.pools.grows() == [("vm2-vda", 2 * CHUNK)]
    [extended] = [event.to_json() for event in rig.records.events(type_="thin.extended")]
    assert (extended["vm"], extended["cause"], extended["missed_event"]) == (
        "vm2", "reconcile", True)
    [row] = rig.monitor.status("vm2")
    assert (row.state, row.threshold) == ("set", 2 * CHUNK - CHUNK // 2)


def test_a_vm_the_event_log_names_is_looked_at(tmp_path: Path) -> None:
    rig = QuickRig(tmp_path)
    rig.events.publish("vm.lifecycle", "vm0", event="started", detail=0)
    assert rig.quick() == ["vm0"]
    assert rig.quick() is None


def test_a_refused_extend_is_retried_on_every_quick_pass(tmp_path: Path) -> None:
    rig = QuickRig(tmp_path, vms=2, capacity=2 * CHUNK)  # both volumes fill the pool
    rig.guest_writes("vm0", CHUNK // 2 + MIB)
    rig.quick()
    [row] = rig.monitor.status("vm0")
    assert (row.state, row.refused) == ("exceeded", True)
    assert rig.quick() == ["vm0"] and rig.quick() == ["vm0"]


def test_a_stopped_vm_is_not_asked_about_again(tmp_path: Path) -> None:
    rig = QuickRig(tmp_path, vms=2)
    rig.hypervisor.domains["vm1"].running = False
    rig.events.publish("vm.lifecycle", "vm1", event="stopped", detail=0)
    assert rig.quick() == ["vm1"]  # found stopped: its volume is no longer armed
    [row] = rig.monitor.status("vm1")
    assert row.state == "unset"
    assert rig.quick() is None


def test_a_vm_busy_with_a_job_is_not_waited_for_but_looked_at_again(tmp_path: Path) -> None:
    rig = QuickRig(tmp_path)
    rig.hypervisor.domains["vm1"].busy = True  # an attach holds its job
    rig.guest_writes("vm1", CHUNK // 2 + MIB)  # and its event is lost
    assert rig.quick() == ["vm1"]
    assert rig.pools.grows() == []  # no sizes without the job: nothing decided
    assert rig.quick() == ["vm1"]  # nothing written since, but not looked at yet
    rig.hypervisor.domains["vm1"].busy = False
    assert rig.quick() == ["vm1"]
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    assert rig.quick() is None


def test_the_schedule_runs_a_full_pass_first_then_every_full_interval() -> None:
    now = [0.0]
    schedule = ReconcileSchedule(2.0, 60.0, clock=lambda: now[0])
    assert schedule.next_kind() is PassKind.FULL
    schedule.started(PassKind.FULL)
    for moment in (2.0, 30.0, 59.0):
        now[0] = moment
        assert schedule.next_kind() is PassKind.QUICK
    assert schedule.next_kind(forced_full=True) is PassKind.FULL
    now[0] = 60.0
    assert schedule.next_kind() is PassKind.FULL
    assert schedule.pause_s(None) == 2.0 and schedule.pause_s(1.5) == 3.0


def test_a_full_interval_within_the_quick_one_makes_every_pass_full() -> None:
    schedule = ReconcileSchedule(2.0, 0.0)
    schedule.started(PassKind.FULL)
    assert schedule.every_pass_full and schedule.next_kind() is PassKind.FULL
