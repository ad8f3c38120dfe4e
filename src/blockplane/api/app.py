"""The HTTP API (v1): a FastAPI app over the agent's services.

``create_app`` takes the services (anything shaped like ``AppServices``: the agent passes its
``runtime.services.Services``) and hands each router only the services it uses. Handlers
translate between JSON and service calls; they hold no policy. Blocking service calls run in
FastAPI's thread pool (plain ``def`` handlers).
"""

from __future__ import annotations

from typing import Protocol

from fastapi import Depends, FastAPI

from blockplane import __version__
from blockplane.adoption.wiring import AdoptionServices
from blockplane.api.auth import TokenGuard
from blockplane.api.latency import RequestLatency
from blockplane.api.middleware import BodySizeLimit, IdempotencyKeys
from blockplane.api.problems import PROBLEM_RESPONSES, install_problem_handlers
from blockplane.api.request_deadlines import RequestDeadlines
from blockplane.api.routes_adopt import adopt_router
from blockplane.api.routes_agent import agent_router
from blockplane.api.routes_backup import backup_router
from blockplane.api.routes_chain import chain_router
from blockplane.api.routes_checkpoints import checkpoints_router
from blockplane.api.routes_events import EventStream, events_router
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
from blockplane.backup.wiring import BackupServices
from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.jobs.service import JobsService
from blockplane.chain.service import ChainService
from blockplane.chain.snapshots import SnapshotService
from blockplane.facts.host import HostFacts
from blockplane.hypervisor.connection import Hypervisor
from blockplane.metrics import AgentMetrics
from blockplane.migration.peers import PeerService
from blockplane.migration.wiring import MigrationServices
from blockplane.observe.confirm import Confirmer
from blockplane.observe.reconcile import ReconcileLog
from blockplane.observe.top import TopService
from blockplane.storage.pool_volumes import PoolVolumes
from blockplane.storage.pools import PoolService
from blockplane.store.database import Database
from blockplane.store.idempotency import IdempotencyStore
from blockplane.store.intents import IntentRecovery
from blockplane.store.records import Records
from blockplane.thin.monitor import ThinMonitor
from blockplane.throttle.service import ThrottleService
from blockplane.vms.disks import DiskService
from blockplane.vms.lifecycle import VMService
from blockplane.vms.provision import Provisioner


class AppServices(Protocol):
    """The services the API serves (``runtime.services.Services`` has them all)."""

    @property
    def database(self) -> Database: ...
    @property
    def events(self) -> EventStream: ...
    @property
    def metrics(self) -> AgentMetrics: ...
    @property
    def facts(self) -> HostFacts: ...
    @property
    def records(self) -> Records: ...
    @property
    def pools(self) -> PoolService: ...
    @property
    def pool_volumes(self) -> PoolVolumes: ...
    @property
    def vms(self) -> VMService: ...
    @property
    def disks(self) -> DiskService: ...
    @property
    def provisioner(self) -> Provisioner: ...
    @property
    def throttle(self) -> ThrottleService: ...
    @property
    def thin(self) -> ThinMonitor: ...
    @property
    def chains(self) -> ChainService: ...
    @property
    def snapshots(self) -> SnapshotService: ...
    @property
    def jobs(self) -> JobsService: ...
    @property
    def checkpoints(self) -> CheckpointService: ...
    @property
    def top(self) -> TopService: ...
    @property
    def reconcile_log(self) -> ReconcileLog: ...
    @property
    def confirmer(self) -> Confirmer: ...
    @property
    def intents(self) -> IntentRecovery: ...
    @property
    def peers(self) -> PeerService: ...
    @property
    def hypervisor(self) -> Hypervisor: ...
    @property
    def adoption(self) -> AdoptionServices: ...
    @property
    def backups(self) -> BackupServices: ...
    @property
    def migrations(self) -> MigrationServices: ...


def create_app(services: AppServices, token: str) -> FastAPI:
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
            Depends(StateRoomGuard(services.database.path.parent)),
        ],
    )
    install_problem_handlers(app)
    vms = services.vms
    for router in (
        agent_router(services.hypervisor.gate),
        host_router(services.facts, services.metrics, services.pools.ceph_health),
        pools_router(services.pools),
        volumes_router(services.pool_volumes),
        vms_router(vms, services.disks, services.provisioner, services.peers),
        adopt_router(services.adoption),
        events_router(services.events),
        throttle_router(services.throttle),
        thin_router(vms, services.thin, services.records),
        chain_router(vms, services.chains, services.snapshots, services.jobs,
                     services.migrations.source),
        checkpoints_router(services.checkpoints),
        backup_router(vms, services.backups),
        top_router(vms, services.top),
        reconcile_router(services.reconcile_log, services.confirmer, services.intents),
        peers_router(services.peers),
        migration_router(services.migrations.source, services.migrations.destination),
    ):
        app.include_router(router, prefix="/v1", responses=PROBLEM_RESPONSES)
    app.add_middleware(IdempotencyKeys, store=IdempotencyStore(services.database), token=token)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(RequestDeadlines)
    # Outermost, so that the time includes every other middleware.
    app.add_middleware(RequestLatency, histogram=services.metrics.api_latency)
    return app
