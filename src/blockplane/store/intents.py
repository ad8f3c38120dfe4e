"""Recovering the intents a dead agent left behind, through one registry keyed by kind.

Each multi-step change writes an intent (``pending``) before its first step. At start, and
after a lost hypervisor connection comes back, every intent still pending goes to the handler
registered for its kind (``disk.attach``, ``throttle.set`` ...), under its VM's lock: an
operation still in progress ends first, and finishes its own intent unless it failed half-way.
The handler completes or rolls back the change and says how it ended; the intent is then
finished. Kinds are handled in the order they were registered. An intent of a kind no handler
knows (written by a newer agent, or by a feature this agent was built without) is kept and
reported (``unknown``), never deleted. An intent of a VM that ``wait_for`` names (a libvirt call
to it was abandoned past its deadline and has not returned) waits: that call may still change
what the intent describes. Must not know any kind itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from blockplane.store.pending import PendingOperation, PendingOperations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntentOutcome:
    """How one recovered change ended: ``completed``, ``rolled back``, or why it could not be
    finished. ``definitions``: the domain definitions a throttle change touched."""

    vm: str
    operation: str
    target: str
    outcome: str
    definitions: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnknownIntent:
    """An intent no handler knows: kept for an agent that does, and reported meanwhile."""

    id: int
    kind: str
    vm: str
    target: str


RecoverIntent = Callable[[PendingOperation], IntentOutcome]
LockFor = Callable[[str], AbstractContextManager[object]]


class IntentRecovery:
    def __init__(
        self,
        pending: PendingOperations,
        handlers: Mapping[str, RecoverIntent],
        lock_for: LockFor,
        wait_for: Callable[[str], bool] = lambda _vm: False,
    ) -> None:
        self._pending = pending
        self._handlers = dict(handlers)
        self._lock_for = lock_for
        self._wait_for = wait_for
        self._reported: set[int] = set()

    def recover(self) -> list[IntentOutcome]:
        """Hand every pending intent of a known kind to its handler, and finish it."""
        outcomes = []
        for kind, handler in self._handlers.items():
            for operation in self._pending.all():
                if operation.kind != kind:
                    continue
                if self._wait_for(operation.vm):
                    continue  # a call to this VM left running may still land: after it returns
                with self._lock_for(operation.vm):
                    if operation.id not in {other.id for other in self._pending.all()}:
                        continue  # the operation itself finished it meanwhile
                    outcome = handler(operation)
                    self._pending.finish(operation.id)
                outcomes.append(outcome)
        for intent in self.unknown():
            if intent.id not in self._reported:
                self._reported.add(intent.id)
                log.warning("intent %d of unknown kind %s (VM %s, %s) is kept for an agent "
                            "that knows it", intent.id, intent.kind, intent.vm, intent.target)
        return outcomes

    def unknown(self) -> list[UnknownIntent]:
        """Pending intents of a kind no handler knows, oldest first."""
        return [
            UnknownIntent(operation.id, operation.kind, operation.vm, operation.target)
            for operation in self._pending.all()
            if operation.kind not in self._handlers
        ]
