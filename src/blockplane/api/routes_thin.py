"""Thin provisioning routes: ``GET /v1/thin`` (the monitor's view of each thin volume, and the
disks on rbd pools, which nothing monitors: ``thin.rbd_rows``)."""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_list
from blockplane.store.records import Records
from blockplane.thin.monitor import ThinMonitor
from blockplane.thin.rbd_rows import rbd_thin_rows
from blockplane.thin.views import ThinVolumeView
from blockplane.vms.lifecycle import VMService


def thin_router(vms: VMService, thin: ThinMonitor, records: Records) -> APIRouter:
    router = APIRouter()

    @router.get("/thin", response_model=response_list(ThinVolumeView))
    def thin_status(vm: str | None = None) -> list[ThinVolumeView]:
        if vm is not None:
            vms.record(vm)
        return [*thin.status(vm), *rbd_thin_rows(records, vm)]

    return router
