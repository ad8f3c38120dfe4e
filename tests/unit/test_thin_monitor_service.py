"""The thin monitor service against a fake domain and pool: events, ENOSPC, reconcile, hooks.

Real SQLite state, event log and metrics; only libvirt/QEMU and the loop devices are faked
(``tests.thin_fakes``), with their one-shot threshold and ENOSPC pause behaviour.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blockplane.cli.decode import encode
from blockplane.errors import Conflict, NotFound
from blockplane.hypervisor.domain import IO_ERROR_ACTION_PAUSE
from blockplane.hypervisor.events import BlockThresholdEvent, HypervisorEvent, IOErrorEvent
from blockplane.metrics import AgentMetrics
from blockplane.runtime.eventlog import EventLog
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.store.database import Database
from blockplane.store.records import DiskRecord, PoolRecord, Records, VMRecord, VolumeRecord
from blockplane.thin import pauses, reconciler
from blockplane.thin.adaptive import unmeasured_reserve
from blockplane.thin.monitor import ThinMonitor
from blockplane.thin.monitor_state import MonitorState
from tests.thin_fakes import FakeDomain, FakeHypervisor, FakePools

MIB = 1 << 20
CHUNK = 64 * MIB
VIRTUAL = 1 << 30
PATH = "/dev/loop7"


@dataclass
class Rig:
    tmp_path: Path
    database: Database
    records: Records
    pools: FakePools
    hypervisor: FakeHypervisor
    domain: FakeDomain
    record: VolumeRecord
    monitor: ThinMonitor
    metrics: AgentMetrics

    def restart(self) -> ThinMonitor:
        """A new agent process on the same state (the fakes keep QEMU's side)."""
        self.metrics = AgentMetrics()
        self.monitor = ThinMonitor(self.hypervisor, self.pools, self.records, self.database,
                                   EventLog(self.records), self.metrics)
        return self.monitor

    def events(self, kind: str) -> list[dict[str, object]]:
        return [event.to_json() for event in self.records.events(type_=kind)]

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def status(self) -> dict[str, Any]:
        [row] = self.monitor.status("vm1")
        wire: dict[str, Any] = encode(row)
        return wire


def make_rig(tmp_path: Path, *, capacity: int | None = None, virtual: int = VIRTUAL,
             utilization_pct: int = 50) -> Rig:
    database = Database(tmp_path / "state.db")
    records = Records(database)
    records.add_pool(PoolRecord("tp", "loop", str(tmp_path), capacity, CHUNK, utilization_pct))
    records.add_vm(VMRecord("vm1", "uuid-1", 1, 256 * MIB, "none"))
    record = VolumeRecord("tp", "vm1-vda", PATH, "qcow2", virtual, CHUNK, True)
    records.add_volume(record)
    records.add_disk(DiskRecord("vm1", "vda", "tp", "vm1-vda", "virtio", {}))
    pools = FakePools(records)
    pools.sizes["tp"] = {"vm1-vda": CHUNK}
    hypervisor = FakeHypervisor()
    domain = FakeDomain("vm1", "vda", PATH, 1, pools.sizes["tp"], "vm1-vda")
    hypervisor.domains["vm1"] = domain
    metrics = AgentMetrics()
    monitor = ThinMonitor(hypervisor, pools, records, database, EventLog(records), metrics)
    return Rig(tmp_path, database, records, pools, hypervisor, domain, record, monitor, metrics)


@pytest.fixture(autouse=True)
def short_quiet_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pauses, "IO_ERROR_QUIET_S", 0.2)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    built = make_rig(tmp_path)
    built.monitor.disk_attached("vm1", "vda", built.record)
    return built


def deliver(rig: Rig, *events: HypervisorEvent) -> None:
    async def run() -> None:
        for event in events:
            if isinstance(event, BlockThresholdEvent):
                await rig.monitor.on_threshold(event)
            elif isinstance(event, IOErrorEvent):
                await rig.monitor.on_io_error(event)
        await rig.monitor.settle()

    asyncio.run(run())


