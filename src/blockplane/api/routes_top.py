"""``GET /v1/top``: one frame of per-disk rates, limits, thin fill, IOThreads and jobs."""

from __future__ import annotations

from fastapi import APIRouter, Query

from blockplane.api.models import response_model
from blockplane.observe.top import TopService
from blockplane.observe.views import TopFrame
from blockplane.vms.lifecycle import VMService


def top_router(vms: VMService, top_service: TopService) -> APIRouter:
    router = APIRouter()

    @router.get("/top", response_model=response_model(TopFrame))
    def top(
        vm: str | None = None,
        sort: str = Query(default="name", max_length=8),
        window: float = Query(default=1.0, gt=0, le=10),
    ) -> TopFrame:
        if vm is not None:
            vms.record(vm)
        return top_service.frame(vm=vm, sort=sort, window_s=window)

    return router
