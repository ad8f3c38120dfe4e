"""Host-level routes: health, facts and metrics."""

from __future__ import annotations

import os
import socket
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from blockplane import __version__
from blockplane.facts.host import HostFacts
from blockplane.metrics import AgentMetrics


def host_router(host_facts: HostFacts, agent_metrics: AgentMetrics) -> APIRouter:
    router = APIRouter()
    pid = os.getpid()

    @router.get("/health")
    async def health() -> dict[str, Any]:  # on the event loop: answers even if threads are busy
        return {"status": "ok", "version": __version__, "pid": pid}

    @router.get("/facts")
    def facts() -> dict[str, Any]:
        # Which agent answered: a peer's ``peer show`` prints it.
        about = {"version": __version__, "hostname": socket.gethostname()}
        return {**host_facts.to_json(), "agent": about}

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        body, content_type = agent_metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    return router
