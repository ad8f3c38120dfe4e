"""VM and disk routes: /v1/vms, /v1/vms/{vm}/disks."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from blockplane.api.schemas import DiskAttach, GuestExec, MigrateCheck, VMCreate, VMStop
from blockplane.api.sizes import size
from blockplane.api.throttle_bodies import attach_throttle
from blockplane.errors import InvalidInput
from blockplane.vms.disks import AttachRequest
from blockplane.vms.migrate_check import migrate_check
from blockplane.vms.provision import create_with_disks

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


class XMLResponse(PlainTextResponse):
    """Libvirt XML; its own class so that the OpenAPI document says application/xml."""

    media_type = "application/xml"


def vms_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/vms")
    def list_vms() -> list[dict[str, Any]]:
        return [vm.to_json() for vm in agent.vms.list_vms()]

    @router.post("/vms", status_code=201)
    def create_vm(body: VMCreate) -> dict[str, Any]:
        guest = body.guest
        if guest not in ("none", "linux"):
            raise InvalidInput(f"unknown guest {guest!r}: use none or linux", code="vm.invalid")
        requests = [_attach_request(body.name, disk) for disk in body.disks]
        return create_with_disks(
            agent.vms,
            agent.disks,
            body.name,
            body.vcpus,
            size(body.memory, "memory"),
            "linux" if guest == "linux" else "none",
            body.start,
            requests,
        )

    @router.get("/vms/{vm}")
    def show_vm(vm: str) -> dict[str, Any]:
        return agent.vms.show(vm).to_json()

    @router.get("/vms/{vm}/xml", response_class=XMLResponse)
    def vm_xml(vm: str, inactive: bool = False) -> XMLResponse:
        return XMLResponse(agent.vms.live_xml(vm, inactive=inactive))

    @router.delete("/vms/{vm}")
    def delete_vm(vm: str) -> dict[str, Any]:
        return agent.vms.delete(vm)

    @router.post("/vms/{vm}/start")
    def start_vm(vm: str) -> dict[str, Any]:
        return agent.vms.start(vm).to_json()

    @router.post("/vms/{vm}/stop")
    def stop_vm(vm: str, body: VMStop | None = None) -> dict[str, Any]:
        return agent.vms.stop(vm, (body or VMStop()).timeout).to_json()

    @router.post("/vms/{vm}/destroy")
    def destroy_vm(vm: str) -> dict[str, Any]:
        return agent.vms.destroy(vm).to_json()

    @router.post("/vms/{vm}/exec")
    def guest_exec(vm: str, body: GuestExec) -> dict[str, Any]:
        result = agent.vms.guest_exec(vm, body.argv, body.timeout)
        return {
            "exit_code": result.exit_code,
            "stdout_base64": base64.b64encode(result.stdout).decode(),
            "stderr_base64": base64.b64encode(result.stderr).decode(),
        }

    @router.get("/vms/{vm}/disks")
    def list_disks(vm: str) -> list[dict[str, Any]]:
        return agent.disks.list_disks(vm)

    @router.post("/vms/{vm}/disks", status_code=201)
    def attach_disk(vm: str, body: DiskAttach) -> dict[str, Any]:
        return agent.disks.attach(_attach_request(vm, body))

    @router.get("/vms/{vm}/iothreads")
    def iothreads(vm: str) -> dict[str, Any]:
        return agent.disks.iothreads(vm)

    @router.post("/vms/{vm}/migrate-check")
    def vm_migrate_check(vm: str, body: MigrateCheck) -> dict[str, Any]:
        if (body.facts is None) == (body.peer is None):
            raise InvalidInput("give either facts or peer", code="input.invalid")
        xml = agent.vms.live_xml(vm)  # an unknown VM is refused before the peer is asked
        if body.facts is not None:
            return {"vm": vm, **migrate_check(xml, body.facts)}
        return {"vm": vm, **migrate_check(xml, agent.peers.live_facts(str(body.peer)))}

    @router.delete("/vms/{vm}/disks/{target}")
    def detach_disk(vm: str, target: str) -> dict[str, Any]:
        return agent.disks.detach(vm, target)

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
