"""Throttle group routes: /v1/vms/{vm}/throttle-groups[/{group}]."""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_list, response_model
from blockplane.api.schemas import ThrottleSet
from blockplane.throttle.service import ThrottleService
from blockplane.throttle.views import (
    ThrottleGroupDeleteResult,
    ThrottleGroupSetResult,
    ThrottleGroupView,
)


def throttle_router(throttle: ThrottleService) -> APIRouter:
    router = APIRouter()

    @router.get("/vms/{vm}/throttle-groups", response_model=response_list(ThrottleGroupView))
    def list_groups(vm: str) -> list[ThrottleGroupView]:
        return throttle.list_groups(vm)

    @router.get("/vms/{vm}/throttle-groups/{group}",
                response_model=response_model(ThrottleGroupView))
    def show_group(vm: str, group: str) -> ThrottleGroupView:
        return throttle.info(vm, group)

    @router.put("/vms/{vm}/throttle-groups/{group}",
                response_model=response_model(ThrottleGroupSetResult))
    def set_group(vm: str, group: str, body: ThrottleSet) -> ThrottleGroupSetResult:
        return throttle.set_group(vm, group, body.limits, body.live, body.config)

    @router.delete("/vms/{vm}/throttle-groups/{group}",
                   response_model=response_model(ThrottleGroupDeleteResult))
    def delete_group(vm: str, group: str) -> ThrottleGroupDeleteResult:
        return throttle.delete(vm, group)

    return router
