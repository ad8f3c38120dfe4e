"""A disk's limits on attach and detach, and rescaling, against a fake domain and a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockplane.cli.decode import encode
from blockplane.deadlines import BoundedLock
from blockplane.errors import CapabilityMissing, Conflict, InvalidInput, NotFound
from blockplane.facts.capabilities import Capability
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database
from blockplane.store.records import Records, VMRecord
from blockplane.store.throttle_records import ThrottleRecords
from blockplane.throttle.disk_limits import DiskThrottle
from blockplane.throttle.rescale import DiskRescaler
from blockplane.throttle.tiers import GIB, CapacityScaling, GroupSpec, ScaledLimit
from tests.throttle_fakes import FakeDomain
from tests.unit.test_throttle_service import SUPPORTED, UNSUPPORTED


class Stores:
    def __init__(self, path: Path) -> None:
        database = Database(path / "state.db")
        records = Records(database)
        records.add_vm(VMRecord("web", "u-1", 2, 2**28, "none"))
        self.qos = ThrottleRecords(database)
        self.events = EventLog(records)


@pytest.fixture
def stores(tmp_path: Path) -> Stores:
    return Stores(tmp_path)


def hook(domain: FakeDomain, stores: Stores, capability: Capability = SUPPORTED) -> DiskThrottle:
    return DiskThrottle(lambda _vm: domain, stores.qos, stores.events, capability)


def test_per_disk_limits_become_the_first_filter_then_named_groups(stores: Stores) -> None:
    domain = FakeDomain()
    domain.add_group("vm-agg", ThrottleLimits(total_iops_sec=400))
    throttle = hook(domain, stores)
    plan = throttle.prepare_disk(domain, "vdb", GIB, ["vm-agg"], {"total-iops-sec": 300})
    assert plan.throttle_groups == ("blockplane-disk-vdb", "vm-agg")
    assert plan.iotune is None and domain.calls == []
    throttle.apply_disk_plan(domain, plan, live=True)
    assert domain.live.groups["blockplane-disk-vdb"] == ThrottleLimits(total_iops_sec=300)
    assert "blockplane-disk-vdb" in domain.config.groups
    record = stores.qos.disk("web", "vdb")
    assert record is not None and record.chain == ["blockplane-disk-vdb", "vm-agg"]
    answer = encode(plan.view())
    assert answer["mode"] == "filters"
    assert [tier["group"] for tier in answer["chain"]] == ["blockplane-disk-vdb", "vm-agg"]
    assert answer["chain"][1]["limits"] == {"total_iops_sec": 400}
    assert answer["tightest"] == {"total_iops_sec": 300}

    throttle.rollback_disk_plan(domain, plan)
    assert "blockplane-disk-vdb" not in domain.live.groups
    assert "blockplane-disk-vdb" not in domain.config.groups
    assert "vm-agg" in domain.live.groups and stores.qos.disk("web", "vdb") is None


def test_an_unknown_group_is_refused_before_anything_changes(stores: Stores) -> None:
    domain = FakeDomain()
    with pytest.raises(NotFound) as caught:
        hook(domain, stores).prepare_disk(domain, "vdb", GIB, ["gold"], {"total_iops_sec": 3})
    assert caught.value.code == "group.not_found" and caught.value.exit_code == 2
    assert domain.calls == [] and stores.qos.disks() == []


def test_a_group_only_in_the_live_definition_is_refused(stores: Stores) -> None:
    domain = FakeDomain()
    domain.live.groups["gold"] = ThrottleLimits(total_iops_sec=5)
    with pytest.raises(NotFound, match="only in the live definition"):
        hook(domain, stores).prepare_disk(domain, "vdb", GIB, ["gold"], {})


def test_invalid_per_disk_limits_are_refused(stores: Stores) -> None:
    domain = FakeDomain()
    with pytest.raises(InvalidInput) as caught:
        hook(domain, stores).prepare_disk(
            domain, "vdb", GIB, [], {"total_iops_sec": 3, "read_iops_sec": 2}
        )
    assert caught.value.code == "throttle.total_with_rw"


def test_vm_group_is_created_once_and_must_match(stores: Stores) -> None:
    domain = FakeDomain(running=False)
    throttle = hook(domain, stores)
    vm_group = GroupSpec("vm-agg", ThrottleLimits(total_iops_sec=400))
    plan = throttle.prepare_disk(domain, "vdb", GIB, [], {}, vm_group=vm_group)
    assert plan.throttle_groups == ("vm-agg",)
    throttle.apply_disk_plan(domain, plan, live=False)
    assert domain.config.groups["vm-agg"] == vm_group.limits
    domain.add_disk("vdb", plan.throttle_groups)
    again = throttle.prepare_disk(domain, "vdc", GIB, [], {}, vm_group=vm_group)
    assert again.creates == ()
    other = GroupSpec("vm-agg", ThrottleLimits(total_iops_sec=999))
    with pytest.raises(Conflict) as caught:
        throttle.prepare_disk(domain, "vdc", GIB, [], {}, vm_group=other)
    assert caught.value.code == "group.limits_differ"


def test_without_groups_one_tier_falls_back_to_iotune(stores: Stores) -> None:
    domain = FakeDomain()
    throttle = hook(domain, stores, UNSUPPORTED)
    plan = throttle.prepare_disk(domain, "vdb", GIB, [], {"total_iops_sec": 300})
    assert plan.plan.mode == "iotune" and plan.throttle_groups == ()
    assert plan.iotune == ThrottleLimits(total_iops_sec=300) and plan.iotune_group is None
    assert "<iotune>" in plan.reason and "libvirt 10.0.0" in plan.reason
    assert plan.view().tightest == {"total_iops_sec": 300}
    throttle.apply_disk_plan(domain, plan, live=True)
    assert domain.calls == []
    record = stores.qos.disk("web", "vdb")
    assert record is not None and record.mode == "iotune"


def test_without_groups_two_tiers_are_refused(stores: Stores) -> None:
    domain = FakeDomain()
    vm_group = GroupSpec("vm-agg", ThrottleLimits(total_iops_sec=400))
    with pytest.raises(CapabilityMissing) as caught:
        hook(domain, stores, UNSUPPORTED).prepare_disk(
            domain, "vdb", GIB, [], {"total_iops_sec": 300}, vm_group=vm_group
        )
    assert caught.value.code == "capability.missing" and caught.value.exit_code == 2


def test_no_limits_means_no_plan_to_apply(stores: Stores) -> None:
    domain = FakeDomain()
    throttle = hook(domain, stores)
    plan = throttle.prepare_disk(domain, "vdb", GIB, [], {})
    assert plan.plan.mode == "none" and plan.throttle_groups == () and plan.iotune is None
    throttle.apply_disk_plan(domain, plan, live=True)
    assert domain.calls == [] and stores.qos.disks() == []


def test_detach_deletes_the_generated_groups_once_unused(stores: Stores) -> None:
    domain = FakeDomain()
    throttle = hook(domain, stores)
    vm_group = GroupSpec("blockplane-vm", ThrottleLimits(total_iops_sec=400))
    plan = throttle.prepare_disk(
        domain, "vdb", GIB, [], {"total_iops_sec": 300}, vm_group=vm_group
    )
    throttle.apply_disk_plan(domain, plan, live=True)
    domain.add_disk("vdb", plan.throttle_groups)
    domain.add_disk("vdc", ("blockplane-vm",))
    del domain.live.disks["vdb"], domain.config.disks["vdb"]
    throttle.disk_detached("web", "vdb")
    assert set(domain.config.groups) == {"blockplane-vm"} == set(domain.live.groups)
    assert stores.qos.disk("web", "vdb") is None
    del domain.live.disks["vdc"], domain.config.disks["vdc"]
    throttle.disk_detached("web", "vdc")
    assert domain.config.groups == {} and domain.live.groups == {}


def test_capacity_scaled_limits_follow_the_disk_size(stores: Stores) -> None:
    domain = FakeDomain()
    throttle = hook(domain, stores)
    scaling = CapacityScaling(total_iops_sec_per_gb=ScaledLimit(per_gb=30, floor=100, cap=600))
    plan = throttle.prepare_disk(domain, "vdb", 2 * GIB, [], {}, scaling=scaling)
    assert plan.tiers.per_disk_limits == ThrottleLimits(total_iops_sec=100)
    throttle.apply_disk_plan(domain, plan, live=True)
    domain.add_disk("vdb", plan.throttle_groups)

    lock = BoundedLock("vm", "timeout.vm_lock")
    rescaler = DiskRescaler(lambda _vm: domain, lambda _vm: lock, stores.qos, stores.events)
    domain.capacity["vdb"] = 10 * GIB
    rescaler.reconcile()
    expected = ThrottleLimits(total_iops_sec=300)
    assert domain.live.groups["blockplane-disk-vdb"] == expected
    assert domain.config.groups["blockplane-disk-vdb"] == expected
    record = stores.qos.disk("web", "vdb")
    assert record is not None and record.size_bytes == 10 * GIB
    calls = len(domain.calls)
    rescaler.reconcile()
    assert len(domain.calls) == calls
    result = rescaler.disk_resized("web", "vdb", 100 * GIB)
    assert result is not None and result.per_disk_limits == {"total_iops_sec": 600}
    assert [e.type for e in stores.events.history()][-2:] == [
        "throttle.rescaled",
        "throttle.rescaled",
    ]

