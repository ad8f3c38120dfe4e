"""Throttle group routes: /v1/vms/{vm}/throttle-groups[/{group}]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from blockplane.api.schemas import ThrottleSet

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def throttle_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/vms/{vm}/throttle-groups")
    def list_groups(vm: str) -> list[dict[str, Any]]:
        return agent.throttle.groups.list_groups(vm)

    @router.get("/vms/{vm}/throttle-groups/{group}")
    def show_group(vm: str, group: str) -> dict[str, Any]:
        return agent.throttle.groups.info(vm, group)

    @router.put("/vms/{vm}/throttle-groups/{group}")
    def set_group(vm: str, group: str, body: ThrottleSet) -> dict[str, Any]:
        return agent.throttle.groups.set_group(vm, group, body.limits, body.live, body.config)

    @router.delete("/vms/{vm}/throttle-groups/{group}")
    def delete_group(vm: str, group: str) -> dict[str, Any]:
        return agent.throttle.groups.delete(vm, group)

    return router
