"""Host-level routes: health, facts and metrics."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from blockplane import __version__

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def host_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, Any]:  # on the event loop: answers even if threads are busy
        return {"status": "ok", "version": __version__, "pid": agent.pid}

    @router.get("/facts")
    def facts() -> dict[str, Any]:
        # Which agent answered: a peer's ``peer show`` prints it.
        about = {"version": __version__, "hostname": socket.gethostname()}
        return {**agent.facts_json(), "agent": about}

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        body, content_type = agent.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    return router
