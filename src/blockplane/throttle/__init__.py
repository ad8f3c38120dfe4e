"""blockplane.throttle: I/O limits for disks, as throttle groups and throttle-filter chains.

Pure (no libvirt, no XML, no I/O):

- ``ThrottleLimits`` itself, the value object and its parsing, is ``model.throttle_limits``;
- ``validation``: the rules libvirt and QEMU enforce, checked before any side effect;
- ``tiers``: the tier policy (per-disk, named and VM-level groups, capacity scaling) and the
  fallback to ``<iotune>`` where throttle groups are unavailable;
- ``disk_spec``: a disk's request as JSON, for the store.

Services (libvirt only through the ``domain_view.ThrottleDomain`` protocol):

- ``service``: group lifecycle (set, info, list, delete) on running and stopped VMs;
- ``disk_limits``: a disk's limits on attach (prepare, apply, roll back) and detach;
- ``rescale``: capacity-scaled limits recomputed when a disk's size changes.

The agent builds them (``runtime.services``).
"""

from blockplane.model.throttle_limits import FIELD_NAMES, ThrottleLimits
from blockplane.throttle.tiers import (
    CapacityScaling,
    EffectiveTiers,
    GroupSpec,
    LimitsPlan,
    ScaledLimit,
    Tier,
    TierSpec,
    compute_tiers,
    plan_limits,
    recompute_for_size,
)
from blockplane.throttle.validation import RULE_ORDER, validate_group_name, validate_limits

__all__ = [
    "FIELD_NAMES",
    "RULE_ORDER",
    "CapacityScaling",
    "EffectiveTiers",
    "GroupSpec",
    "LimitsPlan",
    "ScaledLimit",
    "ThrottleLimits",
    "Tier",
    "TierSpec",
    "compute_tiers",
    "plan_limits",
    "recompute_for_size",
    "validate_group_name",
    "validate_limits",
]
