"""``GET /v1/top``: one frame of per-disk rates, limits, thin fill, IOThreads and jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def top_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/top")
    def top(
        vm: str | None = None,
        sort: str = Query(default="name", max_length=8),
        window: float = Query(default=1.0, gt=0, le=10),
    ) -> dict[str, Any]:
        if vm is not None:
            agent.vms.record(vm)
        return agent.observe.top.frame(vm=vm, sort=sort, window_s=window)

    return router
