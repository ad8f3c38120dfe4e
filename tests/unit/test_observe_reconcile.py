"""``ReconcileLog`` and ``Confirmer``: a pass is recorded step by step and confirmed only whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blockplane.errors import NotFound
from blockplane.observe.confirm import FULL_EVERY_S, Confirmer, thin_confirmed
from blockplane.observe.reconcile import ReconcileLog, confirmed
from blockplane.store.database import Database
from blockplane.store.records import DiskRecord, PoolRecord, Records, VMRecord, VolumeRecord


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
    report = log.to_json()
    assert report["passes"] == 1 and report["confirmed"] is False
    assert report["first"] == report["last"]
    log.run([counting])
    report = log.to_json()
    assert report["confirmed"] is True and report["first"]["number"] == 1
    assert report["last"]["number"] == 2


def test_confirmed_needs_every_plan_and_every_thin_volume() -> None:
    assert not confirmed({})
    assert confirmed({"iothread_plans": 0, "iothread_plans_confirmed": 0})
    assert not confirmed({"iothread_plans": 4, "iothread_plans_confirmed": 3})
    assert not confirmed({"iothread_plans": 4, "iothread_plans_confirmed": 4,
                          "thin_volumes": 4, "thin_volumes_confirmed": 3})


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
    assert thin_confirmed(row) is expected


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
    def status(self, vm: str | None = None) -> list[dict[str, Any]]:
        return [{"running": True, "state": "set", "threshold": 5, "armed_threshold": 5},
                {"running": True, "state": "unset", "threshold": None, "armed_threshold": None}]


def test_the_confirmer_compares_stored_plans_with_the_live_xml(tmp_path: Path) -> None:
    records = Records(Database(tmp_path / "state.db"))
    records.add_pool(PoolRecord("p", "dir", str(tmp_path), None, 4 << 20, 50))
    for vm in ("good", "moved", "gone"):
        records.add_vm(VMRecord(vm, vm, 1, 64 << 20, "none"))
        records.add_volume(VolumeRecord("p", vm, f"/p/{vm}", "qcow2", 1 << 20, 1 << 20, False))
    plan = {"mapping": [[101, [0]], [102, [1]]]}
    records.add_disk(DiskRecord("good", "vda", "p", "good", "virtio", plan))
    records.add_disk(DiskRecord("moved", "vda", "p", "moved", "virtio",
                                {"mapping": [[101, [0, 1]]]}))
    records.add_disk(DiskRecord("gone", "vda", "p", "gone", "virtio", plan))

    def lookup(name: str) -> Domain:
        if name == "gone":
            raise NotFound("no VM named gone")
        return Domain(MAPPED)

    confirmer = Confirmer(lookup, records, Thin())
    assert confirmer.run() == {"iothread_plans": 3, "iothread_plans_confirmed": 1,
                               "thin_volumes": 2, "thin_volumes_confirmed": 1}
    assert any(line.startswith("moved/vda:") for line in confirmer.last_disagreements)
    assert any(line.startswith("gone:") for line in confirmer.last_disagreements)


def test_a_full_check_runs_at_start_then_every_period_reusing_the_pass_stats(
    tmp_path: Path,
) -> None:
    records = Records(Database(tmp_path / "state.db"))
    lookups: list[str] = []
    scopes: list[float] = []
    now = [0.0]

    def lookup(name: str) -> Domain:
        lookups.append(name)
        return Domain(MAPPED)

    class Scope:
        def __init__(self, max_age_s: float) -> None:
            scopes.append(max_age_s)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *_exc: object) -> None:
            return None

    records.add_pool(PoolRecord("p", "dir", str(tmp_path), None, 4 << 20, 50))
    records.add_vm(VMRecord("good", "good", 1, 64 << 20, "none"))
    records.add_volume(VolumeRecord("p", "good", "/p/good", "qcow2", 1 << 20, 1 << 20, False))
    records.add_disk(DiskRecord("good", "vda", "p", "good", "virtio",
                                {"mapping": [[101, [0]], [102, [1]]]}))
    confirmer = Confirmer(lookup, records, Thin(), Scope, clock=lambda: now[0])
    first = confirmer.run()
    assert lookups == ["good"] and len(scopes) == 1 and confirmer.checked_at is not None
    now[0] = FULL_EVERY_S - 1
    assert confirmer.run() == first and lookups == ["good"]
    now[0] = FULL_EVERY_S + 1
    confirmer.run()
    assert lookups == ["good", "good"] and len(scopes) == 2
