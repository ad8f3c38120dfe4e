"""The HTTP API (v1): a FastAPI app over the agent's services.

Handlers translate between JSON and service calls; they hold no policy. Blocking service
calls run in FastAPI's thread pool (plain ``def`` handlers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from blockplane import __version__
from blockplane.api.auth import TokenGuard
from blockplane.api.latency import RequestLatency
from blockplane.api.middleware import BodySizeLimit, IdempotencyKeys
from blockplane.api.problems import PROBLEM_RESPONSES, install_problem_handlers
from blockplane.api.request_deadlines import RequestDeadlines
from blockplane.api.routes_agent import agent_router
from blockplane.api.routes_chain import chain_router
from blockplane.api.routes_checkpoints import checkpoints_router
from blockplane.api.routes_events import events_router
from blockplane.api.routes_host import host_router
from blockplane.api.routes_migration import migration_router
from blockplane.api.routes_peers import peers_router
from blockplane.api.routes_pools import pools_router
from blockplane.api.routes_reconcile import reconcile_router
from blockplane.api.routes_thin import thin_router
from blockplane.api.routes_throttle import throttle_router
from blockplane.api.routes_top import top_router
from blockplane.api.routes_vms import vms_router
from blockplane.api.routes_volumes import volumes_router
from blockplane.api.state_room import StateRoomGuard
from blockplane.store.idempotency import IdempotencyStore

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def create_app(agent: Agent, token: str) -> FastAPI:
    app = FastAPI(
        title="blockplane",
        version=__version__,
        description="Block-storage control plane for a KVM host",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        # The token first: an unauthenticated caller learns nothing about the disk.
        dependencies=[
            Depends(TokenGuard(token)),
            Depends(StateRoomGuard(agent.database.path.parent)),
        ],
    )
    app.state.agent = agent
    install_problem_handlers(app)
    for router in (
        agent_router(agent.hypervisor.gate),
        host_router(agent),
        pools_router(agent),
        volumes_router(agent),
        vms_router(agent),
        events_router(agent),
        throttle_router(agent),
        thin_router(agent),
        chain_router(agent),
        checkpoints_router(agent),
        top_router(agent),
        reconcile_router(agent),
        peers_router(agent.peers),
        migration_router(agent.migrations.source, agent.migrations.destination),
    ):
        app.include_router(router, prefix="/v1", responses=PROBLEM_RESPONSES)
    app.add_middleware(IdempotencyKeys, store=IdempotencyStore(agent.database), token=token)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(RequestDeadlines)
    # Outermost, so that the time includes every other middleware.
    app.add_middleware(RequestLatency, histogram=agent.metrics.api_latency)
    return app
