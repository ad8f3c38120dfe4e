"""Pool routes: /v1/pools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from blockplane.api.schemas import PoolCreate, PoolUpdate
from blockplane.api.sizes import optional_size

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def pools_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/pools")
    def list_pools() -> list[dict[str, Any]]:
        return [pool.to_json() for pool in agent.pools.list_pools()]

    @router.post("/pools", status_code=201)
    def create_pool(body: PoolCreate) -> dict[str, Any]:
        return agent.pools.create(
            body.name,
            body.type,
            body.path,
            optional_size(body.capacity, "capacity"),
            optional_size(body.chunk, "chunk"),
            body.utilization,
        ).to_json()

    @router.get("/pools/{name}")
    def show_pool(name: str) -> dict[str, Any]:
        return agent.pools.show(name).to_json()

    @router.patch("/pools/{name}")
    def update_pool(name: str, body: PoolUpdate) -> dict[str, Any]:
        return agent.pools.set_capacity(name, optional_size(body.capacity, "capacity")).to_json()

    @router.delete("/pools/{name}")
    def delete_pool(name: str) -> dict[str, Any]:
        return agent.pools.delete(name)

    return router
