"""Adopt, release and plan routes: /v1/vms/{vm}/adopt, /v1/vms/{vm}/release,
/v1/vms/{vm}/adoption and /v1/plan/disk."""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.adoption.wiring import AdoptionServices
from blockplane.api.adopt_schemas import (
    AdoptAnswer,
    AdoptionAnswer,
    PlanAnswer,
    PlanDisk,
    ReleaseAnswer,
    VMAdopt,
)
from blockplane.api.sizes import size
from blockplane.api.throttle_bodies import attach_throttle
from blockplane.vms.disk_plan import DiskDescriptor
from blockplane.vms.plan_service import PlanRequest


def adopt_router(services: AdoptionServices) -> APIRouter:
    router = APIRouter()

    @router.post("/vms/{vm}/adopt", response_model=AdoptAnswer, status_code=201)
    def adopt(vm: str, body: VMAdopt | None = None) -> AdoptAnswer:
        result = services.adopt.adopt(vm, (body or VMAdopt()).pool_for)
        return AdoptAnswer(**result.to_json())

    @router.post("/vms/{vm}/release", response_model=ReleaseAnswer)
    def release(vm: str) -> ReleaseAnswer:
        return ReleaseAnswer(**services.release.release(vm).to_json())

    @router.get("/vms/{vm}/adoption", response_model=AdoptionAnswer)
    def adoption(vm: str) -> AdoptionAnswer:
        record = services.adopt.record(vm)
        return AdoptionAnswer(
            vm=record.vm,
            adopted_at=record.adopted_at,
            gone_since=record.gone_since,
            reserved_iothreads=list(record.reserved_iothreads),
            foreign_disks=list(record.foreign_disks),
            foreign_paths=list(record.foreign_paths),
            report=record.report,
        )

    @router.post("/plan/disk", response_model=PlanAnswer)
    def plan_disk(body: PlanDisk) -> PlanAnswer:
        groups, scaling, vm_group = attach_throttle(body)
        request = PlanRequest(
            descriptor=DiskDescriptor(
                size_bytes=size(body.size, "size"),
                bus=body.bus,
                format=body.format,
                thin=body.thin,
                queues=body.queues,
                io_threads=body.io_threads,
                throttle_groups=groups,
                limits=dict(body.limits),
                scaling=scaling,
                vm_group=vm_group,
            ),
            vm=body.vm,
            domain_xml=body.domain_xml,
            vcpus=body.vcpus,
            iothread_ids=tuple(body.iothread_ids),
            reserved_iothreads=(tuple(body.reserved_iothreads)
                                if body.reserved_iothreads is not None else None),
            pool=body.pool,
            name=body.name,
        )
        return PlanAnswer(**services.planner.plan(request).to_json())

    return router
