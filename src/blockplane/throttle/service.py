"""Throttle groups of a VM: set (create or update in place), info, list and delete.

Owns the group lifecycle on running and stopped VMs and its all-or-nothing rule: every request
is parsed and validated (``current.updated(request)``, per definition) before libvirt is called,
and a change that fails half-way is undone. It does not decide tiers (``throttle.tiers``) and does
not touch disks (``throttle.disk_limits``); it never imports libvirt.

A change that touches two definitions (live, then config) writes an intent first
(``store/pending.py``, kind ``throttle.set`` or ``throttle.delete``). If the agent dies between the
two, ``recover_intent`` (run at start, before the API serves) finishes the change in every
definition that still exists: the request was validated in full before its intent was written, so
finishing it is always allowed, and live and config agree again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from blockplane.deadlines import BoundedLock
from blockplane.errors import (
    BlockplaneError,
    CapabilityMissing,
    Conflict,
    InvalidInput,
    NotFound,
    outcome_unknown,
)
from blockplane.facts.capabilities import Capability
from blockplane.failpoints import failpoint
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.model.view import view_fields
from blockplane.store.events import EventPublisher
from blockplane.store.intents import IntentOutcome
from blockplane.store.pending import PendingOperation, PendingOperations
from blockplane.throttle.domain_view import (
    DefinitionKind,
    ThrottleDomain,
    ThrottleView,
    affected,
    read_view,
)
from blockplane.throttle.tiers import VM_AGGREGATE_GROUP
from blockplane.throttle.validation import validate_group_name, validate_limits
from blockplane.throttle.views import (
    ThrottleGroupDeleteResult,
    ThrottleGroupSetResult,
    ThrottleGroupView,
)

log = logging.getLogger(__name__)

DomainLookup = Callable[[str], ThrottleDomain]
LockFor = Callable[[str], BoundedLock]

SET_INTENT = "throttle.set"
DELETE_INTENT = "throttle.delete"


class ThrottleService:
    def __init__(
        self,
        domain: DomainLookup,
        lock_for: LockFor,
        events: EventPublisher,
        capability: Capability,
        pending: PendingOperations | None = None,
    ) -> None:
        self._domain = domain
        self._lock_for = lock_for
        self._events = events
        self._capability = capability
        self._pending = pending

    def set_group(
        self,
        vm: str,
        group: str,
        limits: Mapping[str, object],
        live: bool | None = None,
        config: bool | None = None,
    ) -> ThrottleGroupSetResult:
        """Create ``group`` or change the fields in ``limits``; other fields are kept."""
        validate_group_name(group, generated=group == VM_AGGREGATE_GROUP)
        if not limits:
            raise InvalidInput(
                "give at least one limit, e.g. --total-iops-sec 500", code="throttle.no_limits"
            )
        ThrottleLimits.from_mapping(limits)
        self._require_groups(vm)
        with self._lock_for(vm):
            domain = self._domain(vm)
            view = read_view(domain)
            kinds = affected(view, vm, live, config)
            changes = [
                (kind, view.get(kind).groups.get(group), _checked(view, kind, group, limits))
                for kind in kinds
            ]
            intent = self._begin(
                SET_INTENT,
                vm,
                group,
                {"changes": [{"kind": k, "limits": after.to_dict()} for k, _, after in changes]},
            )
            done: list[tuple[DefinitionKind, ThrottleLimits | None]] = []
            try:
                for kind, before, after in changes:
                    _set(domain, group, after, kind)
                    done.append((kind, before))
                    failpoint(f"throttle.set.after_{kind}")
            except BlockplaneError as error:
                if outcome_unknown(error):
                    raise  # the call may still land: the intent finishes it once it returns
                if _restore(domain, group, done):
                    self._finish(intent)
                raise  # not undone (the hypervisor went away): the intent finishes it later
            self._finish(intent)
            created = all(before is None for _, before, _ in changes)
            result = self._info(vm, group, read_view(domain))
        self._events.publish(
            "throttle.group_set",
            vm,
            group=group,
            created=created,
            definitions=list(kinds),
            limits=result.limits,
        )
        return ThrottleGroupSetResult(**view_fields(result), created=created,
                                      changed=tuple(kinds))

    def info(self, vm: str, group: str) -> ThrottleGroupView:
        domain = self._domain(vm)
        return self._info(vm, group, read_view(domain))

    def list_groups(self, vm: str) -> list[ThrottleGroupView]:
        view = read_view(self._domain(vm))
        return [self._info(vm, name, view) for name in view.group_names()]

    def delete(self, vm: str, group: str) -> ThrottleGroupDeleteResult:
        """Delete ``group`` from every definition that has it; refused while a disk uses it."""
        validate_group_name(group, generated=True)
        with self._lock_for(vm):
            domain = self._domain(vm)
            view = read_view(domain)
            kinds = [d.kind for d in view.definitions() if group in d.groups]
            if not kinds:
                raise _not_found(vm, group)
            users = view.users(group)
            if users:
                names = ", ".join(use.target for use in users)
                raise Conflict(
                    f"throttle group {group!r} of VM {vm} is used by disk(s) {names}; "
                    "detach them (or attach them without it) before deleting the group",
                    code="group.in_use",
                    disks=[use.target for use in users],
                )
            intent = self._begin(DELETE_INTENT, vm, group, {"kinds": list(kinds)})
            done: list[tuple[DefinitionKind, ThrottleLimits | None]] = []
            try:
                for kind in kinds:
                    domain.del_throttle_group(
                        group, live=kind == "live", config=kind == "config"
                    )
                    done.append((kind, view.get(kind).groups[group]))
                    failpoint(f"throttle.delete.after_{kind}")
            except BlockplaneError as error:
                if outcome_unknown(error):
                    raise
                if _restore(domain, group, done):
                    self._finish(intent)
                raise  # not undone (the hypervisor went away): the intent finishes it later
            self._finish(intent)
        self._events.publish("throttle.group_deleted", vm, group=group, definitions=kinds)
        return ThrottleGroupDeleteResult(vm, group, deleted=True, definitions=tuple(kinds))

    def recover_intent(self, operation: PendingOperation) -> IntentOutcome:
        """Finish a ``throttle.set`` or ``throttle.delete`` the agent died in the middle of (the
        intent registry calls it under the VM's lock, and then finishes the intent).

        The outcome is published as ``throttle.recovered``: ``completed`` when every definition
        that still exists now holds the change, or why it could not be finished.
        """
        try:
            outcome, kinds = self._recover(operation)
        except BlockplaneError as error:
            log.error("recovering %s failed: %s", operation, error)
            outcome, kinds = f"failed: {error}", []
        self._events.publish("throttle.recovered", operation.vm, operation=operation.kind,
                             group=operation.target, outcome=outcome, definitions=kinds)
        return IntentOutcome(operation.vm, operation.kind, operation.target, outcome,
                             tuple(kinds))
    def _recover(self, operation: PendingOperation) -> tuple[str, list[DefinitionKind]]:
        try:
            domain = self._domain(operation.vm)
        except NotFound:
            return "dropped: the VM no longer exists", []
        view = read_view(domain)
        present = [d.kind for d in view.definitions()]
        group = operation.target
        kinds: list[DefinitionKind] = []
        if operation.kind == SET_INTENT:
            for change in operation.data["changes"]:
                kind: DefinitionKind = "live" if change["kind"] == "live" else "config"
                if kind in present:
                    _set(domain, group, ThrottleLimits.from_mapping(change["limits"]), kind)
                    kinds.append(kind)
        else:
            if view.users(group):
                return "not deleted: a disk uses the group again; retry the delete", []
            for name in operation.data["kinds"]:
                kind = "live" if name == "live" else "config"
                if kind in present and group in view.get(kind).groups:
                    domain.del_throttle_group(
                        group, live=kind == "live", config=kind == "config"
                    )
                    kinds.append(kind)
        return "completed", kinds

    def _begin(self, kind: str, vm: str, group: str, data: dict[str, Any]) -> int | None:
        if self._pending is None:
            return None
        return self._pending.begin(kind, vm, group, data)

    def _finish(self, intent: int | None) -> None:
        if self._pending is not None and intent is not None:
            self._pending.finish(intent)

    def _info(self, vm: str, group: str, view: ThrottleView) -> ThrottleGroupView:
        present = [d for d in view.definitions() if group in d.groups]
        if not present:
            raise _not_found(vm, group)
        shown = view.current if group in view.current.groups else present[0]
        limits = shown.groups[group]
        others = {d.kind: d.groups[group] for d in present if d.groups[group] != limits}
        return ThrottleGroupView(
            vm=vm,
            group=group,
            limits=limits.to_dict(nonzero_only=True),
            definition=shown.kind,
            live=view.live is not None and group in view.live.groups,
            config=view.config is not None and group in view.config.groups,
            disks=tuple(view.users(group)),
            differs={kind: other.to_dict(nonzero_only=True) for kind, other in others.items()}
            if others else None,
        )

    def _require_groups(self, vm: str) -> None:
        if not self._capability.supported:
            raise CapabilityMissing(
                f"throttle groups are not available on this host ({self._capability.reason}; "
                f"needs {self._capability.needs}); VM {vm} can only have per-disk limits",
                code="capability.missing",
                reason=self._capability.reason,
            )


def _checked(
    view: ThrottleView, kind: DefinitionKind, group: str, request: Mapping[str, object]
) -> ThrottleLimits:
    """The group's limits after the request, validated; nothing has changed yet."""
    current = view.get(kind).groups.get(group, ThrottleLimits())
    after = current.updated(request)
    validate_limits(after)
    return after


def _set(domain: ThrottleDomain, group: str, limits: ThrottleLimits, kind: DefinitionKind) -> None:
    # Every field, not only the changed ones: libvirt keeps fields a call leaves out.
    domain.set_throttle_group(
        group, limits.to_dict(), live=kind == "live", config=kind == "config"
    )


def _restore(
    domain: ThrottleDomain,
    group: str,
    done: list[tuple[DefinitionKind, ThrottleLimits | None]],
) -> bool:
    """Put back what each definition had before (``None``: the group did not exist).

    True if everything was put back.
    """
    restored = True
    for kind, before in reversed(done):
        try:
            if before is None:
                domain.del_throttle_group(group, live=kind == "live", config=kind == "config")
            else:
                _set(domain, group, before, kind)
        except BlockplaneError:
            log.exception("undoing the change of group %s (%s) failed", group, kind)
            restored = False
    return restored


def _not_found(vm: str, group: str) -> NotFound:
    return NotFound(
        f"VM {vm} has no throttle group {group!r}; `blockplane throttle list {vm}` shows them",
        code="group.not_found",
        group=group,
    )
