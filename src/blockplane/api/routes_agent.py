"""``GET /v1/agent``: the agent itself, with every request in flight and what it waits on.

It answers on the event loop (no worker thread), so it answers even while every request
thread waits on a hung VM.
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter
from pydantic import BaseModel

from blockplane import __version__, deadlines
from blockplane.hypervisor.calls import CallGate


class RequestInFlight(BaseModel):
    id: int
    label: str
    age_s: float
    deadline_in_s: float
    waiting_on: str | None
    waiting_for_s: float | None


class AbandonedCallView(BaseModel):
    vm: str
    what: str
    waits_on: str
    age_s: float


class AgentStatus(BaseModel):
    pid: int
    version: str
    uptime_s: float
    requests: list[RequestInFlight]
    abandoned_calls: list[AbandonedCallView]


def agent_router(gate: CallGate) -> APIRouter:
    router = APIRouter()
    started = time.monotonic()

    @router.get("/agent", response_model=AgentStatus)
    async def agent_status() -> AgentStatus:
        me = deadlines.current()
        now = time.monotonic()
        return AgentStatus(
            pid=os.getpid(),
            version=__version__,
            uptime_s=round(now - started, 3),
            requests=[
                RequestInFlight(**vars(view)) for view in deadlines.in_flight()
                if me is None or view.id != me.id
            ],
            abandoned_calls=[
                AbandonedCallView(vm=call.domain, what=call.what, waits_on=call.kind.value,
                                  age_s=round(call.age(now), 3))
                for call in gate.abandoned()
            ],
        )

    return router
