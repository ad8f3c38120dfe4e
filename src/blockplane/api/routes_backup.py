"""Backup routes: pull backups (``POST /v1/vms/{vm}/backup/pull``, ``GET
/v1/pull-backups/{job}``, ``POST /v1/jobs/{job}/stop``), restore (``POST /v1/restore``), and the
checkpoint definitions a migration hands over (``GET|POST .../checkpoints/definitions``).

Handlers translate between JSON and the backup services; they hold no policy.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from blockplane.api.models import response_model
from blockplane.api.schemas import Body
from blockplane.backup.checkpoint_keeper import CheckpointDefinitionsView, RedefineResult
from blockplane.backup.pull_plan import DEFAULT_TIMEOUT_S, PullRequest
from blockplane.backup.restore import RestoreRequest, RestoreResult
from blockplane.backup.views import PullBackupView
from blockplane.backup.wiring import BackupServices
from blockplane.vms.lifecycle import VMService

NAME = Field(default=None, max_length=128)


class PullBackupStart(Body):
    disks: list[str] = Field(default_factory=list, max_length=64)
    incremental: str | None = NAME
    scratch_pool: str | None = Field(default=None, max_length=64)
    quiesce: bool = False
    require_quiesce: bool = False
    timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0,
                           description="Seconds until blockplane ends the export itself.")
    tcp: bool = Field(default=False, description="Serve the export over TCP with TLS.")


class RestoreStart(Body):
    sources: list[str] = Field(min_length=1, max_length=256)
    pool: str = Field(max_length=64)
    name: str = Field(max_length=128)
    disk: str | None = Field(default=None, max_length=32)
    attach: str | None = Field(default=None, max_length=64)


class CheckpointDefinitions(Body):
    definitions: list[str] | None = Field(default=None, max_length=4096)


def backup_router(vms: VMService, backups: BackupServices) -> APIRouter:
    router = APIRouter()

    @router.post("/vms/{vm}/backup/pull", status_code=202,
                 response_model=response_model(PullBackupView))
    def start_pull(vm: str, body: PullBackupStart) -> PullBackupView:
        """Start a pull backup: one NBD export per disk, each at the backup's point in time.
        400 ``backup.invalid``; 404 ``checkpoint.not_found``; 409 ``checkpoint.inconsistent``
        (a broken bitmap asked for by name), ``job.busy``, ``vm.not_running``."""
        return backups.pull.start(PullRequest(
            vm=vm, targets=tuple(body.disks), incremental=body.incremental,
            scratch_pool=body.scratch_pool, quiesce=body.quiesce or body.require_quiesce,
            require_quiesce=body.require_quiesce, timeout_s=body.timeout, tcp=body.tcp))

    @router.get("/pull-backups/{job_id}", response_model=response_model(PullBackupView))
    def show_pull(job_id: str) -> PullBackupView:
        return backups.pull.show(job_id)

    @router.post("/jobs/{job_id}/stop", response_model=response_model(PullBackupView))
    def stop_pull(job_id: str) -> PullBackupView:
        """End a pull backup's export; its scratch images are deleted once it ended."""
        return backups.pull.stop(job_id)

    @router.post("/restore", status_code=201, response_model=response_model(RestoreResult))
    def restore(body: RestoreStart) -> RestoreResult:
        """Rebuild a volume from a full backup and its incrementals, in order."""
        return backups.restore.restore(RestoreRequest(
            sources=tuple(body.sources), pool=body.pool, name=body.name, disk=body.disk,
            attach=body.attach))

    @router.get("/vms/{vm}/checkpoints/definitions",
                response_model=response_model(CheckpointDefinitionsView))
    def checkpoint_definitions(vm: str) -> CheckpointDefinitionsView:
        """The recorded ``<domaincheckpoint>`` of each checkpoint, parents first."""
        vms.record(vm)
        return backups.keeper.definitions(vm)

    @router.post("/vms/{vm}/checkpoints/redefine",
                 response_model=response_model(RedefineResult))
    def redefine_checkpoints(vm: str, body: CheckpointDefinitions) -> RedefineResult:
        """Define again every recorded checkpoint libvirt lacks (after ``definitions`` from
        another host, when given, are recorded)."""
        return backups.keeper.redefine_checkpoints(vm, body.definitions)

    return router
