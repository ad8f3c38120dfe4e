"""A disk's QoS request as JSON: what the store keeps so the tiers can be recomputed later.

Owns turning a ``TierSpec`` into plain JSON and back, and building one from the raw fields of a
volume descriptor. Pure: no libvirt, no store, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blockplane.errors import InvalidInput
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.throttle.tiers import (
    VM_AGGREGATE_GROUP,
    CapacityScaling,
    GroupSpec,
    ScaledLimit,
    TierSpec,
)

SCALED_FIELDS = ("total_iops_sec_per_gb", "total_bytes_sec_per_gb")


def build_spec(
    vm: str,
    target: str,
    limits: Mapping[str, object],
    groups: Sequence[str],
    scaling: CapacityScaling | None = None,
    vm_group: GroupSpec | None = None,
) -> TierSpec:
    """The ``TierSpec`` of one disk from a request; parsing errors are ``InvalidInput``."""
    return TierSpec(
        vm=vm,
        target=target,
        per_disk=ThrottleLimits.from_mapping(limits),
        scaled=scaling or CapacityScaling(),
        groups=tuple(groups),
        vm_group=vm_group,
    )


def scaled_limit(field: str, value: Mapping[str, object]) -> ScaledLimit:
    """``{"per_gb": N, "floor": F, "cap": C}`` as a ``ScaledLimit`` (floor and cap optional)."""
    unknown = set(value) - {"per_gb", "floor", "cap"}
    if unknown or "per_gb" not in value:
        raise InvalidInput(
            f"{field} takes per_gb (required), floor and cap; got {sorted(value)}",
            code="tier.scaled_invalid",
            fields=[field],
        )
    parts = {key: value[key] for key in ("per_gb", "floor", "cap") if key in value}
    for key, part in parts.items():
        if isinstance(part, bool) or not isinstance(part, int):
            raise InvalidInput(
                f"{field}.{key}={part!r} must be a whole number",
                code="throttle.not_integer",
                fields=[f"{field}.{key}"],
            )
    return ScaledLimit(**parts)  # type: ignore[arg-type]


def vm_group_spec(name: str | None, limits: Mapping[str, object]) -> GroupSpec:
    """The VM aggregate group of a request; ``blockplane-vm`` when it names none."""
    return GroupSpec(name or VM_AGGREGATE_GROUP, ThrottleLimits.from_mapping(limits))


def spec_to_json(spec: TierSpec) -> dict[str, Any]:
    scaled = {
        name: {"per_gb": value.per_gb, "floor": value.floor, "cap": value.cap}
        for name, value in (
            ("total_iops_sec_per_gb", spec.scaled.total_iops_sec_per_gb),
            ("total_bytes_sec_per_gb", spec.scaled.total_bytes_sec_per_gb),
        )
        if value is not None
    }
    vm_group = (
        {"name": spec.vm_group.name, "limits": spec.vm_group.limits.to_dict(nonzero_only=True)}
        if spec.vm_group
        else None
    )
    return {
        "vm": spec.vm,
        "target": spec.target,
        "per_disk": spec.per_disk.to_dict(nonzero_only=True),
        "scaled": scaled,
        "groups": list(spec.groups),
        "vm_group": vm_group,
    }


def spec_from_json(data: Mapping[str, Any]) -> TierSpec:
    scaled = data.get("scaled") or {}
    vm_group = data.get("vm_group")
    return TierSpec(
        vm=str(data["vm"]),
        target=str(data["target"]),
        per_disk=ThrottleLimits.from_mapping(data.get("per_disk") or {}),
        scaled=CapacityScaling(
            **{name: ScaledLimit(**scaled[name]) for name in SCALED_FIELDS if name in scaled}
        ),
        groups=tuple(data.get("groups") or ()),
        vm_group=(
            GroupSpec(str(vm_group["name"]), ThrottleLimits.from_mapping(vm_group["limits"]))
            if vm_group
            else None
        ),
    )


def is_scaled(spec: TierSpec) -> bool:
    return bool(spec.scaled.targets())
