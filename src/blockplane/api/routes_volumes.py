"""Volume routes: ``/v1/pools/{name}/volumes`` (list) and
``/v1/pools/{name}/volumes/{volume}`` (delete).

Handlers translate between JSON and ``PoolVolumes``; they hold no policy.
"""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_list, response_model
from blockplane.storage.pool_volumes import PoolVolumes
from blockplane.storage.views import VolumeDeleteResult, VolumeView


def volumes_router(volumes: PoolVolumes) -> APIRouter:
    router = APIRouter()

    @router.get("/pools/{name}/volumes", response_model=response_list(VolumeView))
    def list_volumes(name: str) -> list[VolumeView]:
        """The pool's volumes, each with who uses it (disks, backing chains, jobs)."""
        return volumes.list(name)

    @router.delete("/pools/{name}/volumes/{volume}",
                   response_model=response_model(VolumeDeleteResult))
    def delete_volume(name: str, volume: str) -> VolumeDeleteResult:
        """Delete a volume nothing uses, freeing its space. 409 ``volume.in_use`` while a
        disk, a backing chain or a job refers to it; 400 ``path.escape`` for a name that is
        not a plain volume name inside the pool."""
        return volumes.delete(name, volume)

    return router
