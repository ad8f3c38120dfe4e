"""VM and disk routes: /v1/vms, /v1/vms/{vm}/disks."""

from __future__ import annotations

import base64

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from blockplane.api.models import response_list, response_model
from blockplane.api.schemas import DiskAttach, GuestExec, MigrateCheck, VMCreate, VMStop
from blockplane.api.sizes import size
from blockplane.api.throttle_bodies import attach_throttle
from blockplane.errors import InvalidInput
from blockplane.iothreads.views import IOThreadsView
from blockplane.migration.peers import PeerService
from blockplane.vms.disks import AttachRequest, DiskService
from blockplane.vms.lifecycle import VMService
from blockplane.vms.migrate_check import migrate_check
from blockplane.vms.provision import Provisioner
from blockplane.vms.views import (
    AttachResult,
    DetachResult,
    DiskView,
    GuestExecView,
    MigrateCheckView,
    VMCreated,
    VMDeleteResult,
    VMView,
)


class XMLResponse(PlainTextResponse):
    """Libvirt XML; its own class so that the OpenAPI document says application/xml."""

    media_type = "application/xml"


def vms_router(
    vms: VMService, disks: DiskService, provisioner: Provisioner, peers: PeerService
) -> APIRouter:
    router = APIRouter()
    vm_view = response_model(VMView)

    @router.get("/vms", response_model=response_list(VMView))
    def list_vms() -> list[VMView]:
        return vms.list_vms()

    @router.post("/vms", status_code=201, response_model=response_model(VMCreated))
    def create_vm(body: VMCreate) -> VMCreated:
        guest = body.guest
        if guest not in ("none", "linux"):
            raise InvalidInput(f"unknown guest {guest!r}: use none or linux", code="vm.invalid")
        requests = [_attach_request(body.name, disk) for disk in body.disks]
        return provisioner.create(
            body.name,
            body.vcpus,
            size(body.memory, "memory"),
            "linux" if guest == "linux" else "none",
            body.start,
            requests,
        )

    @router.get("/vms/{vm}", response_model=vm_view)
    def show_vm(vm: str) -> VMView:
        return vms.show(vm)

    @router.get("/vms/{vm}/xml", response_class=XMLResponse)
    def vm_xml(vm: str, inactive: bool = False) -> XMLResponse:
        return XMLResponse(vms.live_xml(vm, inactive=inactive))

    @router.delete("/vms/{vm}", response_model=response_model(VMDeleteResult))
    def delete_vm(vm: str) -> VMDeleteResult:
        return provisioner.delete(vm)

    @router.post("/vms/{vm}/start", response_model=vm_view)
    def start_vm(vm: str) -> VMView:
        return vms.start(vm)

    @router.post("/vms/{vm}/stop", response_model=vm_view)
    def stop_vm(vm: str, body: VMStop | None = None) -> VMView:
        return vms.stop(vm, (body or VMStop()).timeout)

    @router.post("/vms/{vm}/destroy", response_model=vm_view)
    def destroy_vm(vm: str) -> VMView:
        return vms.destroy(vm)

    @router.post("/vms/{vm}/exec", response_model=response_model(GuestExecView))
    def guest_exec(vm: str, body: GuestExec) -> GuestExecView:
        result = vms.guest_exec(vm, body.argv, body.timeout)
        return GuestExecView(
            exit_code=result.exit_code,
            stdout_base64=base64.b64encode(result.stdout).decode(),
            stderr_base64=base64.b64encode(result.stderr).decode(),
        )

    @router.get("/vms/{vm}/disks", response_model=response_list(DiskView))
    def list_disks(vm: str) -> list[DiskView]:
        return disks.list_disks(vm)

    @router.post("/vms/{vm}/disks", status_code=201, response_model=response_model(AttachResult))
    def attach_disk(vm: str, body: DiskAttach) -> AttachResult:
        return disks.attach(_attach_request(vm, body))

    @router.get("/vms/{vm}/iothreads", response_model=response_model(IOThreadsView))
    def iothreads(vm: str) -> IOThreadsView:
        return disks.iothreads(vm)

    @router.post("/vms/{vm}/migrate-check", response_model=response_model(MigrateCheckView))
    def vm_migrate_check(vm: str, body: MigrateCheck) -> MigrateCheckView:
        if (body.facts is None) == (body.peer is None):
            raise InvalidInput("give either facts or peer", code="input.invalid")
        xml = vms.live_xml(vm)  # an unknown VM is refused before the peer is asked
        if body.facts is not None:
            return migrate_check(vm, xml, body.facts)
        return migrate_check(vm, xml, peers.live_facts(str(body.peer)))

    @router.delete("/vms/{vm}/disks/{target}", response_model=response_model(DetachResult))
    def detach_disk(vm: str, target: str) -> DetachResult:
        return disks.detach(vm, target)

    return router


def _attach_request(vm: str, body: DiskAttach) -> AttachRequest:
    """A volume descriptor as the disk service takes it; sizes and QoS are checked here."""
    groups, scaling, vm_group = attach_throttle(body)
    return AttachRequest(
        vm=vm,
        pool=body.pool,
        size_bytes=size(body.size, "size"),
        name=body.name,
        thin=body.thin,
        format=body.format,
        bus=body.bus,
        queues=body.queues,
        io_threads=body.io_threads,
        throttle_groups=groups,
        limits=dict(body.limits),
        scaling=scaling,
        vm_group=vm_group,
    )
