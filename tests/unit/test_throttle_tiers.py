"""Tier policy: chains of throttle groups, capacity scaling, and the fallback to <iotune>."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.cli.decode import encode
from blockplane.errors import CapabilityMissing, InvalidInput, NotFound
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.throttle.tiers import (
    GIB,
    VM_AGGREGATE_GROUP,
    CapacityScaling,
    EffectiveTiers,
    GroupSpec,
    ScaledLimit,
    TierSpec,
    compute_tiers,
    per_disk_group_name,
    plan_limits,
    recompute_for_size,
    scaled_value,
)
from blockplane.throttle.validation import validate_group_name

PER_DISK_300 = ThrottleLimits(total_iops_sec=300)
VM_400 = GroupSpec("vm-total", ThrottleLimits(total_iops_sec=400))


def spec(**overrides: object) -> TierSpec:
    values: dict[str, object] = {"vm": "web 1", "target": "vda"}
    values.update(overrides)
    return TierSpec(**values)  # type: ignore[arg-type]


def invalid(code: str, tier_spec: TierSpec, size_bytes: int = 10 * GIB) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        compute_tiers(tier_spec, size_bytes)
    assert caught.value.code == code, caught.value.message
    return caught.value


# -- chains ------------------------------------------------------------------------------------


def test_per_disk_limits_become_a_generated_group_first_in_the_chain() -> None:
    tiers = compute_tiers(spec(per_disk=PER_DISK_300, vm_group=VM_400), 10 * GIB)
    assert tiers.group_names == ("blockplane-disk-vda", "vm-total")
    assert [tier.origin for tier in tiers.chain] == ["per_disk", "vm_aggregate"]
    assert tiers.chain[0].limits == PER_DISK_300
    assert tiers.per_disk_limits == PER_DISK_300
    assert tiers.per_disk_group == tiers.chain[0]


def test_named_groups_keep_their_order_between_per_disk_and_vm_groups() -> None:
    tiers = compute_tiers(
        spec(per_disk=PER_DISK_300, groups=("gold", "tenant.a"), vm_group=VM_400), GIB
    )
    assert tiers.group_names == ("blockplane-disk-vda", "gold", "tenant.a", "vm-total")
    assert tiers.chain[1].limits is None


def test_a_disk_without_limits_has_no_chain() -> None:
    tiers = compute_tiers(spec(), GIB)
    assert tiers.chain == ()
    assert tiers.per_disk_group is None
    assert tiers.per_disk_limits.is_zero()


def test_the_generated_name_is_a_valid_group_name_whatever_the_vm_is_called() -> None:
    tiers = compute_tiers(spec(vm="ünïcode / vm with spaces", per_disk=PER_DISK_300), GIB)
    validate_group_name(tiers.group_names[0], generated=True)
    assert per_disk_group_name("sdaa") == "blockplane-disk-sdaa"


def test_a_target_that_cannot_make_a_group_name_is_refused() -> None:
    invalid("throttle.name_invalid", spec(target="vd a", per_disk=PER_DISK_300))


def test_the_default_vm_group_name_is_allowed_but_users_cannot_take_generated_names() -> None:
    tiers = compute_tiers(spec(vm_group=GroupSpec(VM_AGGREGATE_GROUP, VM_400.limits)), GIB)
    assert tiers.group_names == (VM_AGGREGATE_GROUP,)
    invalid("throttle.name_reserved", spec(groups=("blockplane-disk-vdb",)))
    invalid("throttle.name_reserved", spec(vm_group=GroupSpec("blockplane-x", VM_400.limits)))


def test_invalid_and_duplicate_group_names_are_refused() -> None:
    invalid("throttle.name_invalid", spec(groups=("gold tier",)))
    error = invalid("tier.duplicate_group", spec(groups=("gold", "gold")))
    assert "'gold' appears twice" in error.message
    invalid("tier.duplicate_group", spec(groups=("vm-total",), vm_group=VM_400))


def test_invalid_limits_are_refused_before_anything_else() -> None:
    below = ThrottleLimits(total_iops_sec=3, total_iops_sec_max=2)
    invalid("throttle.max_below_avg", spec(per_disk=below))
    invalid("throttle.negative", spec(per_disk=ThrottleLimits(read_bytes_sec=-1)))
    invalid("throttle.all_zero", spec(vm_group=GroupSpec("vm-total", ThrottleLimits())))
    both = ThrottleLimits(total_iops_sec=1, read_iops_sec=1)
    invalid("throttle.total_with_rw", spec(vm_group=GroupSpec("v", both)))


def test_unknown_named_groups_are_refused_when_the_domains_groups_are_known() -> None:
    with pytest.raises(NotFound) as caught:
        compute_tiers(
            spec(groups=("gold", "silver"), vm_group=VM_400), GIB, existing_groups={"gold"}
        )
    assert caught.value.code == "group.not_found"
    assert "silver" in caught.value.message and "gold," not in caught.value.message
    assert caught.value.exit_code == 2
    compute_tiers(spec(groups=("gold",), vm_group=VM_400), GIB, existing_groups={"gold"})


@pytest.mark.parametrize("size", [-1, 1.5, True, "10G"])
def test_sizes_must_be_whole_bytes(size: object) -> None:
    invalid("tier.size_invalid", spec(), size)  # type: ignore[arg-type]


# -- capacity scaling --------------------------------------------------------------------------


def iops_per_gb(per_gb: int, floor: int = 0, cap: int = 0) -> CapacityScaling:
    return CapacityScaling(total_iops_sec_per_gb=ScaledLimit(per_gb, floor, cap))


def test_scaled_limits_multiply_by_the_size_in_gib() -> None:
    tiers = compute_tiers(spec(scaled=iops_per_gb(30)), 10 * GIB)
    assert tiers.per_disk_limits == ThrottleLimits(total_iops_sec=300)
    assert tiers.group_names == ("blockplane-disk-vda",)


def test_a_started_gib_counts_and_a_disk_counts_as_at_least_one() -> None:
    assert scaled_value(ScaledLimit(30), 10 * GIB + 1) == 330
    assert scaled_value(ScaledLimit(30), 0) == 30
    assert scaled_value(ScaledLimit(30), 1) == 30


def test_the_floor_and_the_cap_bound_the_scaled_value() -> None:
    assert scaled_value(ScaledLimit(30, floor=100), GIB) == 100
    assert scaled_value(ScaledLimit(30, floor=100), 10 * GIB) == 300
    assert scaled_value(ScaledLimit(30, cap=200), 10 * GIB) == 200
    assert scaled_value(ScaledLimit(30, cap=200), GIB) == 30


def test_cinders_own_examples() -> None:
    # cinder/tests/unit/volume/test_connection.py: per-GB with a minimum, and capped by *_sec_max.
    scaling = CapacityScaling(
        total_iops_sec_per_gb=ScaledLimit(300_000, floor=900_000),
        total_bytes_sec_per_gb=ScaledLimit(1_048_576, floor=3_145_728),
    )
    per_disk = ThrottleLimits(total_iops_sec_max=15_000_000)
    small = compute_tiers(spec(scaled=scaling, per_disk=per_disk), 1 * GIB).per_disk_limits
    assert (small.total_iops_sec, small.total_bytes_sec) == (900_000, 3_145_728)
    large = compute_tiers(spec(scaled=scaling, per_disk=per_disk), 100 * GIB).per_disk_limits
    assert (large.total_iops_sec, large.total_bytes_sec) == (15_000_000, 104_857_600)
    assert large.total_iops_sec_max == 15_000_000


def test_scaled_and_fixed_values_for_the_same_limit_are_refused() -> None:
    fixed = ThrottleLimits(total_iops_sec=5)
    error = invalid("tier.scaled_conflict", spec(scaled=iops_per_gb(30), per_disk=fixed))
    assert "total_iops_sec=5 and total_iops_sec_per_gb" in error.message


def test_a_scaled_total_with_a_fixed_read_limit_is_a_total_conflict() -> None:
    read = ThrottleLimits(read_iops_sec=5)
    invalid("throttle.total_with_rw", spec(scaled=iops_per_gb(30), per_disk=read))


def test_scaled_specs_are_checked() -> None:
    invalid("tier.per_gb_zero", spec(scaled=iops_per_gb(0)))
    invalid("throttle.negative", spec(scaled=iops_per_gb(30, floor=-1)))
    invalid("throttle.not_integer", spec(scaled=iops_per_gb(1.5)))  # type: ignore[arg-type]
    invalid("tier.floor_above_cap", spec(scaled=iops_per_gb(30, floor=500, cap=400)))
    error = invalid(
        "tier.floor_above_cap",
        spec(scaled=iops_per_gb(30, floor=500), per_disk=ThrottleLimits(total_iops_sec_max=400)),
    )
    assert "total_iops_sec_max=400" in error.message


def test_a_scaled_value_past_1e15_is_refused_not_clamped() -> None:
    invalid("throttle.value_too_large", spec(scaled=iops_per_gb(10**14)), 11 * GIB)


def test_growing_a_disk_changes_only_the_per_disk_limits() -> None:
    tier_spec = spec(scaled=iops_per_gb(30, cap=3000), groups=("gold",), vm_group=VM_400)
    before = compute_tiers(tier_spec, 10 * GIB)
    after = recompute_for_size(tier_spec, 20 * GIB)
    assert after.group_names == before.group_names
    assert before.per_disk_limits.total_iops_sec == 300
    assert after.per_disk_limits.total_iops_sec == 600
    assert after.chain[1:] == before.chain[1:]


scalings = st.builds(
    ScaledLimit,
    per_gb=st.integers(1, 10**6),
    floor=st.integers(0, 10**6),
    cap=st.one_of(st.just(0), st.integers(10**6, 10**9)),
)


@given(scalings, st.integers(0, 2**50), st.integers(0, 2**50))
def test_the_chain_never_changes_with_size_and_limits_never_shrink_as_it_grows(
    scaled: ScaledLimit, size_a: int, size_b: int
) -> None:
    tier_spec = spec(scaled=CapacityScaling(total_iops_sec_per_gb=scaled), groups=("gold",))
    small, large = sorted((size_a, size_b))
    before = compute_tiers(tier_spec, small)
    after = recompute_for_size(tier_spec, large)
    assert after.group_names == before.group_names == ("blockplane-disk-vda", "gold")
    assert before.per_disk_limits.total_iops_sec <= after.per_disk_limits.total_iops_sec
    value = after.per_disk_limits.total_iops_sec
    assert value >= scaled.floor and (scaled.cap == 0 or value <= scaled.cap)


def test_effective_limits_for_the_api() -> None:
    tiers = compute_tiers(spec(scaled=iops_per_gb(30), groups=("gold",)), 10 * GIB)
    assert encode(tiers.view()) == {
        "vm": "web 1",
        "target": "vda",
        "size_bytes": 10 * GIB,
        "per_disk_limits": {"total_iops_sec": 300},
        "chain": [
            {
                "group": "blockplane-disk-vda",
                "origin": "per_disk",
                "limits": {"total_iops_sec": 300},
            },
            {"group": "gold", "origin": "named", "limits": None},
        ],
    }


# -- fallback ----------------------------------------------------------------------------------

REASON = "libvirt 11.0.0 < 11.2.0"


def tiers_of(**overrides: object) -> EffectiveTiers:
    return compute_tiers(spec(**overrides), 10 * GIB)


def test_with_throttle_groups_the_chain_becomes_filters() -> None:
    plan = plan_limits(tiers_of(per_disk=PER_DISK_300, vm_group=VM_400), True, "libvirt 11.3.0")
    assert plan.mode == "filters"
    assert [tier.group for tier in plan.chain] == ["blockplane-disk-vda", "vm-total"]
    assert plan.per_disk_limits == PER_DISK_300
    assert "blockplane-disk-vda -> vm-total" in plan.reason and "libvirt 11.3.0" in plan.reason


def test_without_groups_a_per_disk_tier_becomes_iotune() -> None:
    plan = plan_limits(tiers_of(per_disk=PER_DISK_300), False, REASON)
    assert (plan.mode, plan.chain, plan.iotune_group_name) == ("iotune", (), None)
    assert plan.per_disk_limits == PER_DISK_300
    assert REASON in plan.reason


def test_without_groups_a_vm_aggregate_alone_becomes_a_shared_iotune_group() -> None:
    plan = plan_limits(tiers_of(vm_group=VM_400), False, REASON)
    assert (plan.mode, plan.iotune_group_name) == ("iotune", "vm-total")
    assert plan.per_disk_limits == VM_400.limits


def test_without_groups_several_tiers_are_refused_with_the_reason() -> None:
    with pytest.raises(CapabilityMissing) as caught:
        plan_limits(tiers_of(per_disk=PER_DISK_300, vm_group=VM_400), False, REASON)
    error = caught.value
    assert error.code == "capability.missing"
    assert REASON in error.message
    assert "blockplane-disk-vda, vm-total" in error.message
    assert error.details["tiers"] == ["blockplane-disk-vda", "vm-total"]
    assert error.exit_code == 2


def test_without_groups_a_named_group_is_refused() -> None:
    with pytest.raises(CapabilityMissing) as caught:
        plan_limits(tiers_of(groups=("gold",)), False, REASON)
    assert "'gold'" in caught.value.message and REASON in caught.value.message


@pytest.mark.parametrize("supported", [True, False])
def test_no_limits_need_nothing(supported: bool) -> None:
    plan = plan_limits(tiers_of(), supported, REASON)
    assert (plan.mode, plan.chain) == ("none", ())
    assert plan.per_disk_limits.is_zero()


@given(
    per_disk=st.booleans(),
    named=st.lists(st.sampled_from(["gold", "silver", "t.1"]), unique=True, max_size=2),
    vm_group=st.booleans(),
    supported=st.booleans(),
)
def test_a_plan_never_drops_a_tier(
    per_disk: bool, named: list[str], vm_group: bool, supported: bool
) -> None:
    tiers = tiers_of(
        per_disk=PER_DISK_300 if per_disk else ThrottleLimits(),
        groups=tuple(named),
        vm_group=VM_400 if vm_group else None,
    )
    try:
        plan = plan_limits(tiers, supported, REASON)
    except CapabilityMissing:
        assert not supported
        return
    if plan.mode == "filters":
        assert plan.chain == tiers.chain
    elif plan.mode == "iotune":
        (only,) = tiers.chain
        assert only.limits == plan.per_disk_limits
    else:
        assert tiers.chain == ()
