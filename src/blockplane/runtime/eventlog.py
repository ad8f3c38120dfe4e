"""The agent's event log: every user-visible event is stored, then fanned out to listeners.

Listeners are asyncio queues (the ``/v1/events`` stream). ``publish`` may be called from any
thread; fan-out always happens on the agent's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from blockplane.errors import StateUnavailable
from blockplane.store.records import EventRecord, Records

log = logging.getLogger(__name__)

LISTENER_QUEUE_SIZE = 1000


class EventLog:
    def __init__(self, records: Records) -> None:
        self._records = records
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: set[asyncio.Queue[EventRecord]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, type_: str, vm: str | None = None, **data: Any) -> EventRecord:
        """Store and fan out one event.

        Events tell of what already happened, so a store that cannot take one (its disk is
        full) must not turn a done action into a reported failure, nor stop the agent: the
        event is logged instead, and neither kept nor fanned out (its id is 0).
        """
        try:
            record = self._records.add_event(type_, vm, data)
        except StateUnavailable as error:
            log.warning("event %s of %s not stored (%s): %s", type_, vm, error.code, data)
            return EventRecord(0, time.time(), type_, vm, data)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, record)
        return record

    def history(
        self, *, after: int = 0, vm: str | None = None, type_: str | None = None, limit: int = 1000
    ) -> list[EventRecord]:
        return self._records.events(after=after, vm=vm, type_=type_, limit=limit)

    def _fan_out(self, record: EventRecord) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(record)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[EventRecord]]:
        queue: asyncio.Queue[EventRecord] = asyncio.Queue(LISTENER_QUEUE_SIZE)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)
