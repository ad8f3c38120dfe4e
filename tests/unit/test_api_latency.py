"""The API latency middleware labels requests by route template, never by raw path."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, Histogram

from blockplane.api.latency import UNMATCHED, RequestLatency


def test_requests_are_timed_under_their_route_template() -> None:
    router = APIRouter()

    @router.get("/vms/{vm}/disks/{target}")
    def disk(vm: str, target: str) -> dict[str, str]:
        return {"vm": vm, "target": target}

    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["method", "route", "status"], registry=registry)
    app = FastAPI(openapi_url=None)
    app.include_router(router, prefix="/v1")
    app.add_middleware(RequestLatency, histogram=histogram)

    async def requests() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            paths = ("/v1/vms/a/disks/vdb", "/v1/vms/b/disks/vdc", "/v1/nothing/here")
            return [(await client.get(path)).status_code for path in paths]

    assert asyncio.run(requests()) == [200, 200, 404]

    def count(route: str, status: str) -> float | None:
        return registry.get_sample_value(
            "t_seconds_count", {"method": "GET", "route": route, "status": status})

    assert count("/v1/vms/{vm}/disks/{target}", "200") == 2
    assert count(UNMATCHED, "404") == 1
    assert count("/v1/vms/a/disks/vdb", "200") is None
