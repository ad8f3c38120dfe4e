"""I/O limits of one disk on attach and detach: plan, apply, roll back, clean up.

Owns the disk side of issue 4. ``prepare_disk`` validates the whole request (limits, group
names, that named groups exist in every definition the attach touches, the VM aggregate group,
the fallback) before anything changes and returns a ``DiskLimitsPlan``; the disk service puts its
chain into the ``DiskDevice``, calls ``apply_disk_plan`` (store row, then the generated groups)
before plugging the disk and ``rollback_disk_plan`` if anything fails. On detach the generated
per-disk group goes too. Policy comes from ``throttle.tiers``; libvirt only through the
``ThrottleDomain`` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from blockplane.errors import BlockplaneError, Conflict, NotFound
from blockplane.facts.capabilities import Capability
from blockplane.model.throttle_limits import AVG_FIELDS, ThrottleLimits
from blockplane.store.events import EventPublisher
from blockplane.store.throttle_records import DiskThrottleRecord, ThrottleRecords
from blockplane.throttle.disk_spec import build_spec, spec_to_json
from blockplane.throttle.domain_view import DefinitionKind, ThrottleDomain, ThrottleView, read_view
from blockplane.throttle.service import DomainLookup
from blockplane.throttle.tiers import (
    PER_DISK_GROUP_PREFIX,
    VM_AGGREGATE_GROUP,
    CapacityScaling,
    EffectiveTiers,
    GroupSpec,
    LimitsPlan,
    TierSpec,
    compute_tiers,
    plan_limits,
)
from blockplane.throttle.views import DiskLimitsView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupToCreate:
    """A group the attach creates, in the definitions that lack it."""

    group: GroupSpec
    kinds: tuple[DefinitionKind, ...]


@dataclass(frozen=True)
class DiskLimitsPlan:
    spec: TierSpec
    tiers: EffectiveTiers
    plan: LimitsPlan
    creates: tuple[GroupToCreate, ...]
    #: The current limits of the named groups in the chain, for the answer.
    named_limits: dict[str, ThrottleLimits] = field(default_factory=dict, compare=False)
    #: Filled by ``apply_disk_plan``: what was created, so that a rollback undoes only that.
    created: list[tuple[str, DefinitionKind]] = field(default_factory=list, compare=False)

    @property
    def throttle_groups(self) -> tuple[str, ...]:
        """The disk's ``<throttlefilters>``, first filter first."""
        return tuple(tier.group for tier in self.plan.chain)

    @property
    def throttles(self) -> bool:
        """Whether QEMU will throttle this disk at all (a filter chain or ``<iotune>``)."""
        return bool(self.throttle_groups) or self.iotune is not None

    @property
    def iotune(self) -> ThrottleLimits | None:
        return self.plan.per_disk_limits if self.plan.mode == "iotune" else None

    @property
    def iotune_group(self) -> str | None:
        return self.plan.iotune_group_name

    @property
    def reason(self) -> str:
        return self.plan.reason

    def view(self) -> DiskLimitsView:
        """The effective limits, as the attach answer shows them (named groups with their
        current limits)."""
        tiers = self.tiers.view()
        chain = tuple(
            replace(tier, limits=self.named_limits[tier.group].to_dict(nonzero_only=True))
            if tier.limits is None and tier.group in self.named_limits else tier
            for tier in tiers.chain
        )
        tightest: dict[str, int] = {}
        for tier in chain:
            for name, value in (tier.limits or {}).items():
                if name in AVG_FIELDS:
                    tightest[name] = min(value, tightest.get(name, value))
        if self.plan.mode == "iotune":
            own = self.plan.per_disk_limits.to_dict(nonzero_only=True)
            tightest = {name: value for name, value in own.items() if name in AVG_FIELDS}
        return DiskLimitsView(
            vm=tiers.vm, target=tiers.target, size_bytes=tiers.size_bytes,
            per_disk_limits=tiers.per_disk_limits, chain=chain,
            mode=self.plan.mode, reason=self.plan.reason, tightest=tightest,
        )


