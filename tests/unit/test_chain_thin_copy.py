"""Copies into thin destinations, the parts without libvirt: the restart in the phase machine,
when a failed copy is started again (with a real qcow2 source for ``qemu-img measure``), and the
thin monitor's copy hooks (track before the mirror, arm on the mirror's index, keep the record
over the pivot, refill before a restart) against the fake domain of ``tests.thin_fakes``."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import pytest

from blockplane.chain.jobs.phases import (
    AbortRequested,
    CopyRestarted,
    JobEventObserved,
    RestartFailed,
    Started,
    advance,
)
from blockplane.chain.jobs.spec import JobSpec, VolumeRef
from blockplane.chain.jobs.state import BlockJobStatus, JobKind, JobPhase, JobState, new_job
from blockplane.chain.jobs.store import StoredJob
from blockplane.chain.jobs.thin_copy import MAX_RESTARTS, CopyRestarts, ThinCopies
from blockplane.chain.ports import ThinHook
from blockplane.chain.service import ChainService
from blockplane.errors import Conflict
from blockplane.hypervisor.events import BlockThresholdEvent
from blockplane.runtime.eventlog import EventLog
from blockplane.storage.fill_size import fill_size
from blockplane.store.database import Database
from blockplane.store.records import PoolRecord, Records, VolumeRecord
from blockplane.thin.monitor_state import MonitorState
from blockplane.thin.views import ThinVolumeView
from tests.unit.test_thin_monitor_service import CHUNK, MIB, VIRTUAL, Rig, make_rig

COPY_PATH = "/dev/loop8"
COPY_VOLUME = "vm1-vda-copy"
MIRROR_INDEX = 3


def running_copy() -> JobState:
    job = new_job("j1", "vm1", "vda", JobKind.COPY, now=1.0, pivot=True)
    return advance(job, Started(), 2.0)


def test_a_restart_runs_the_copy_again_and_is_counted() -> None:
    ready = advance(running_copy(), JobEventObserved(BlockJobStatus.READY, 2), 3.0)
    assert ready.phase is JobPhase.READY
    restarted = advance(ready, CopyRestarted(), 4.0)
    assert (restarted.phase, restarted.ready, restarted.restarts) == (JobPhase.RUNNING, False, 1)
    assert restarted.pivot_requested and restarted.outcome is None
    assert JobState.from_json(restarted.to_json()) == restarted
    failed = advance(restarted, RestartFailed("pool tp is full"), 5.0)
    assert (failed.phase, failed.error, failed.finished_at) == (
        JobPhase.CLEANUP, "pool tp is full", 5.0)
    assert advance(failed, RestartFailed("again"), 6.0) == failed


@pytest.mark.parametrize("kind", [JobKind.COMMIT, JobKind.ACTIVE_COMMIT, JobKind.PULL])
def test_only_a_copy_restarts(kind: JobKind) -> None:
    job = advance(new_job("j1", "vm1", "vda", kind, now=1.0), Started(), 2.0)
    with pytest.raises(Conflict):
        advance(job, CopyRestarted(), 3.0)


def test_an_aborting_or_fresh_copy_does_not_restart() -> None:
    aborting = advance(running_copy(), AbortRequested(), 3.0)
    with pytest.raises(Conflict):
        advance(aborting, CopyRestarted(), 4.0)
    with pytest.raises(Conflict):
        advance(running_copy(), RestartFailed("never restarted"), 4.0)


def copy_rig(tmp_path: Path, *, capacity: int | None = None) -> tuple[Rig, VolumeRecord]:
    """The fake VM with its thin source disk, and a thin copy destination of 40 MiB + 1 chunk
    whose mirror node libvirt numbers ``MIRROR_INDEX``."""
    rig = make_rig(tmp_path, capacity=capacity)
    rig.monitor.disk_attached("vm1", "vda", rig.record)
    initial = fill_size(40 * MIB, chunk_bytes=CHUNK, ceiling_bytes=VIRTUAL * 2)
    record = VolumeRecord("tp", COPY_VOLUME, COPY_PATH, "qcow2", VIRTUAL, initial, True)
    rig.records.add_volume(record)
    rig.pools.sizes["tp"][COPY_VOLUME] = initial
    return rig, record


def copy_row(rig: Rig) -> ThinVolumeView:
    [row] = [row for row in rig.monitor.status("vm1") if row.volume == COPY_VOLUME]
    return row


def fire(rig: Rig, threshold: int) -> None:
    event = BlockThresholdEvent("vm1", f"vda[{MIRROR_INDEX}]", COPY_PATH, threshold, MIB)

    async def run() -> None:
        await rig.monitor.on_threshold(event)
        await rig.monitor.settle()

    asyncio.run(run())


def test_a_destination_is_armed_on_the_mirror_index_and_grows_on_its_events(
    tmp_path: Path,
) -> None:
    rig, record = copy_rig(tmp_path)
    rig.monitor.track("vm1", "vda", record)  # before the mirror: libvirt has no node for it
    assert copy_row(rig).state == "unset" and len(rig.domain.armed) == 1
    rig.monitor.watch_mirror("vm1", ("tp", COPY_VOLUME), MIRROR_INDEX)
    first = record.physical_bytes - CHUNK // 2
    assert rig.domain.armed[-1] == (f"vda[{MIRROR_INDEX}]", first)
    row = copy_row(rig)
    assert (row.state, row.disk, row.armed_threshold) == (
        "set", f"vda[{MIRROR_INDEX}]", first)
    assert not rig.monitor.crossed(("tp", COPY_VOLUME))

    fire(rig, first)
    row = copy_row(rig)
    assert (row.extends, row.physical) == (1, record.physical_bytes + CHUNK)
    assert rig.domain.armed[-1] == (f"vda[{MIRROR_INDEX}]", record.physical_bytes + CHUNK // 2)
    assert rig.monitor.crossed(("tp", COPY_VOLUME))

    # The pivot: the destination becomes the disk's top and keeps its record and threshold.
    armed_before = len(rig.domain.armed)
    grown = VolumeRecord("tp", COPY_VOLUME, COPY_PATH, "qcow2", VIRTUAL,
                         record.physical_bytes + CHUNK, True)
    rig.monitor.track("vm1", "vda", grown)
    row = copy_row(rig)
    assert (row.state, row.extends, row.index) == ("set", 1, MIRROR_INDEX)
    assert len(rig.domain.armed) == armed_before


def test_refill_grows_by_the_fill_rule_and_disarms(tmp_path: Path) -> None:
    rig, record = copy_rig(tmp_path)
    rig.monitor.track("vm1", "vda", record)
    rig.monitor.watch_mirror("vm1", ("tp", COPY_VOLUME), MIRROR_INDEX)
    physical = rig.monitor.refill(("tp", COPY_VOLUME), 200 * MIB)
    assert physical >= fill_size(200 * MIB, chunk_bytes=CHUNK, ceiling_bytes=2 * VIRTUAL)
    row = copy_row(rig)
    assert (row.state, row.armed_threshold, row.physical) == ("unset", None, physical)
    assert rig.monitor.refill(("tp", COPY_VOLUME), 10 * MIB) == physical  # already enough


def test_refill_past_the_pool_capacity_is_refused(tmp_path: Path) -> None:
    rig, record = copy_rig(tmp_path, capacity=4 * CHUNK)
    rig.monitor.track("vm1", "vda", record)
    with pytest.raises(Conflict) as refused:
        rig.monitor.refill(("tp", COPY_VOLUME), 300 * MIB)
    assert refused.value.code == "pool.full"
    row = copy_row(rig)
    assert (row.physical, row.refused, row.state) == (
        record.physical_bytes, False, MonitorState.UNSET.value)
    [source] = [row for row in rig.monitor.status("vm1") if row.volume == "vm1-vda"]
    assert source.state == MonitorState.SET.value


class FakeDomainHandle:
    def __init__(self, active: bool) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


class FakeChains:
    def __init__(self) -> None:
        self.handle = FakeDomainHandle(True)

    def domain(self, vm: str) -> FakeDomainHandle:
        return self.handle


class CrossedThin:
    """The one ThinHook question ``CopyRestarts.wanted`` asks."""

    def __init__(self) -> None:
        self.crossed_keys: set[tuple[str, str]] = set()

    def crossed(self, key: tuple[str, str]) -> bool:
        return key in self.crossed_keys


@dataclass
class RestartRig:
    restarts: CopyRestarts
    chains: FakeChains
    thin: CrossedThin
    stored: StoredJob
    failed: JobState


def restart_rig(tmp_path: Path, *, data_mib: int, physical: int) -> RestartRig:
    """A copy job whose source (a real qcow2 with ``data_mib`` written) is copied into a thin
    destination of ``physical`` bytes; ``failed`` is what a FAILED event makes of it."""
    source = tmp_path / "source.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "1G"], check=True)
    if data_mib:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 7 0 {data_mib}M",
                        str(source)], check=True, capture_output=True)
    records = Records(Database(tmp_path / "state.db"))
    records.add_pool(PoolRecord("tp", "loop", str(tmp_path), None, CHUNK, 50))
    records.add_volume(VolumeRecord("tp", COPY_VOLUME, COPY_PATH, "qcow2", VIRTUAL, physical,
                                    True))
    ref = VolumeRef("tp", COPY_VOLUME, COPY_PATH)
    spec = JobSpec(targets=("vda",), top_path=str(source), destination=ref, created=(ref,),
                   new_top_path=COPY_PATH)
    stored = StoredJob(running_copy(), spec)
    failed = advance(stored.state, JobEventObserved(BlockJobStatus.FAILED, 2), 5.0)
    chains, thin = FakeChains(), CrossedThin()
    restarts = CopyRestarts(cast(ChainService, chains), records,
                            cast(ThinCopies, None), cast(ThinHook, thin),
                            EventLog(records))
    return RestartRig(restarts, chains, thin, stored, failed)


def test_a_copy_that_outgrew_its_destination_is_started_again(tmp_path: Path) -> None:
    rig = restart_rig(tmp_path, data_mib=100, physical=60 * MIB)
    reason = rig.restarts.wanted(rig.stored, rig.failed)
    assert reason is not None and "needs" in reason


def test_a_threshold_that_fired_is_evidence_enough(tmp_path: Path) -> None:
    rig = restart_rig(tmp_path, data_mib=0, physical=2 * CHUNK)
    assert rig.restarts.wanted(rig.stored, rig.failed) is None  # room enough, nothing fired
    rig.thin.crossed_keys.add(("tp", COPY_VOLUME))
    reason = rig.restarts.wanted(rig.stored, rig.failed)
    assert reason is not None and "threshold" in reason


def test_no_restart_without_cause(tmp_path: Path) -> None:
    rig = restart_rig(tmp_path, data_mib=100, physical=60 * MIB)
    succeeded = advance(rig.stored.state, JobEventObserved(BlockJobStatus.COMPLETED, 2), 5.0)
    assert rig.restarts.wanted(rig.stored, succeeded) is None  # a pivot is on its way
    aborting = StoredJob(advance(rig.stored.state, AbortRequested(), 4.0), rig.stored.spec)
    assert rig.restarts.wanted(aborting, rig.failed) is None
    spent = StoredJob(replace(rig.stored.state, restarts=MAX_RESTARTS), rig.stored.spec)
    assert rig.restarts.wanted(spent, rig.failed) is None
    rig.chains.handle.active = False  # the VM stopped under the copy
    assert rig.restarts.wanted(rig.stored, rig.failed) is None
