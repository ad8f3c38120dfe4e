"""Tier policy: which throttle groups a disk sits under, with what limits, and how to fall back.

Owns the decision, as pure functions of a request and the host's capability: the ordered chain of
throttle groups for one disk (``compute_tiers``), its per-disk limits after capacity scaling
(``recompute_for_size`` when the disk grows), and whether it becomes throttle filters or plain
``<iotune>`` (``plan_limits``). It never applies anything and never imports libvirt.

The chain runs from the narrowest scope to the widest:

1. the generated per-disk group ``blockplane-disk-<target>``, when the disk has per-disk or
   capacity-scaled limits. libvirt refuses ``<iotune>`` together with ``<throttlefilters>``, so
   per-disk limits become a group of their own. Groups belong to one domain, so the target alone
   makes the name unique, and it stays a valid QEMU id whatever the VM is called;
2. the user's named groups, in the order given;
3. the VM-level aggregate group shared by all of the VM's disks.

Capacity scaling follows Cinder's ``*_per_gb`` QoS specs (cinder/volume/manager.py,
``_parse_connection_options``): value = max(per_gb x size in GiB, floor), then capped. Sizes are
whole GiB in Cinder; here a started GiB counts, and a disk counts as at least 1 GiB. Cinder uses
``*_sec_max`` as the cap and does not pass it on; here the cap is its own field and the matching
``*_max`` stays a burst rate, which also caps the scaled average so that growing a disk never
pushes the average above its max (``throttle.max_below_avg``).

Without throttle groups (libvirt < 11.2) a single tier falls back to ``<iotune>``: a per-disk tier
as the disk's own limits, a VM aggregate as ``<iotune>`` with ``<group_name>`` (QEMU's older
throttling groups, shared by every disk that names the group with the same limits). More than one
tier, or a named group whose limits live in the domain, is refused with ``capability.missing``
and the reason; nothing asked for is dropped.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from blockplane.errors import CapabilityMissing, InvalidInput, NotFound
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.throttle.validation import (
    GENERATED_GROUP_PREFIX,
    validate_group_name,
    validate_limits,
    validate_values,
)
from blockplane.throttle.views import TiersView, TierView

GIB: Final = 1024**3
PER_DISK_GROUP_PREFIX: Final = f"{GENERATED_GROUP_PREFIX}disk-"
#: The name blockplane gives a VM's aggregate group when the request names none.
VM_AGGREGATE_GROUP: Final = f"{GENERATED_GROUP_PREFIX}vm"

TierOrigin = Literal["per_disk", "named", "vm_aggregate"]
PlanMode = Literal["filters", "iotune", "none"]


@dataclass(frozen=True)
class ScaledLimit:
    """A limit that follows the disk's size: ``per_gb`` x GiB, at least ``floor``, at most ``cap``.

    ``floor`` and ``cap`` are absolute values, like Cinder's ``*_per_gb_min``; a ``cap`` of 0
    means no cap of its own.
    """

    per_gb: int
    floor: int = 0
    cap: int = 0


@dataclass(frozen=True)
class CapacityScaling:
    """The capacity-scaled limits of one disk; ``None`` means not scaled."""

    total_iops_sec_per_gb: ScaledLimit | None = None
    total_bytes_sec_per_gb: ScaledLimit | None = None

    def targets(self) -> tuple[tuple[str, ScaledLimit], ...]:
        """``(limit it sets, how)`` for each scaled limit that is present."""
        pairs = (
            ("total_iops_sec", self.total_iops_sec_per_gb),
            ("total_bytes_sec", self.total_bytes_sec_per_gb),
        )
        return tuple((name, scaled) for name, scaled in pairs if scaled is not None)


@dataclass(frozen=True)
class GroupSpec:
    """A throttle group with the limits blockplane will give it."""

    name: str
    limits: ThrottleLimits


@dataclass(frozen=True)
class TierSpec:
    """What a volume descriptor asks for one disk."""

    vm: str
    target: str
    per_disk: ThrottleLimits = field(default_factory=ThrottleLimits)
    scaled: CapacityScaling = field(default_factory=CapacityScaling)
    groups: tuple[str, ...] = ()
    vm_group: GroupSpec | None = None


@dataclass(frozen=True)
class Tier:
    """One filter in a disk's chain. ``limits`` is ``None`` for a named group defined elsewhere."""

    group: str
    origin: TierOrigin
    limits: ThrottleLimits | None


