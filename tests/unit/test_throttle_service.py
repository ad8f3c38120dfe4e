"""Throttle group lifecycle against a fake domain: defaults, in-place updates, refusals, undo."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from blockplane.cli.decode import encode
from blockplane.deadlines import BoundedLock
from blockplane.errors import CapabilityMissing, Conflict, InvalidInput, NotFound
from blockplane.facts.capabilities import Capability
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database
from blockplane.store.records import Records
from blockplane.throttle.service import ThrottleService
from tests.throttle_fakes import FakeDomain

SUPPORTED = Capability(True, "QEMU 10.0.2 and libvirt 11.3.0 support it", "libvirt >= 11.2")
UNSUPPORTED = Capability(False, "libvirt 10.0.0 is older than 11.2", "libvirt >= 11.2")


@pytest.fixture
def events(tmp_path: Path) -> EventLog:
    return EventLog(Records(Database(tmp_path / "state.db")))


def service(
    domain: FakeDomain, events: EventLog, capability: Capability = SUPPORTED
) -> ThrottleService:
    locks: defaultdict[str, BoundedLock] = defaultdict(lambda: BoundedLock("vm", "timeout.vm_lock"))
    return ThrottleService(lambda _vm: domain, locks.__getitem__, events, capability)


def test_set_on_a_running_vm_creates_the_group_live_and_in_the_config(events: EventLog) -> None:
    domain = FakeDomain()
    result = encode(service(domain, events).set_group("web", "gold", {"total-iops-sec": "500"}))
    assert result["created"] is True and result["changed"] == ["live", "config"]
    assert domain.live.groups["gold"] == domain.config.groups["gold"]
    assert domain.live.groups["gold"] == ThrottleLimits(total_iops_sec=500)
    assert [event.type for event in events.history()] == ["throttle.group_set"]


def test_set_on_a_stopped_vm_changes_the_config_and_live_is_refused(events: EventLog) -> None:
    domain = FakeDomain(running=False)
    throttle = service(domain, events)
    assert throttle.set_group("web", "gold", {"total_iops_sec": 5}).changed == ("config",)
    with pytest.raises(Conflict) as caught:
        throttle.set_group("web", "gold", {"total_iops_sec": 6}, live=True)
    assert caught.value.code == "vm.not_running" and caught.value.exit_code == 2
    assert domain.config.groups["gold"].total_iops_sec == 5


def test_explicit_flags_change_only_that_definition(events: EventLog) -> None:
    domain = FakeDomain()
    throttle = service(domain, events)
    throttle.set_group("web", "gold", {"total_iops_sec": 5}, config=True)
    assert "gold" not in domain.live.groups and "gold" in domain.config.groups
    throttle.set_group("web", "gold", {"total_iops_sec": 7}, live=True)
    info = encode(throttle.info("web", "gold"))
    assert info["limits"] == {"total_iops_sec": 7} and info["definition"] == "live"
    assert info["differs"] == {"config": {"total_iops_sec": 5}}


def test_update_keeps_the_fields_it_does_not_name(events: EventLog) -> None:
    domain = FakeDomain()
    domain.add_group(
        "gold",
        ThrottleLimits(
            total_iops_sec=400, total_iops_sec_max=800, total_iops_sec_max_length=60
        ),
    )
    result = encode(service(domain, events).set_group("web", "gold", {"total_iops_sec": 500}))
    assert result["created"] is False
    assert result["limits"] == {
        "total_iops_sec": 500,
        "total_iops_sec_max": 800,
        "total_iops_sec_max_length": 60,
    }


@pytest.mark.parametrize(
    ("existing", "request_", "code"),
    [
        (ThrottleLimits(total_iops_sec=400), {"read_iops_sec": 5}, "throttle.total_with_rw"),
        (
            ThrottleLimits(total_iops_sec=400, total_iops_sec_max=800),
            {"total_iops_sec": 900},
            "throttle.max_below_avg",
        ),
        (ThrottleLimits(total_iops_sec=400), {"total_iops_sec": 0}, "throttle.all_zero"),
        (None, {"total-iops-sec": "-3"}, "throttle.negative"),
        (None, {"total_iops_sec": "lots"}, "throttle.not_integer"),
        (None, {"total_iops": 3}, "throttle.unknown_field"),
        (None, {}, "throttle.no_limits"),
    ],
)
def test_invalid_limits_change_nothing(
    events: EventLog,
    existing: ThrottleLimits | None,
    request_: dict[str, object],
    code: str,
) -> None:
    domain = FakeDomain()
    if existing is not None:
        domain.add_group("gold", existing)
    before = (dict(domain.live.groups), dict(domain.config.groups))
    with pytest.raises(InvalidInput) as caught:
        service(domain, events).set_group("web", "gold", request_)
    assert caught.value.code == code and caught.value.exit_code == 2
    assert (domain.live.groups, domain.config.groups) == before
    assert domain.calls == [] and events.history() == []


@pytest.mark.parametrize(
    ("name", "code"),
    [("a b", "throttle.name_invalid"), ("blockplane-disk-vda", "throttle.name_reserved")],
)
def test_bad_group_names_are_refused(events: EventLog, name: str, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        service(FakeDomain(), events).set_group("web", name, {"total_iops_sec": 5})
    assert caught.value.code == code


def test_a_failure_in_the_config_undoes_the_live_change(events: EventLog) -> None:
    domain = FakeDomain(fail_on={("set", "config")})
    domain.add_group("gold", ThrottleLimits(total_iops_sec=400))
    throttle = service(domain, events)
    with pytest.raises(Exception, match="injected"):
        throttle.set_group("web", "gold", {"total_iops_sec": 900})
    assert domain.live.groups["gold"] == ThrottleLimits(total_iops_sec=400)
    with pytest.raises(Exception, match="injected"):
        throttle.set_group("web", "fresh", {"total_iops_sec": 9})
    assert "fresh" not in domain.live.groups and "fresh" not in domain.config.groups


def test_info_and_list_name_the_disks_in_chain_order(events: EventLog) -> None:
    domain = FakeDomain()
    domain.add_group("vm-agg", ThrottleLimits(total_iops_sec=400))
    domain.add_group("blockplane-disk-vdb", ThrottleLimits(total_iops_sec=300))
    domain.add_disk("vdb", ("blockplane-disk-vdb", "vm-agg"))
    domain.add_disk("vdc", ("vm-agg",))
    throttle = service(domain, events)
    info = encode(throttle.info("web", "vm-agg"))
    assert info["disks"] == [
        {"target": "vdb", "position": 1, "chain": ["blockplane-disk-vdb", "vm-agg"]},
        {"target": "vdc", "position": 0, "chain": ["vm-agg"]},
    ]
    assert info["live"] is True and info["config"] is True and "differs" not in info
    listed = encode(throttle.list_groups("web"))
    assert [group["group"] for group in listed] == ["vm-agg", "blockplane-disk-vdb"]
    with pytest.raises(NotFound) as caught:
        throttle.info("web", "nope")
    assert caught.value.code == "group.not_found" and caught.value.exit_code == 2


def test_delete_refuses_a_group_in_use_and_changes_nothing(events: EventLog) -> None:
    domain = FakeDomain()
    domain.add_group("vm-agg", ThrottleLimits(total_iops_sec=400))
    domain.add_disk("vdb", ("vm-agg",), live=False)
    with pytest.raises(Conflict) as caught:
        service(domain, events).delete("web", "vm-agg")
    assert caught.value.code == "group.in_use" and caught.value.exit_code == 2
    assert caught.value.details["disks"] == ["vdb"] and "vdb" in caught.value.message
    assert domain.calls == [] and "vm-agg" in domain.live.groups


def test_delete_removes_the_group_everywhere_it_exists(events: EventLog) -> None:
    domain = FakeDomain()
    domain.add_group("gold", ThrottleLimits(total_iops_sec=400))
    throttle = service(domain, events)
    assert throttle.delete("web", "gold").definitions == ("live", "config")
    assert domain.live.groups == {} and domain.config.groups == {}
    with pytest.raises(NotFound):
        throttle.delete("web", "gold")


def test_groups_need_the_capability(events: EventLog) -> None:
    with pytest.raises(CapabilityMissing) as caught:
        service(FakeDomain(), events, UNSUPPORTED).set_group("web", "g", {"total_iops_sec": 1})
    assert caught.value.code == "capability.missing" and "11.2" in caught.value.message
