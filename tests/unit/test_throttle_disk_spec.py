"""A disk's QoS request: JSON round trip for the store, and the volume descriptor's QoS fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.api.schemas import DiskAttach
from blockplane.api.throttle_bodies import attach_throttle
from blockplane.errors import InvalidInput
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.throttle.disk_spec import (
    build_spec,
    is_scaled,
    scaled_limit,
    spec_from_json,
    spec_to_json,
    vm_group_spec,
)
from blockplane.throttle.tiers import CapacityScaling, GroupSpec, ScaledLimit

small = st.integers(min_value=0, max_value=10**6)


@given(
    iops=small,
    per_gb=st.none() | st.builds(ScaledLimit, st.integers(1, 1000), small, small),
    groups=st.lists(st.sampled_from(["gold", "silver", "a.b"]), unique=True, max_size=3),
    vm_limit=st.none() | st.integers(1, 10**6),
)
def test_spec_survives_the_store(
    iops: int, per_gb: ScaledLimit | None, groups: list[str], vm_limit: int | None
) -> None:
    vm_group = GroupSpec("agg", ThrottleLimits(total_iops_sec=vm_limit)) if vm_limit else None
    spec = build_spec(
        "web", "vdb", {"read_iops_sec": iops}, groups,
        CapacityScaling(total_bytes_sec_per_gb=per_gb), vm_group,
    )
    assert spec_from_json(spec_to_json(spec)) == spec
    assert is_scaled(spec) == (per_gb is not None)


def test_scaled_limit_parts_are_checked() -> None:
    assert scaled_limit("x", {"per_gb": 3}) == ScaledLimit(3)
    for bad in ({"floor": 3}, {"per_gb": 1, "ceiling": 3}, {"per_gb": "3"}, {"per_gb": True}):
        with pytest.raises(InvalidInput):
            scaled_limit("x", bad)


def test_vm_group_defaults_to_the_generated_name() -> None:
    assert vm_group_spec(None, {"total_iops_sec": 5}).name == "blockplane-vm"


def test_descriptor_fields_become_qos_values() -> None:
    body = DiskAttach.model_validate(
        {
            "pool": "p",
            "size": "1G",
            "throttle_groups": ["gold"],
            "total_iops_sec_per_gb": {"per_gb": 50, "floor": 100},
            "vm_group": {"name": "agg", "limits": {"total_iops_sec": 400}},
        }
    )
    groups, scaling, vm_group = attach_throttle(body)
    assert groups == ("gold",)
    assert scaling == CapacityScaling(total_iops_sec_per_gb=ScaledLimit(50, 100, 0))
    assert vm_group == GroupSpec("agg", ThrottleLimits(total_iops_sec=400))


def test_a_vm_group_without_limits_joins_it_last() -> None:
    body = DiskAttach.model_validate(
        {"pool": "p", "size": "1G", "throttle_groups": ["gold"], "vm_group": {"name": "agg"}}
    )
    assert attach_throttle(body) == (("gold", "agg"), None, None)
    empty = DiskAttach.model_validate({"pool": "p", "size": "1G", "vm_group": {}})
    with pytest.raises(InvalidInput) as caught:
        attach_throttle(empty)
    assert caught.value.code == "tier.vm_group_invalid"
