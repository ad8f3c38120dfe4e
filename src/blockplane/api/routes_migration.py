"""Migration routes: ``POST /v1/vms/{vm}/migrate`` (the source starts a job) and the
destination's ``/v1/migrations/incoming`` (plan, prepare, status, finish, abort), which a source
agent calls over the peer channel (HTTPS, pinned CA, this host's token).

Handlers translate between JSON and the migration services; they hold no policy.
"""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.chain_bodies import bandwidth
from blockplane.api.migration_bodies import IncomingBody, MigrateStart, PlanOut
from blockplane.api.models import response_model
from blockplane.migration.destination import DestinationService, IncomingView
from blockplane.migration.source import SourceMigrations, parse_pool_map
from blockplane.migration.source_check import MigrateOptions
from blockplane.migration.views import MigrationJobView


def migration_router(source: SourceMigrations, destination: DestinationService) -> APIRouter:
    router = APIRouter()
    incoming = response_model(IncomingView)

    @router.post("/vms/{vm}/migrate", status_code=202,
                 response_model=response_model(MigrationJobView))
    def migrate(vm: str, body: MigrateStart) -> MigrationJobView:
        """Check, then start a live migration to peer ``to`` (a job of kind ``migrate``).
        Refused before anything changes: 409 ``job.busy``, ``snapshot.in_progress``,
        ``vm.busy``, ``vm.not_running``; 404 ``pool.not_found`` (on the destination); 409
        ``pool.full``; 422 ``capability.missing``; 400 ``migration.not_shared``; peer errors."""
        options = MigrateOptions(
            peer=body.to, copy_storage=body.copy_storage, pool_map=parse_pool_map(body.pool_map),
            bandwidth_bps=bandwidth(body.bandwidth), max_downtime_ms=body.max_downtime or 0)
        return source.start(vm, options)

    @router.post("/migrations/incoming/plan", response_model=PlanOut)
    def plan_incoming(body: IncomingBody) -> PlanOut:
        """What the VM would get on this host; changes nothing."""
        return PlanOut.of(destination.plan(body.request()))

    @router.post("/migrations/incoming", status_code=201, response_model=PlanOut)
    def prepare_incoming(body: IncomingBody) -> PlanOut:
        """Record the intent, then make the copied disks' volumes; the final plan."""
        return PlanOut.of(destination.prepare(body.request(), body.source_host or None))

    @router.get("/migrations/incoming/{job_id}", response_model=incoming)
    def show_incoming(job_id: str, vm: str = "") -> IncomingView:
        """This host's record of the migration, and whether the VM is here."""
        return destination.status(job_id, vm)

    @router.post("/migrations/incoming/{job_id}/finish", response_model=incoming)
    def finish_incoming(job_id: str) -> IncomingView:
        """Record the VM that landed here as this host's own (idempotent)."""
        return destination.finish(job_id)

    @router.post("/migrations/incoming/{job_id}/abort", response_model=incoming)
    def abort_incoming(job_id: str, vm: str = "") -> IncomingView:
        """Remove what the prepare made; 409 ``migration.landed`` once the VM runs here."""
        return destination.abort(job_id, vm)

    return router
