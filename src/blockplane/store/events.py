"""What the services see of the agent's event log: publish an event, read what was published.

``runtime.eventlog.EventLog`` satisfies ``EventPublisher`` structurally (it also fans events out
to the ``/v1/events`` stream); unit tests may pass their own. Owns no behaviour.
"""

from __future__ import annotations

from typing import Any, Protocol

from blockplane.store.records import EventRecord


class EventPublisher(Protocol):
    def publish(self, type_: str, vm: str | None = None, **data: Any) -> EventRecord:
        """Store one event (written before it is fanned out) and return its record."""
        ...

    def history(
        self, *, after: int = 0, vm: str | None = None, type_: str | None = None, limit: int = 1000
    ) -> list[EventRecord]:
        """Events with an id above ``after``, oldest first."""
        ...
