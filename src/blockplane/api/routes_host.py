"""Host-level routes: health, facts and metrics."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from blockplane import __version__
from blockplane.api.models import response_model
from blockplane.facts.host import HostFacts
from blockplane.facts.views import AgentAbout, CephFacts, FactsView
from blockplane.metrics import AgentMetrics
from blockplane.model.ceph import CephHealth


@dataclass(frozen=True)
class Health:
    """The one answer without a token: the agent answers, its version and process."""

    status: str
    version: str
    pid: int


def host_router(host_facts: HostFacts, agent_metrics: AgentMetrics,
                ceph_health: Callable[[], list[CephHealth]] = list) -> APIRouter:
    """``ceph_health``: the last probe of each rbd pool's cluster, for ``facts``."""
    router = APIRouter()
    pid = os.getpid()

    @router.get("/health", response_model=response_model(Health))
    async def health() -> Health:  # on the event loop: answers even if threads are busy
        return Health("ok", __version__, pid)

    @router.get("/facts", response_model=response_model(FactsView))
    def facts() -> FactsView:
        about = AgentAbout(__version__, socket.gethostname())
        return dataclasses.replace(host_facts.view(), agent=about,
                                   ceph=CephFacts(tuple(ceph_health())))

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        body, content_type = agent_metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    return router
