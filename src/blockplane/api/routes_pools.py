"""Pool routes: /v1/pools."""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_list, response_model
from blockplane.api.schemas import PoolCreate, PoolUpdate
from blockplane.api.sizes import optional_size
from blockplane.storage.pools import PoolService
from blockplane.storage.views import PoolDeleteResult, PoolView


def pools_router(pools: PoolService) -> APIRouter:
    router = APIRouter()

    @router.get("/pools", response_model=response_list(PoolView))
    def list_pools() -> list[PoolView]:
        return pools.list_pools()

    @router.post("/pools", status_code=201, response_model=response_model(PoolView))
    def create_pool(body: PoolCreate) -> PoolView:
        return pools.create(
            body.name,
            body.type,
            body.path,
            optional_size(body.capacity, "capacity"),
            optional_size(body.chunk, "chunk"),
            body.utilization,
        )

    @router.get("/pools/{name}", response_model=response_model(PoolView))
    def show_pool(name: str) -> PoolView:
        return pools.show(name)

    @router.patch("/pools/{name}", response_model=response_model(PoolView))
    def update_pool(name: str, body: PoolUpdate) -> PoolView:
        return pools.set_capacity(name, optional_size(body.capacity, "capacity"))

    @router.delete("/pools/{name}", response_model=response_model(PoolDeleteResult))
    def delete_pool(name: str) -> PoolDeleteResult:
        return pools.delete(name)

    return router
