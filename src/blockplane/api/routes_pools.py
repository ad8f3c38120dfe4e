"""Pool routes: /v1/pools."""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_list, response_model
from blockplane.api.schemas import PoolCreate, PoolUpdate
from blockplane.api.sizes import optional_size
from blockplane.errors import InvalidInput
from blockplane.storage.pools import PoolService
from blockplane.storage.rbd_pools import DEFAULT_USER, RbdPoolRequest
from blockplane.storage.views import PoolDeleteResult, PoolView


def pools_router(pools: PoolService) -> APIRouter:
    router = APIRouter()

    @router.get("/pools", response_model=response_list(PoolView))
    def list_pools() -> list[PoolView]:
        return pools.list_pools()

    @router.post("/pools", status_code=201, response_model=response_model(PoolView))
    def create_pool(body: PoolCreate) -> PoolView:
        if body.type == "rbd":
            return pools.create_rbd(
                body.name, _rbd_request(body), optional_size(body.capacity, "capacity"))
        extra = [field for field in RBD_FIELDS if getattr(body, field) is not None]
        if extra:
            raise InvalidInput(f"{', '.join(extra)} apply to rbd pools only",
                               code="pool.invalid")
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


RBD_FIELDS = ("ceph_conf", "rbd_pool", "ceph_user", "ceph_keyring", "secret_uuid")


def _rbd_request(body: PoolCreate) -> RbdPoolRequest:
    missing = [option for option, value in (("--ceph-conf", body.ceph_conf),
                                            ("--rbd-pool", body.rbd_pool)) if not value]
    if missing:
        raise InvalidInput(f"an rbd pool needs {' and '.join(missing)}", code="pool.invalid")
    if body.path is not None or body.chunk is not None or body.utilization is not None:
        raise InvalidInput("--path, --chunk and --utilization do not apply to an rbd pool",
                           code="pool.invalid")
    assert body.ceph_conf is not None and body.rbd_pool is not None
    return RbdPoolRequest(conf=body.ceph_conf, ceph_pool=body.rbd_pool,
                          user=body.ceph_user or DEFAULT_USER, keyring=body.ceph_keyring,
                          secret_uuid=body.secret_uuid)
