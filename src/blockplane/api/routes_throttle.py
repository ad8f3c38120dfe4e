"""Throttle group routes: /v1/vms/{vm}/throttle-groups[/{group}]."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from blockplane.api.schemas import ThrottleSet
from blockplane.throttle.service import ThrottleService


def throttle_router(throttle: ThrottleService) -> APIRouter:
    router = APIRouter()

    @router.get("/vms/{vm}/throttle-groups")
    def list_groups(vm: str) -> list[dict[str, Any]]:
        return throttle.list_groups(vm)

    @router.get("/vms/{vm}/throttle-groups/{group}")
    def show_group(vm: str, group: str) -> dict[str, Any]:
        return throttle.info(vm, group)

    @router.put("/vms/{vm}/throttle-groups/{group}")
    def set_group(vm: str, group: str, body: ThrottleSet) -> dict[str, Any]:
        return throttle.set_group(vm, group, body.limits, body.live, body.config)

    @router.delete("/vms/{vm}/throttle-groups/{group}")
    def delete_group(vm: str, group: str) -> dict[str, Any]:
        return throttle.delete(vm, group)

    return router