@dataclass(frozen=True)
class EffectiveTiers:
    """The chain for one disk at one size, narrowest scope first."""

    vm: str
    target: str
    size_bytes: int
    chain: tuple[Tier, ...]
    #: The disk's own limits after scaling; all zero when it has none.
    per_disk_limits: ThrottleLimits

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(tier.group for tier in self.chain)

    @property
    def per_disk_group(self) -> Tier | None:
        return next((tier for tier in self.chain if tier.origin == "per_disk"), None)

    def view(self) -> TiersView:
        """What the API answers as the effective limits."""
        return TiersView(
            vm=self.vm,
            target=self.target,
            size_bytes=self.size_bytes,
            per_disk_limits=self.per_disk_limits.to_dict(nonzero_only=True),
            chain=tuple(
                TierView(tier.group, tier.origin,
                         tier.limits.to_dict(nonzero_only=True) if tier.limits else None)
                for tier in self.chain
            ),
        )


@dataclass(frozen=True)
class LimitsPlan:
    """How a disk's tiers reach libvirt.

    ``filters``: ``chain`` becomes ``<throttlefilters>``. ``iotune``: the single tier becomes
    ``<iotune>`` holding ``per_disk_limits``, with ``<group_name>`` set to ``iotune_group_name``
    when that tier is shared by several disks (QEMU's older throttling groups). ``none``: no limits.
    """

    mode: PlanMode
    chain: tuple[Tier, ...]
    per_disk_limits: ThrottleLimits
    iotune_group_name: str | None
    reason: str


def per_disk_group_name(target: str) -> str:
    """The generated group for disk ``target``; ``throttle.name_invalid`` if it cannot be one."""
    name = f"{PER_DISK_GROUP_PREFIX}{target}"
    validate_group_name(name, generated=True)
    return name


