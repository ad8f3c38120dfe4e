"""``TopService``: one bulk stats call per refresh, rates, sorting, cached limits, jobs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import JobKind, JobPhase, Progress, new_job
from blockplane.chain.jobs.views import JobView, job_view
from blockplane.cli.decode import encode
from blockplane.errors import InvalidInput, NotFound
from blockplane.hypervisor.stats_reuse import StatsSnapshot
from blockplane.observe.top import TopService
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database
from blockplane.store.records import PoolRecord, Records, VolumeRecord

XML = """<domain><name>{vm}</name>
  <iothreadids><iothread id='101'/><iothread id='102'/></iothreadids><throttlegroups><throttlegroup>
  <total_iops_sec>{iops}</total_iops_sec><group_name>g</group_name></throttlegroup>
  </throttlegroups><devices><disk type='block' device='disk'><target dev='vda' bus='virtio'/>
  <throttlefilters><throttlefilter group='g'/></throttlefilters></disk></devices></domain>"""


def stats(reads: int, allocation: int, path: str = "/dev/loop1") -> dict[str, Any]:
    return {
        "state.state": 1, "block.count": 1, "block.0.name": "vda", "block.0.path": path,
        "block.0.rd.reqs": reads, "block.0.rd.bytes": reads * 4096, "block.0.wr.reqs": 0,
        "block.0.allocation": allocation, "block.0.physical": 4 << 20,
        "block.0.capacity": 64 << 20, "iothread.count": 2,
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeDomain:
    def __init__(self, host: FakeHost, name: str) -> None:
        self._host, self._name = host, name

    def xml(self, *, inactive: bool = False) -> str:
        self._host.xml_reads += 1
        return XML.format(vm=self._name, iops=self._host.iops)


class FakeHost:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.kept: StatsSnapshot | None = None
        self.reads = {"a": 0, "b": 0}
        self.allocation = {"a": 1 << 20, "b": 3 << 20}
        self.bulk_calls = 0
        self.xml_reads = 0
        self.iops = 500

    def bulk_snapshot(self, stats_groups: int = 0, max_age_s: float | None = None) -> StatsSnapshot:
        kept = self.kept
        if kept is not None and max_age_s and self.clock() - kept.taken_at <= max_age_s:
            return kept
        self.bulk_calls += 1
        self.kept = StatsSnapshot(self.clock(), stats_groups, [
            (vm, stats(self.reads[vm], self.allocation[vm], f"/dev/loop-{vm}"))
            for vm in sorted(self.reads)
        ])
        return self.kept

    def lookup(self, name: str) -> FakeDomain:
        if name not in self.reads:
            raise NotFound(f"no VM {name}")
        return FakeDomain(self, name)


def fake_job(job_id: str, vm: str, kind: JobKind, phase: JobPhase) -> JobView:
    state = replace(new_job(job_id, vm, "vda", kind, now=0.0), phase=phase)
    return job_view(state, JobSpec(targets=("vda",)))


class FakeJobs:
    def list(self, vm: str | None = None) -> list[JobView]:
        return [fake_job("j1", "b", JobKind.COMMIT, JobPhase.RUNNING),
                fake_job("j0", "a", JobKind.PULL, JobPhase.DONE)]

    def show(self, job_id: str) -> JobView:
        return replace(self.list()[0], progress=Progress(25, 100))


@pytest.fixture
def parts(tmp_path: Path) -> tuple[FakeHost, FakeClock, Records, EventLog, TopService]:
    clock = FakeClock()
    host = FakeHost(clock)
    records = Records(Database(tmp_path / "state.db"))
    records.add_pool(PoolRecord("p", "loop", str(tmp_path), None, 4 << 20, 50))
    records.add_volume(VolumeRecord("p", "a-vda", "/dev/loop-a", "qcow2", 64 << 20, 4 << 20, True))
    events = EventLog(records)
    top = TopService(host, records, events, FakeJobs(), clock=clock, sleep=clock.sleep)
    return host, clock, records, events, top


def test_the_first_frame_waits_a_window_then_each_refresh_is_one_call(parts: Any) -> None:
    host, clock, _records, _events, top = parts
    host.reads["a"] = 0
    first = encode(top.frame(window_s=1.0))
    assert first["stats_calls"] == 2 and first["window_s"] == 1.0
    host.reads["a"] = 500
    clock.now += 2.0
    second = encode(top.frame())
    assert second["stats_calls"] == 1 and host.bulk_calls == 3
    row = next(r for r in second["disks"] if r["vm"] == "a")
    assert row["read_iops"] == 250.0 and row["read_bytes_per_s"] == 250 * 4096
    assert row["iops_limit"] == 500 and row["chain"] == ["g"] and row["iothreads"] == 2
    assert row["thin"] is True and row["volume"] == "a-vda"
    assert row["fill_pct"] == 25.0
    assert second["totals"] == {"vms": 2, "disks": 2, "read_iops": 250.0, "write_iops": 0.0,
                                "read_bytes_per_s": 1024000.0, "write_bytes_per_s": 0.0}


def test_sort_keys_and_the_vm_filter(parts: Any) -> None:
    host, clock, _records, _events, top = parts
    encode(top.frame())
    host.reads["b"] = 100
    clock.now += 1.0
    assert [r["vm"] for r in encode(top.frame(sort="iops"))["disks"]] == ["b", "a"]
    assert [r["vm"] for r in encode(top.frame(sort="fill"))["disks"]] == ["b", "a"]
    assert [r["vm"] for r in encode(top.frame(sort="name"))["disks"]] == ["a", "b"]
    only = encode(top.frame(vm="a"))
    assert [r["vm"] for r in only["disks"]] == ["a"] and only["totals"]["vms"] == 1
    with pytest.raises(InvalidInput):
        encode(top.frame(sort="colour"))


def test_limits_are_parsed_once_until_an_event_names_the_vm(parts: Any) -> None:
    host, clock, _records, events, top = parts
    encode(top.frame())
    clock.now += 1.0
    encode(top.frame())
    assert host.xml_reads == 2  # a and b, once each
    host.iops = 900
    events.publish("thin.extended", "a", target="vda")  # changes no definition
    clock.now += 1.0
    assert next(r for r in encode(top.frame())["disks"] if r["vm"] == "a")["iops_limit"] == 500
    events.publish("throttle.group_set", "a", group="g")
    clock.now += 1.0
    rows = {r["vm"]: r for r in encode(top.frame())["disks"]}
    assert rows["a"]["iops_limit"] == 900 and rows["b"]["iops_limit"] == 500
    assert host.xml_reads == 3


def test_running_jobs_with_progress(parts: Any) -> None:
    _host, _clock, _records, _events, top = parts
    rows = {r["vm"]: r for r in encode(top.frame())["disks"]}
    assert rows["b"]["jobs"] == [{"id": "j1", "kind": "commit", "phase": "running",
                                  "progress_pct": 25.0}]
    assert rows["a"]["jobs"] == []


def test_a_scrape_may_reuse_a_young_sample_but_a_refresh_never_does(parts: Any) -> None:
    host, clock, _records, _events, top = parts
    encode(top.frame())
    calls = host.bulk_calls
    clock.now += 0.5
    assert top.sample(max_age_s=2.0).at == host.kept.taken_at and host.bulk_calls == calls
    encode(top.frame())
    assert host.bulk_calls == calls + 1