def threshold_events(rig: Rig, threshold: int) -> tuple[BlockThresholdEvent, BlockThresholdEvent]:
    """What libvirt sends when a bare-armed threshold fires: ``vda`` and ``vda[1]``."""
    return (BlockThresholdEvent("vm1", "vda", PATH, threshold, MIB),
            BlockThresholdEvent("vm1", "vda[1]", PATH, threshold, MIB))


def enospc(rig: Rig) -> IOErrorEvent:
    return IOErrorEvent("vm1", PATH, "ua-bp-vda", IO_ERROR_ACTION_PAUSE, "enospc")


def test_a_measured_writers_crossing_is_timed_from_qemus_allocation(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, utilization_pct=90)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    first = CHUNK - unmeasured_reserve(CHUNK, 90)
    rig.domain.write_to(first + MIB)
    crossed = BlockThresholdEvent("vm1", "vda[1]", PATH, first, MIB)
    deliver(rig, crossed)
    second = rig.domain.armed[-1][1]
    time.sleep(0.1)
    # The next crossing 0.1 s later: about 640 MiB/s. By the time the agent reads QEMU's
    # allocation after re-arming, the guest wrote 40 MiB past the crossing: about 62 ms at
    # that rate, which the agent's own clock (from the event's arrival) does not see.
    rig.domain.write_to(second + MIB)
    rig.domain.allocation = second + MIB + 40 * MIB
    crossed_again = BlockThresholdEvent("vm1", "vda[1]", PATH, second, MIB)
    deliver(rig, crossed_again)
    rate = (second - first) / (crossed_again.received_at - crossed.received_at)
    latency = rig.monitor._extender.growth.latency_s(("tp", "vm1-vda"))
    assert latency == pytest.approx(40 * MIB / rate, abs=0.005)
    # Re-armed at once for that latency: the reserve lasts it three times at the rate.
    physical = rig.pools.sizes["tp"]["vm1-vda"]
    rearmed = rig.domain.armed[-1][1]
    assert rig.events("thin.armed")[-1]["threshold"] == rearmed
    assert physical - rearmed == pytest.approx(rate * latency * 3, rel=0.02)
    assert physical - rearmed > 100 * MIB


