"""Pool routes: /v1/pools."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from blockplane.api.schemas import PoolCreate, PoolUpdate
from blockplane.api.sizes import optional_size
from blockplane.storage.pools import PoolService


def pools_router(pools: PoolService) -> APIRouter:
    router = APIRouter()

    @router.get("/pools")
    def list_pools() -> list[dict[str, Any]]:
        return [pool.to_json() for pool in pools.list_pools()]

    @router.post("/pools", status_code=201)
    def create_pool(body: PoolCreate) -> dict[str, Any]:
        return pools.create(
            body.name,
            body.type,
            body.path,
            optional_size(body.capacity, "capacity"),
            optional_size(body.chunk, "chunk"),
            body.utilization,
        ).to_json()

    @router.get("/pools/{name}")
    def show_pool(name: str) -> dict[str, Any]:
        return pools.show(name).to_json()

    @router.patch("/pools/{name}")
    def update_pool(name: str, body: PoolUpdate) -> dict[str, Any]:
        return pools.set_capacity(name, optional_size(body.capacity, "capacity")).to_json()

    @router.delete("/pools/{name}")
    def delete_pool(name: str) -> dict[str, Any]:
        return pools.delete(name)

    return router
