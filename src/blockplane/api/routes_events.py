"""The event log: /v1/events, as JSON or as a Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from blockplane.store.events import EventPublisher
from blockplane.store.records import EventRecord

KEEPALIVE_S = 15.0
#: One event (``EventRecord.to_json``): its id, time, type and VM, and its data beside them.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Event",
    "required": ["id", "at", "type", "vm"],
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "number"},
        "type": {"type": "string"},
        "vm": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "additionalProperties": True,
}
MAX_EVENT_ID = (1 << 63) - 1


def _matches(record: EventRecord, vm: str | None, type_: str | None) -> bool:
    if vm is not None and record.vm != vm:
        return False
    return type_ is None or record.type == type_ or record.type.startswith(type_ + ".")


def _sse(record: EventRecord) -> str:
    return f"id: {record.id}\nevent: {record.type}\ndata: {json.dumps(record.to_json())}\n\n"


class EventStream(EventPublisher, Protocol):
    """The event log as the stream reads it (``runtime.eventlog.EventLog``)."""

    def listen(self) -> AbstractAsyncContextManager[asyncio.Queue[EventRecord]]: ...


def events_router(event_log: EventStream) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/events",
        # The body is either a JSON list or an endless stream: both are declared here.
        response_model=None,
        responses={200: {"content": {
            "application/json": {"schema": {"type": "array", "items": EVENT_SCHEMA}},
            "text/event-stream": {"schema": {"type": "string"}},
        }}},
    )
    async def events(
        request: Request,
        follow: bool = False,
        vm: str | None = None,
        type: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> StreamingResponse | list[dict[str, Any]]:
        limit = max(1, min(limit, 10000))
        after = max(0, min(after, MAX_EVENT_ID))  # SQLite integers are 64-bit

        def history() -> list[EventRecord]:
            return [
                record
                for record in event_log.history(after=after, vm=vm, limit=limit)
                if _matches(record, None, type)
            ]

        if not follow:
            return [record.to_json() for record in history()]

        async def stream() -> AsyncIterator[str]:
            # Listen before reading the history, so nothing published in between is lost;
            # an event in both is sent once.
            async with event_log.listen() as queue:
                last = 0
                for record in await asyncio.to_thread(history):
                    last = record.id
                    yield _sse(record)
                while not await request.is_disconnected():
                    try:
                        record = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if record.id > last and _matches(record, vm, type):
                        last = record.id
                        yield _sse(record)

        return StreamingResponse(stream(), media_type="text/event-stream")

    return router