def test_attach_arms_the_indexed_target(rig: Rig) -> None:
    assert rig.domain.armed == [("vda[1]", CHUNK // 2)]
    row = rig.status()
    assert (row["state"], row["disk"], row["threshold"], row["physical"]) == (
        "set", "vda[1]", CHUNK // 2, CHUNK)
    assert [e["threshold"] for e in rig.events("thin.armed")] == [CHUNK // 2]


def test_a_vm_whose_job_is_held_shows_its_recorded_size_marked_not_live(rig: Rig) -> None:
    """Status asks QEMU without waiting for the VM's job: then nothing it shows is QEMU's now,
    and the row says so instead of mixing a recorded size with live nulls."""
    assert rig.status()["live"] is True
    rig.pools.sizes["tp"]["vm1-vda"] = 3 * CHUNK  # grown behind the monitor: QEMU would see it
    rig.domain.busy = True
    row = rig.status()
    assert (row["live"], row["running"], row["physical"], row["allocation"], row["threshold"],
            row["armed_threshold"]) == (False, True, CHUNK, None, None, CHUNK // 2)
    rig.domain.busy = False
    row = rig.status()
    assert (row["live"], row["physical"], row["threshold"]) == (True, 3 * CHUNK, CHUNK // 2)


def test_non_thin_disks_are_not_monitored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.monitor.disk_detached("vm1", "vda")
    thick = VolumeRecord("tp", "vm1-vda", PATH, "qcow2", VIRTUAL, VIRTUAL, False)
    rig.monitor.disk_attached("vm1", "vda", thick)
    assert rig.monitor.status() == [] and rig.domain.armed == []


def test_threshold_event_extends_one_chunk_and_rearms(rig: Rig) -> None:
    assert rig.domain.write_to(CHUNK // 2 + MIB)
    deliver(rig, threshold_events(rig, CHUNK // 2)[1])
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    assert rig.domain.armed[-1] == ("vda[1]", 2 * CHUNK - CHUNK // 2)
    row = rig.status()
    assert (row["state"], row["extends"], row["physical"]) == ("set", 1, 2 * CHUNK)
    assert isinstance(row["last_extend_latency_s"], float)
    [extended] = rig.events("thin.extended")
    assert (extended["cause"], extended["from_bytes"], extended["to_bytes"]) == (
        "event", CHUNK, 2 * CHUNK)
    assert rig.records.volume("tp", "vm1-vda").physical_bytes == 2 * CHUNK  # type: ignore[union-attr]
    assert rig.metric("blockplane_thin_extends_total", cause="event") == 1
    assert rig.metric("blockplane_thin_extend_latency_seconds_count", cause="event") == 1


def test_a_writer_nobody_measured_is_armed_half_a_chunk_below_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vdsm_reserve = CHUNK * 10 // 100  # 90% utilization
    unmeasured = unmeasured_reserve(CHUNK, 90)
    assert unmeasured == CHUNK // 2
    rig = make_rig(tmp_path, utilization_pct=90)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    assert rig.domain.armed == [("vda[1]", CHUNK - unmeasured)]
    rig.domain.write_to(CHUNK - unmeasured + MIB)
    deliver(rig, threshold_events(rig, CHUNK - unmeasured)[1])
    # Extended with no rate known (none measurable here): one chunk, the same reserve.
    assert rig.domain.armed[-1] == ("vda[1]", 2 * CHUNK - unmeasured)
    # A restarted agent has measured nobody either.
    rig.restart()
    rig.monitor.reconcile()
    assert rig.domain.armed[-1] == ("vda[1]", 2 * CHUNK - unmeasured)
    # VDSM's fixed chunk (``bench.thin``'s comparison) arms VDSM's mark from the start.
    monkeypatch.setenv("BLOCKPLANE_THIN_STEP", "fixed")
    (tmp_path / "fixed").mkdir()
    fixed = make_rig(tmp_path / "fixed", utilization_pct=90)
    fixed.monitor.disk_attached("vm1", "vda", fixed.record)
    assert fixed.domain.armed == [("vda[1]", CHUNK - vdsm_reserve)]
    fixed.domain.write_to(CHUNK - vdsm_reserve + MIB)
    deliver(fixed, threshold_events(fixed, CHUNK - vdsm_reserve)[1])
    assert fixed.domain.armed[-1] == ("vda[1]", 2 * CHUNK - vdsm_reserve)


def test_the_double_event_extends_once(rig: Rig) -> None:
    rig.domain.write_to(CHUNK // 2 + MIB)
    bare, indexed = threshold_events(rig, CHUNK // 2)
    deliver(rig, bare, indexed, bare, indexed)
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    assert rig.status()["extends"] == 1


def test_bare_event_alone_changes_nothing(rig: Rig) -> None:
    deliver(rig, threshold_events(rig, CHUNK // 2)[0])
    assert rig.pools.grows() == [] and rig.status()["state"] == "set"


def test_events_of_unknown_disks_are_ignored(rig: Rig) -> None:
    deliver(rig, BlockThresholdEvent("vm1", "vdb[2]", "/dev/loop9", 5, 1),
            BlockThresholdEvent("other", "vda[1]", PATH, CHUNK // 2, 1))
    assert rig.pools.grows() == []


def test_growth_stops_at_the_qcow2_ceiling(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, virtual=100 * MIB)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    ceiling = qcow2_max_physical(100 * MIB)
    rig.domain.write_to(CHUNK // 2 + MIB)
    deliver(rig, threshold_events(rig, CHUNK // 2)[1])
    assert rig.pools.grows() == [("vm1-vda", ceiling)]
    row = rig.status()
    assert (row["state"], row["physical"], row["max_physical"]) == ("disabled", ceiling, ceiling)
    assert len(rig.events("thin.disabled")) == 1
    rig.monitor.reconcile()
    assert rig.status()["state"] == "disabled" and len(rig.pools.grows()) == 1


def test_pool_overcommit_is_refused_once_then_retried_when_it_grows(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, capacity=CHUNK + CHUNK // 2)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    rig.domain.write_to(CHUNK // 2 + MIB)
    deliver(rig, threshold_events(rig, CHUNK // 2)[1])
    for _ in range(3):
        rig.monitor.reconcile()
    row = rig.status()
    assert (row["state"], row["refused"], row["refusals"], row["physical"]) == (
        "exceeded", True, 1, CHUNK)
    [refused] = rig.events("thin.extend_refused")
    assert refused["code"] == "pool.full" and refused["requested_bytes"] == CHUNK
    assert rig.metric("blockplane_thin_extend_refusals_total") == 1

    rig.records.set_pool_capacity("tp", 4 * CHUNK)
    rig.monitor.reconcile()
    row = rig.status()
    assert (row["state"], row["refused"], row["physical"], row["extends"]) == (
        "set", False, 2 * CHUNK, 1)


def test_enospc_pause_is_extended_resumed_and_counted_once(rig: Rig) -> None:
    rig.domain.write_to(CHUNK + MIB)  # fires the threshold and passes the end: paused
    assert rig.domain.paused
    deliver(rig, enospc(rig), enospc(rig), threshold_events(rig, CHUNK // 2)[1])
    assert not rig.domain.paused and rig.domain.resumes == 1
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    row = rig.status()
    assert (row["pauses"], row["paused"], row["extends"], row["state"]) == (1, False, 1, "set")
    assert len(rig.events("thin.paused")) == 1 and len(rig.events("thin.resumed")) == 1
    assert rig.metric("blockplane_thin_pauses_total") == 1


def test_resume_waits_out_the_held_back_io_error_events(rig: Rig) -> None:
    rig.domain.write_to(CHUNK + MIB)
    event = enospc(rig)
    deliver(rig, event)
    [resumed_at] = rig.domain.resumed_at
    assert resumed_at - event.received_at >= pauses.IO_ERROR_QUIET_S


def test_a_quick_repeat_pause_grows_twice_as_much_each_time(rig: Rig) -> None:
    rig.domain.write_to(CHUNK + MIB)
    deliver(rig, enospc(rig))
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    for expected in (3 * CHUNK, 5 * CHUNK):
        rig.domain.paused = True  # paused again with allocation below the end (metadata far out)
        deliver(rig, enospc(rig))
        assert rig.pools.grows()[-1] == ("vm1-vda", expected)
        assert not rig.domain.paused
    row = rig.status()
    assert (row["pauses"], row["paused"], row["extends"]) == (3, False, 3)


def test_paused_vm_stays_paused_while_the_pool_is_full(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, capacity=CHUNK)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    rig.domain.write_to(CHUNK + MIB)
    deliver(rig, enospc(rig))
    rig.monitor.reconcile()
    assert rig.domain.paused and rig.status()["paused"] is True
    rig.records.set_pool_capacity("tp", None)
    rig.monitor.reconcile()
    assert not rig.domain.paused and rig.status()["physical"] == 2 * CHUNK
    assert len(rig.events("thin.paused")) == 1 and len(rig.events("thin.resumed")) == 1


def test_reconcile_finds_a_threshold_that_fired_while_the_agent_was_down(rig: Rig) -> None:
    rig.domain.write_to(CHUNK // 2 + MIB)  # fires; no agent listening
    monitor = rig.restart()
    monitor.reconcile()
    row = rig.status()
    assert (row["extends"], row["physical"], row["state"]) == (1, 2 * CHUNK, "set")
    assert rig.metric("blockplane_thin_missed_events_total") == 1
    [extended] = rig.events("thin.extended")
    assert extended["cause"] == "reconcile" and extended["missed_event"] is True


def test_a_vanished_threshold_is_given_a_moment_for_its_event_then_extended(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("blockplane.thin.reconciler.time.sleep", waits.append)
    rig.monitor.reconcile()
    rig.domain.write_to(CHUNK // 2 + MIB)  # fired; its event never comes
    rig.monitor.reconcile()
    assert waits == [reconciler.SUSPECT_RECHECK_S]
    assert rig.hypervisor.asked[-2:] == [None, ["vm1"]]  # looked again at that VM only
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    assert rig.metric("blockplane_thin_missed_events_total") == 1
    [extended] = rig.events("thin.extended")
    assert (extended["cause"], extended["missed_event"]) == ("reconcile", True)


def test_an_event_arriving_within_that_moment_is_left_to_extend(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.monitor.reconcile()
    rig.domain.write_to(CHUNK // 2 + MIB)  # fired; its event is on the way
    monkeypatch.setattr("blockplane.thin.reconciler.time.sleep",
                        lambda _s: deliver(rig, threshold_events(rig, CHUNK // 2)[1]))
    rig.monitor.reconcile()
    assert rig.pools.grows() == [("vm1-vda", 2 * CHUNK)]
    assert rig.metric("blockplane_thin_missed_events_total") == 0
    [extended] = rig.events("thin.extended")
    assert extended["cause"] == "event"


def test_ceiling_reached_and_paused_after_restart_is_resumed(rig: Rig) -> None:
    rig.domain.write_to(CHUNK + MIB)
    monitor = rig.restart()
    monitor.reconcile()
    assert not rig.domain.paused and rig.status()["pauses"] == 1


def test_vm_restart_rearms_without_extending(rig: Rig) -> None:
    rig.domain.running = False
    rig.monitor.reconcile()
    assert rig.status()["state"] == "unset"
    rig.domain.running, rig.domain.threshold = True, 0
    rig.monitor.reconcile()
    assert rig.pools.grows() == [] and rig.status()["state"] == "set"
    assert rig.domain.armed[-1] == ("vda[1]", CHUNK // 2)


def test_threshold_cleared_behind_our_back_is_rearmed_not_extended(rig: Rig) -> None:
    rig.domain.threshold = 0  # QEMU restarted between two reconciles
    rig.monitor.reconcile()
    rig.monitor.reconcile()
    assert rig.pools.grows() == [] and rig.domain.threshold == CHUNK // 2


def test_an_extend_interrupted_after_growing_is_completed_not_repeated(rig: Rig) -> None:
    [volume] = rig.monitor._registry.all()
    rig.monitor._registry.save(volume, state=MonitorState.EXCEEDED, pending_physical=2 * CHUNK)
    rig.pools.sizes["tp"]["vm1-vda"] = 2 * CHUNK  # the grow landed, then the agent died
    rig.domain.threshold = 0
    rig.restart().reconcile()
    assert rig.pools.grows() == []
    row = rig.status()
    assert (row["state"], row["physical"], row["threshold"]) == (
        "set", 2 * CHUNK, 2 * CHUNK - CHUNK // 2)


def test_state_survives_a_restart(rig: Rig) -> None:
    rig.domain.write_to(CHUNK // 2 + MIB)
    deliver(rig, threshold_events(rig, CHUNK // 2)[1])
    before = rig.status()
    assert before["step"] == CHUNK and before["write_rate"] == 0
    rig.restart()
    # The adaptive extension's figures are the running agent's own: a restart starts over.
    adaptive = {"write_rate": None, "step": None, "reserve": None}
    assert rig.status() == {**before, **adaptive}


def test_detach_forgets_the_volume(rig: Rig) -> None:
    rig.monitor.disk_detached("vm1", "vda")
    rig.records.delete_disk("vm1", "vda")  # as DiskService does after telling its observers
    assert rig.monitor.status() == []
    assert rig.restart().status() == []


def test_pre_extend_grows_the_base_for_a_commit(rig: Rig) -> None:
    physical = rig.monitor.pre_extend("vm1", "vda[1]", 3 * CHUNK + MIB)
    assert physical == 5 * CHUNK  # needed + one chunk, in whole chunks
    assert rig.status()["state"] == "set"
    assert rig.monitor.pre_extend("vm1", "vda[1]", CHUNK) == 5 * CHUNK  # already enough
    with pytest.raises(NotFound):
        rig.monitor.pre_extend("vm1", "vda[4]", CHUNK)


def test_pre_extend_refused_leaves_the_volume_monitored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, capacity=2 * CHUNK)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    with pytest.raises(Conflict) as refused:
        rig.monitor.pre_extend("vm1", "vda[1]", 3 * CHUNK)
    assert refused.value.code == "pool.full"
    row = rig.status()
    assert (row["state"], row["refused"], row["physical"]) == ("set", False, CHUNK)


def test_status_filters_by_vm(rig: Rig) -> None:
    assert rig.monitor.status("other") == []
    assert [row.vm for row in rig.monitor.status()] == ["vm1"]
