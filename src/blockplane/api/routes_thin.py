"""Thin provisioning routes: ``GET /v1/thin`` (the monitor's view of each thin volume)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from blockplane.thin.rbd_rows import rbd_thin_rows

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def thin_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/thin")
    def thin_status(vm: str | None = None) -> list[dict[str, Any]]:
        if vm is not None:
            agent.vms.record(vm)
        return [*agent.thin.status(vm), *rbd_thin_rows(agent.records, vm)]

    return router
