"""Volume routes: ``/v1/pools/{name}/volumes`` (list) and
``/v1/pools/{name}/volumes/{volume}`` (delete).

Handlers translate between JSON and ``PoolVolumes``; they hold no policy.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from blockplane.storage.pool_volumes import PoolVolumes


def volumes_router(volumes: PoolVolumes) -> APIRouter:
    router = APIRouter()

    @router.get("/pools/{name}/volumes")
    def list_volumes(name: str) -> list[dict[str, Any]]:
        """The pool's volumes, each with who uses it (disks, backing chains, jobs)."""
        return volumes.list(name)

    @router.delete("/pools/{name}/volumes/{volume}")
    def delete_volume(name: str, volume: str) -> dict[str, Any]:
        """Delete a volume nothing uses, freeing its space. 409 ``volume.in_use`` while a
        disk, a backing chain or a job refers to it; 400 ``path.escape`` for a name that is
        not a plain volume name inside the pool."""
        return volumes.delete(name, volume)

    return router
