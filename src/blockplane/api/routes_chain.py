"""Chain routes: ``/v1/vms/{vm}/disks/{target}/chain``, ``/v1/vms/{vm}/snapshots``, the block
jobs (``.../commit``, ``.../pull``, ``.../copy``, ``/v1/vms/{vm}/backup``) and ``/v1/jobs``.

Handlers translate between JSON and the chain services; they hold no policy.
"""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.chain_bodies import (
    BackupStart,
    CommitStart,
    CopyStart,
    PullStart,
    SnapshotCreate,
    SpeedSet,
    bandwidth,
)
from blockplane.api.models import response_list, response_model
from blockplane.chain.jobs.service import JobsService
from blockplane.chain.jobs.views import JobView
from blockplane.chain.service import ChainService
from blockplane.chain.snapshots import SnapshotService
from blockplane.chain.views import ChainView, SnapshotCreated, SnapshotView
from blockplane.vms.lifecycle import VMService


def chain_router(
    vms: VMService, chains: ChainService, snapshots: SnapshotService, jobs: JobsService
) -> APIRouter:
    router = APIRouter()
    job = response_model(JobView)

    @router.get("/vms/{vm}/disks/{target}/chain", response_model=response_model(ChainView))
    def show_chain(vm: str, target: str) -> ChainView:
        return chains.show(vm, target)

    @router.get("/vms/{vm}/snapshots", response_model=response_list(SnapshotView))
    def list_snapshots(vm: str) -> list[SnapshotView]:
        vms.record(vm)
        return snapshots.list(vm)

    @router.post("/vms/{vm}/snapshots", status_code=201,
                 response_model=response_model(SnapshotCreated))
    def create_snapshot(vm: str, body: SnapshotCreate) -> SnapshotCreated:
        vms.record(vm)
        return snapshots.create(vm, body.disks, quiesce=body.quiesce, name=body.name)

    @router.post("/vms/{vm}/disks/{target}/commit", status_code=202, response_model=job)
    def commit(vm: str, target: str, body: CommitStart) -> JobView:
        return jobs.commit(
            vm, target, body.top, body.base, pivot=body.pivot, bandwidth=bandwidth(body.bandwidth)
        )

    @router.post("/vms/{vm}/disks/{target}/pull", status_code=202, response_model=job)
    def pull(vm: str, target: str, body: PullStart) -> JobView:
        return jobs.pull(vm, target, body.base, bandwidth=bandwidth(body.bandwidth))

    @router.post("/vms/{vm}/disks/{target}/copy", status_code=202, response_model=job)
    def copy(vm: str, target: str, body: CopyStart) -> JobView:
        return jobs.copy(
            vm,
            target,
            dest_path=body.dest,
            pool=body.pool,
            shallow=body.shallow,
            synchronous_writes=body.sync_writes,
            pivot=body.pivot,
            bandwidth=bandwidth(body.bandwidth),
        )

    @router.post("/vms/{vm}/backup", status_code=202, response_model=job)
    def backup(vm: str, body: BackupStart) -> JobView:
        vms.record(vm)
        return jobs.backup(vm, body.dest, body.incremental, body.disks)

    @router.get("/jobs", response_model=response_list(JobView))
    def list_jobs(vm: str | None = None) -> list[JobView]:
        return jobs.list(vm)

    @router.get("/jobs/{job_id}", response_model=job)
    def show_job(job_id: str) -> JobView:
        return jobs.show(job_id)

    @router.post("/jobs/{job_id}/abort", response_model=job)
    def abort_job(job_id: str) -> JobView:
        return jobs.abort(job_id)

    @router.post("/jobs/{job_id}/pivot", response_model=job)
    def pivot_job(job_id: str) -> JobView:
        return jobs.pivot(job_id)

    @router.post("/jobs/{job_id}/speed", response_model=job)
    def job_speed(job_id: str, body: SpeedSet) -> JobView:
        return jobs.speed(job_id, bandwidth(body.bandwidth))

    return router
