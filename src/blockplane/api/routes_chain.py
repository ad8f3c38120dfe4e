"""Chain routes: ``/v1/vms/{vm}/disks/{target}/chain``, ``/v1/vms/{vm}/snapshots``, the block
jobs (``.../commit``, ``.../pull``, ``.../copy``, ``/v1/vms/{vm}/backup``) and ``/v1/jobs``.

Handlers translate between JSON and the chain services; they hold no policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def chain_router(agent: Agent) -> APIRouter:
    router = APIRouter()
    chain = agent.chain

    @router.get("/vms/{vm}/disks/{target}/chain")
    def show_chain(vm: str, target: str) -> dict[str, Any]:
        return chain.show(vm, target)

    @router.get("/vms/{vm}/snapshots")
    def list_snapshots(vm: str) -> list[dict[str, Any]]:
        agent.vms.record(vm)
        return chain.snapshots.list(vm)

    @router.post("/vms/{vm}/snapshots", status_code=201)
    def create_snapshot(vm: str, body: SnapshotCreate) -> dict[str, Any]:
        agent.vms.record(vm)
        return chain.snapshots.create(vm, body.disks, quiesce=body.quiesce, name=body.name)

    @router.post("/vms/{vm}/disks/{target}/commit", status_code=202)
    def commit(vm: str, target: str, body: CommitStart) -> dict[str, Any]:
        return chain.jobs.commit(
            vm, target, body.top, body.base, pivot=body.pivot, bandwidth=bandwidth(body.bandwidth)
        )

    @router.post("/vms/{vm}/disks/{target}/pull", status_code=202)
    def pull(vm: str, target: str, body: PullStart) -> dict[str, Any]:
        return chain.jobs.pull(vm, target, body.base, bandwidth=bandwidth(body.bandwidth))

    @router.post("/vms/{vm}/disks/{target}/copy", status_code=202)
    def copy(vm: str, target: str, body: CopyStart) -> dict[str, Any]:
        return chain.jobs.copy(
            vm,
            target,
            dest_path=body.dest,
            pool=body.pool,
            shallow=body.shallow,
            synchronous_writes=body.sync_writes,
            pivot=body.pivot,
            bandwidth=bandwidth(body.bandwidth),
        )

    @router.post("/vms/{vm}/backup", status_code=202)
    def backup(vm: str, body: BackupStart) -> dict[str, Any]:
        agent.vms.record(vm)
        return chain.jobs.backup(vm, body.dest, body.incremental, body.disks)

    @router.get("/jobs")
    def list_jobs(vm: str | None = None) -> list[dict[str, Any]]:
        return chain.jobs.list(vm)

    @router.get("/jobs/{job_id}")
    def show_job(job_id: str) -> dict[str, Any]:
        return chain.jobs.show(job_id)

    @router.post("/jobs/{job_id}/abort")
    def abort_job(job_id: str) -> dict[str, Any]:
        return chain.jobs.abort(job_id)

    @router.post("/jobs/{job_id}/pivot")
    def pivot_job(job_id: str) -> dict[str, Any]:
        return chain.jobs.pivot(job_id)

    @router.post("/jobs/{job_id}/speed")
    def job_speed(job_id: str, body: SpeedSet) -> dict[str, Any]:
        return chain.jobs.speed(job_id, bandwidth(body.bandwidth))

    return router