def scaled_value(scaled: ScaledLimit, size_bytes: int, *, max_value: int = 0) -> int:
    """Cinder's rule: max(per_gb x GiB, floor), capped by ``cap`` and by ``max_value`` if set."""
    gib = max(1, -(-size_bytes // GIB))
    value = max(scaled.per_gb * gib, scaled.floor)
    caps = [cap for cap in (scaled.cap, max_value) if cap]
    return min([value, *caps])


def compute_tiers(
    spec: TierSpec, size_bytes: int, *, existing_groups: Collection[str] | None = None
) -> EffectiveTiers:
    """Validate ``spec`` and return the disk's chain at ``size_bytes``.

    ``existing_groups``, when given, are the domain's throttle groups: a named group not among
    them is refused with ``group.not_found`` (the VM aggregate group may be new).
    """
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
        raise InvalidInput(
            f"disk size {size_bytes!r} must be a whole number of bytes, 0 or more",
            code="tier.size_invalid",
        )
    per_disk = _per_disk_limits(spec, size_bytes)
    chain: list[Tier] = []
    if not per_disk.is_zero():
        chain.append(Tier(per_disk_group_name(spec.target), "per_disk", per_disk))
    for name in spec.groups:
        validate_group_name(name)
        chain.append(Tier(name, "named", None))
    if spec.vm_group is not None:
        validate_group_name(spec.vm_group.name, generated=spec.vm_group.name == VM_AGGREGATE_GROUP)
        validate_limits(spec.vm_group.limits)
        chain.append(Tier(spec.vm_group.name, "vm_aggregate", spec.vm_group.limits))
    _refuse_duplicates(spec, chain)
    if existing_groups is not None:
        missing = [name for name in spec.groups if name not in existing_groups]
        if missing:
            raise NotFound(
                f"throttle group(s) {', '.join(missing)} do not exist on VM {spec.vm!r}; "
                "create them with `blockplane throttle set` first",
                code="group.not_found",
                groups=missing,
            )
    return EffectiveTiers(spec.vm, spec.target, size_bytes, tuple(chain), per_disk)


def recompute_for_size(spec: TierSpec, size_bytes: int) -> EffectiveTiers:
    """The tiers after the disk grows to ``size_bytes``.

    Only the per-disk group's limits change with size; the chain's groups and their order do not,
    so the caller updates that one group live and detaches nothing.
    """
    return compute_tiers(spec, size_bytes)


def plan_limits(
    request: EffectiveTiers, throttle_groups_supported: bool, reason: str
) -> LimitsPlan:
    """Filters where throttle groups work; else ``<iotune>`` for one tier, else refuse.

    ``reason`` says why groups are or are not available (from the capability matrix); it is
    repeated in the plan and in a ``capability.missing`` refusal. Nothing asked for is dropped.
    """
    disk = f"disk {request.target} of VM {request.vm!r}"
    zero = ThrottleLimits()
    if not request.chain:
        return LimitsPlan("none", (), zero, None, f"{disk} asks for no I/O limits")
    if throttle_groups_supported:
        return LimitsPlan(
            "filters",
            request.chain,
            request.per_disk_limits,
            None,
            f"{disk}: throttle filter chain {' -> '.join(request.group_names)} ({reason})",
        )
    unavailable = f"throttle groups are not available: {reason}"
    if len(request.chain) > 1:
        raise CapabilityMissing(
            f"{disk} asks for {len(request.chain)} limit tiers "
            f"({', '.join(request.group_names)}), but {unavailable}; "
            "without them only a single tier can be applied, as <iotune>",
            code="capability.missing",
            tiers=list(request.group_names),
            reason=reason,
        )
    (tier,) = request.chain
    if tier.limits is None:
        raise CapabilityMissing(
            f"{disk} uses throttle group {tier.group!r}, but {unavailable}",
            code="capability.missing",
            tiers=[tier.group],
            reason=reason,
        )
    shared = None if tier.origin == "per_disk" else tier.group
    where = f"shared as iotune group {shared!r}" if shared else "as the disk's own limits"
    return LimitsPlan(
        "iotune",
        (),
        tier.limits,
        shared,
        f"{disk}: single tier {tier.group!r} applied as <iotune> {where}; {unavailable}",
    )


def _per_disk_limits(spec: TierSpec, size_bytes: int) -> ThrottleLimits:
    # The rules that relate limits wait for the merge: a *_max may belong to a scaled average.
    validate_values(spec.per_disk)
    scaled_values: dict[str, int] = {}
    for name, scaled in spec.scaled.targets():
        _validate_scaled(name, scaled, spec.per_disk)
        max_value = getattr(spec.per_disk, f"{name}_max")
        scaled_values[name] = scaled_value(scaled, size_bytes, max_value=max_value)
    limits = replace(spec.per_disk, **scaled_values)
    validate_limits(limits, allow_all_zero=True)
    return limits


def _validate_scaled(name: str, scaled: ScaledLimit, per_disk: ThrottleLimits) -> None:
    spec_name = f"{name}_per_gb"
    for part in ("per_gb", "floor", "cap"):
        value = getattr(scaled, part)
        label = f"{spec_name}.{part}={value!r}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{label} must be a whole number", code="throttle.not_integer")
        if value < 0:
            raise InvalidInput(f"{label} must not be negative", code="throttle.negative")
    if scaled.per_gb == 0:
        raise InvalidInput(
            f"{spec_name}.per_gb must be at least 1 (leave {spec_name} out to not scale)",
            code="tier.per_gb_zero",
        )
    if getattr(per_disk, name):
        raise InvalidInput(
            f"{name}={getattr(per_disk, name)} and {spec_name} both set {name}; give one of them",
            code="tier.scaled_conflict",
            fields=[name, spec_name],
        )
    max_name = f"{name}_max"
    caps = ((f"{spec_name}.cap", scaled.cap), (max_name, getattr(per_disk, max_name)))
    for cap_name, cap in caps:
        if cap and scaled.floor > cap:
            raise InvalidInput(
                f"{spec_name}.floor={scaled.floor} is above {cap_name}={cap}",
                code="tier.floor_above_cap",
                fields=[f"{spec_name}.floor", cap_name],
            )


def _refuse_duplicates(spec: TierSpec, chain: list[Tier]) -> None:
    seen: set[str] = set()
    for tier in chain:
        if tier.group in seen:
            raise InvalidInput(
                f"throttle group {tier.group!r} appears twice in the chain of disk "
                f"{spec.target} ({', '.join(t.group for t in chain)})",
                code="tier.duplicate_group",
                group=tier.group,
            )
        seen.add(tier.group)