class DiskThrottle:
    """The hook ``DiskService`` calls around plugging a disk (and a ``DiskObserver``)."""

    def __init__(
        self,
        domain: DomainLookup,
        records: ThrottleRecords,
        events: EventPublisher,
        capability: Capability,
    ) -> None:
        self._domain = domain
        self._records = records
        self._events = events
        self._capability = capability

    def prepare_disk(
        self,
        domain: ThrottleDomain,
        target: str,
        size_bytes: int,
        throttle_groups: Sequence[str],
        limits: Mapping[str, object],
        scaling: CapacityScaling | None = None,
        vm_group: GroupSpec | None = None,
    ) -> DiskLimitsPlan:
        """Validate everything about the disk's limits; change nothing."""
        return prepare_disk_limits(
            read_view(domain), domain.name, target, size_bytes, throttle_groups, limits,
            self._capability, scaling, vm_group,
        )

    @property
    def capability(self) -> Capability:
        """Whether this host has throttle groups (else limits fall back to ``<iotune>``)."""
        return self._capability

    def apply_disk_plan(self, domain: ThrottleDomain, plan: DiskLimitsPlan, live: bool) -> None:
        """Record the disk's spec, then create its generated groups; before the disk is plugged."""
        if plan.plan.mode == "none":
            return
        self._records.put_disk(
            DiskThrottleRecord(
                vm=plan.spec.vm,
                target=plan.spec.target,
                mode=plan.plan.mode,
                spec=spec_to_json(plan.spec),
                chain=list(plan.throttle_groups),
                size_bytes=plan.tiers.size_bytes,
                per_disk=plan.tiers.per_disk_limits.to_dict(nonzero_only=True),
            )
        )
        for create in plan.creates:
            for kind in create.kinds:
                if kind == "live" and not live:
                    continue
                domain.set_throttle_group(
                    create.group.name,
                    create.group.limits.to_dict(),
                    live=kind == "live",
                    config=kind == "config",
                )
                plan.created.append((create.group.name, kind))

    def rollback_disk_plan(self, domain: ThrottleDomain, plan: DiskLimitsPlan) -> None:
        """Undo ``apply_disk_plan`` after the disk was unplugged again; never raises."""
        for group, kind in reversed(plan.created):
            try:
                domain.del_throttle_group(group, live=kind == "live", config=kind == "config")
            except BlockplaneError:
                log.exception("rolling back throttle group %s (%s) failed", group, kind)
        plan.created.clear()
        try:
            self._records.delete_disk(plan.spec.vm, plan.spec.target)
        except BlockplaneError:
            log.exception("forgetting the QoS of %s/%s failed", plan.spec.vm, plan.spec.target)

    # DiskObserver
    def disk_attached(self, vm: str, target: str, volume: object) -> None:
        """Nothing to do: ``apply_disk_plan`` ran before the disk was plugged."""

    def disk_detached(self, vm: str, target: str) -> None:
        """Delete the disk's generated group, and the generated VM group once unused."""
        self._records.delete_disk(vm, target)
        try:
            domain = self._domain(vm)
            view = read_view(domain)
        except NotFound:
            return
        for group in (f"{PER_DISK_GROUP_PREFIX}{target}", VM_AGGREGATE_GROUP):
            _delete_if_unused(domain, view, group)


def prepare_disk_limits(
    view: ThrottleView,
    vm: str,
    target: str,
    size_bytes: int,
    throttle_groups: Sequence[str],
    limits: Mapping[str, object],
    capability: Capability,
    scaling: CapacityScaling | None = None,
    vm_group: GroupSpec | None = None,
) -> DiskLimitsPlan:
    """The disk's limits planned against the domain's definitions in ``view``; pure."""
    spec = build_spec(vm, target, limits, throttle_groups, scaling, vm_group)
    # The attach changes the live definition when the VM runs, and always the persistent one.
    kinds = _attach_kinds(view)
    groups_everywhere = {
        name for name in view.group_names() if all(name in view.get(k).groups for k in kinds)
    }
    _refuse_half_defined(vm, spec.groups, view, kinds)
    tiers = compute_tiers(spec, size_bytes, existing_groups=groups_everywhere)
    plan = plan_limits(tiers, capability.supported, capability.reason)
    creates: list[GroupToCreate] = []
    if plan.mode == "filters":
        for tier in plan.chain:
            if tier.limits is None:
                continue
            missing = _missing_kinds(view, kinds, tier.group, tier.limits, tier.origin)
            if missing:
                creates.append(GroupToCreate(GroupSpec(tier.group, tier.limits), missing))
    named = {
        name: view.current.groups[name] for name in spec.groups if name in view.current.groups
    }
    return DiskLimitsPlan(spec, tiers, plan, tuple(creates), named)


def _attach_kinds(view: ThrottleView) -> tuple[DefinitionKind, ...]:
    kinds: list[DefinitionKind] = []
    if view.running:
        kinds.append("live")
    if view.persistent:
        kinds.append("config")
    return tuple(kinds)


def _refuse_half_defined(
    vm: str, groups: Sequence[str], view: ThrottleView, kinds: Sequence[DefinitionKind]
) -> None:
    for group in groups:
        has = [kind for kind in kinds if group in view.get(kind).groups]
        if has and len(has) < len(kinds):
            lacking = next(kind for kind in kinds if kind not in has)
            raise NotFound(
                f"throttle group {group!r} exists only in the {has[0]} definition of VM {vm}, "
                f"but the disk is also attached to the {lacking} one; set the group there too "
                f"(`blockplane throttle set {vm} {group} --{lacking} ...`)",
                code="group.not_found",
                groups=[group],
            )


def _missing_kinds(
    view: ThrottleView,
    kinds: Sequence[DefinitionKind],
    group: str,
    limits: ThrottleLimits,
    origin: str,
) -> tuple[DefinitionKind, ...]:
    missing: list[DefinitionKind] = []
    for kind in kinds:
        existing = view.get(kind).groups.get(group)
        if existing is None or origin == "per_disk":
            # A per-disk group of this target can only be a leftover; it is overwritten.
            missing.append(kind)
        elif existing != limits:
            raise Conflict(
                f"VM aggregate group {group!r} already exists in the {kind} definition with "
                f"other limits ({existing.to_dict(nonzero_only=True)}); change it with "
                f"`blockplane throttle set`, or leave its limits out to join it",
                code="group.limits_differ",
                group=group,
            )
    return tuple(missing)


def _delete_if_unused(domain: ThrottleDomain, view: ThrottleView, group: str) -> None:
    if view.users(group):
        return
    for definition in view.definitions():
        if group not in definition.groups:
            continue
        try:
            domain.del_throttle_group(
                group, live=definition.kind == "live", config=definition.kind == "config"
            )
        except BlockplaneError:
            log.exception("deleting throttle group %s (%s) failed", group, definition.kind)
