"""``ReconcileLog`` and ``Confirmer``: a pass is recorded step by step and confirmed only whole."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from blockplane.cli.decode import encode
from blockplane.errors import NotFound
from blockplane.observe.confirm import Confirmer, thin_confirmed
from blockplane.observe.reconcile import ReconcileLog, confirmed
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database
from blockplane.store.records import DiskRecord, PoolRecord, Records, VMRecord, VolumeRecord
from blockplane.thin.views import ThinVolumeView


def test_a_failing_step_is_recorded_and_the_others_still_run() -> None:
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("libvirt went away")

    def counting() -> dict[str, int]:
        ran.append("counting")
        return {"iothread_plans": 2, "iothread_plans_confirmed": 2}

    log = ReconcileLog()
    record = log.run([broken, counting])
    assert ran == ["broken", "counting"]
    assert not record.ok
    assert record.steps[0].error == "libvirt went away"
    assert record.counts() == {"iothread_plans": 2, "iothread_plans_confirmed": 2}
    report = encode(log.report())
    assert report["passes"] == 1 and report["confirmed"] is False
    assert report["first"] == report["last"]
    log.run([counting])
    report = encode(log.report())
    assert report["confirmed"] is True and report["first"]["number"] == 1
    assert report["last"]["number"] == 2


def test_confirmed_needs_every_plan_and_every_thin_volume() -> None:
    assert not confirmed({})
    assert confirmed({"iothread_plans": 0, "iothread_plans_confirmed": 0})
    assert not confirmed({"iothread_plans": 4, "iothread_plans_confirmed": 3})
    assert not confirmed({"iothread_plans": 4, "iothread_plans_confirmed": 4,
                          "thin_volumes": 4, "thin_volumes_confirmed": 3})


def thin_row(**fields: Any) -> ThinVolumeView:
    """A thin status row: a stopped, unarmed volume unless ``fields`` say otherwise."""
    row = ThinVolumeView(
        vm="vm1", target="vda", index=1, disk="vda[1]", pool="p", volume="v", path="/p/v",
        running=False, virtual=1 << 30, physical=1 << 20, allocation=None, threshold=None,
        armed_threshold=None, chunk=1 << 20, max_physical=2 << 30, state="unset", extends=0,
        pauses=0, paused=False, refusals=0, refused=False, last_extend_latency_s=None)
    return replace(row, **fields)


@pytest.mark.parametrize(("row", "expected"), [
    ({"running": False, "state": "unset"}, True),
    ({"running": True, "state": "disabled", "threshold": None}, True),
    ({"running": True, "state": "set", "threshold": 10, "armed_threshold": 10}, True),
    ({"running": True, "state": "set", "threshold": None, "armed_threshold": 10}, False),
    ({"running": True, "state": "exceeded", "threshold": None, "armed_threshold": 10}, False),
])
def test_a_thin_volume_is_confirmed_when_its_live_threshold_is_the_armed_one(
    row: dict[str, Any], expected: bool
) -> None:
    assert thin_confirmed(thin_row(**row)) is expected


MAPPED = """<domain><iothreadids><iothread id='101'/><iothread id='102'/></iothreadids>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2' queues='2'>
<iothreads><iothread id='101'><queue id='0'/></iothread><iothread id='102'><queue id='1'/>
</iothread></iothreads></driver><source file='/p/a'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


class Domain:
    def __init__(self, xml: str) -> None:
        self._xml = xml

    def xml(self, *, inactive: bool = False) -> str:
        return self._xml


class Thin:
    """Two volumes of VM ``x``, one of them not armed."""

    def status(
        self, vm: str | None = None, *, vms: Collection[str] | None = None
    ) -> list[ThinVolumeView]:
        return [thin_row(vm="x", running=True, state="set", threshold=5, armed_threshold=5),
                thin_row(vm="x", running=True, state="unset", threshold=None,
                         armed_threshold=None)]


