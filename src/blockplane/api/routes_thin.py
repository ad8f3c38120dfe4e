"""Thin provisioning routes: ``GET /v1/thin`` (the monitor's view of each thin volume)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from blockplane.thin.monitor import ThinMonitor
from blockplane.vms.lifecycle import VMService


def thin_router(vms: VMService, thin: ThinMonitor) -> APIRouter:
    router = APIRouter()

    @router.get("/thin")
    def thin_status(vm: str | None = None) -> list[dict[str, Any]]:
        if vm is not None:
            vms.record(vm)
        return thin.status(vm)

    return router