def records_with(tmp_path: Path, plans: dict[str, dict[str, Any]]) -> Records:
    records = Records(Database(tmp_path / "state.db"))
    records.add_pool(PoolRecord("p", "dir", str(tmp_path), None, 4 << 20, 50))
    for vm, plan in plans.items():
        records.add_vm(VMRecord(vm, vm, 1, 64 << 20, "none"))
        records.add_volume(VolumeRecord("p", vm, f"/p/{vm}", "qcow2", 1 << 20, 1 << 20, False))
        records.add_disk(DiskRecord(vm, "vda", "p", vm, "virtio", plan))
    return records


GOOD_PLAN = {"mapping": [[101, [0]], [102, [1]]]}


class ThinArmed:
    """One armed volume on each VM."""

    def __init__(self) -> None:
        self.asked: list[list[str] | None] = []

    def status(
        self, vm: str | None = None, *, vms: Collection[str] | None = None
    ) -> list[ThinVolumeView]:
        self.asked.append(None if vms is None else sorted(vms))
        return [thin_row(vm=name, running=True, state="set", threshold=5, armed_threshold=5)
                for name in (["a", "b"] if vms is None else vms)]


def test_the_confirmer_compares_stored_plans_with_the_live_xml(tmp_path: Path) -> None:
    records = records_with(tmp_path, {"good": GOOD_PLAN, "moved": {"mapping": [[101, [0, 1]]]},
                                      "gone": GOOD_PLAN})

    def lookup(name: str) -> Domain:
        if name == "gone":
            raise NotFound("no VM named gone")
        return Domain(MAPPED)

    confirmer = Confirmer(lookup, records, EventLog(records), Thin())
    assert confirmer.run() == {"iothread_plans": 3, "iothread_plans_confirmed": 1,
                               "thin_volumes": 2, "thin_volumes_confirmed": 1}
    assert any(line.startswith("moved/vda:") for line in confirmer.last_disagreements)
    assert any(line.startswith("gone:") for line in confirmer.last_disagreements)


def test_between_full_checks_only_what_events_named_is_checked_again(tmp_path: Path) -> None:
    records = records_with(tmp_path, {"a": GOOD_PLAN, "b": GOOD_PLAN})
    events = EventLog(records)
    lookups: list[str] = []
    scopes: list[float] = []
    now = [0.0]

    def lookup(name: str) -> Domain:
        lookups.append(name)
        return Domain(MAPPED)

    @contextmanager
    def scope(max_age_s: float) -> Iterator[None]:
        scopes.append(max_age_s)
        yield

    thin = ThinArmed()
    confirmer = Confirmer(lookup, records, events, thin, scope, clock=lambda: now[0])
    first = confirmer.run_full()
    assert sorted(lookups) == ["a", "b"] and len(scopes) == 1 and confirmer.checked_at
    assert thin.asked == [None]
    now[0] = 5.0
    assert confirmer.run() == first and len(lookups) == 2 and len(scopes) == 1
    events.publish("thin.extended", "a", target="vda")
    assert confirmer.run() == first and len(lookups) == 2 and len(scopes) == 2
    assert thin.asked[-1] == ["a"]  # the thin volumes of the VM the event named, no others
    events.publish("disk.attached", "b", target="vdb")
    confirmer.run()
    assert lookups[2:] == ["b"] and thin.asked[-1] == ["b"]
    confirmer.run_full()
    assert sorted(lookups[3:]) == ["a", "b"] and len(scopes) == 4 and thin.asked[-1] is None


def test_what_was_not_confirmed_is_checked_again_on_every_pass(tmp_path: Path) -> None:
    records = records_with(tmp_path, {"moved": {"mapping": [[101, [0, 1]]]}})
    lookups: list[str] = []

    def lookup(name: str) -> Domain:
        lookups.append(name)
        return Domain(MAPPED)

    thin = Thin()  # one of its two volumes is not armed
    calls = []
    original = thin.status

    def counted(
        vm: str | None = None, *, vms: Collection[str] | None = None
    ) -> list[ThinVolumeView]:
        calls.append(vms)
        return original(vm, vms=vms)

    thin.status = counted  # type: ignore[method-assign]
    confirmer = Confirmer(lookup, records, EventLog(records), thin, clock=lambda: 1.0)
    for _ in range(3):
        confirmer.run()
    assert lookups == ["moved"] * 3 and len(calls) == 3
