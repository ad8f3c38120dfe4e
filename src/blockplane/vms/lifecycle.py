"""VM lifecycle: create, start, stop, destroy, remove, list and show, and lifecycle events.

Owns the VM records and the domain definitions. Disks are the disk service's business: deleting
a VM together with its volumes is ``provision.Provisioner.delete``, which releases the disks and
then calls ``remove`` here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
import uuid as uuid_module
from typing import Literal

from blockplane.config import Settings
from blockplane.errors import Conflict, DeadlineExceeded, InvalidInput, NotFound, OperationFailed
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.domain import DomainHandle, GuestExecResult
from blockplane.hypervisor.events import LifecycleEvent
from blockplane.model.vm import DomainDefinition, GuestKind, VMSpec
from blockplane.storage.names import validate_name
from blockplane.store.adoption import AdoptionRecord, AdoptionRecords
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records, VMRecord
from blockplane.vms.guest_image import guest_boot
from blockplane.vms.views import VMDeleteResult, VMView
from blockplane.xml.domain import build_domain_xml

MAX_VCPUS = 64
MIN_MEMORY = 64 * 1024 * 1024
MAX_MEMORY = 1024 * 1024 * 1024 * 1024
GUEST_READY_TIMEOUT_S = 60.0


class VMService:
    def __init__(
        self,
        settings: Settings,
        hypervisor: Hypervisor,
        records: Records,
        events: EventPublisher,
        virt_type: Literal["qemu", "kvm"],
        emulator: str,
        adoptions: AdoptionRecords | None = None,
    ) -> None:
        self._adoptions = adoptions
        self._settings = settings
        self._hypervisor = hypervisor
        self._records = records
        self._events = events
        self._virt_type = virt_type
        self._emulator = emulator

    def create(
        self, name: str, vcpus: int, memory_bytes: int, guest: GuestKind, start: bool
    ) -> VMView:
        validate_name("vm", name)
        if not 1 <= vcpus <= MAX_VCPUS:
            raise InvalidInput(f"vcpus must be 1..{MAX_VCPUS}, got {vcpus}", code="vm.invalid")
        if not MIN_MEMORY <= memory_bytes <= MAX_MEMORY:
            raise InvalidInput(
                f"memory must be 64 MiB..1 TiB, got {memory_bytes} bytes", code="vm.invalid"
            )
        if guest not in ("none", "linux"):
            raise InvalidInput(f"unknown guest {guest!r}: use none or linux", code="vm.invalid")
        if self._records.vm(name) is not None or self._hypervisor.exists(name):
            raise Conflict(f"a VM named {name!r} already exists", code="vm.exists")
        boot = guest_boot(self._settings.paths.images) if guest == "linux" else None
        logs = self._settings.paths.guest_logs
        logs.mkdir(mode=0o711, exist_ok=True)
        definition = DomainDefinition(
            spec=VMSpec(name, vcpus, memory_bytes, guest),
            virt_type=self._virt_type,
            emulator=self._emulator,
            console_log=str(logs / f"{name}.console.log"),
            boot=boot,
        )
        domain_uuid = str(uuid_module.uuid4())
        self._records.add_vm(VMRecord(name, domain_uuid, vcpus, memory_bytes, guest))
        try:
            xml = build_domain_xml(definition).replace(
                "<name>", f"<uuid>{domain_uuid}</uuid>\n  <name>", 1
            )
            domain = self._hypervisor.define(xml)
        except Exception:
            self._records.delete_vm(name)
            raise
        self._events.publish("vm.created", name, vcpus=vcpus, guest=guest)
        if start:
            self._start(domain, guest)
        return self._view(domain)

    def start(self, name: str) -> VMView:
        domain = self._managed(name)
        if domain.is_active():
            raise Conflict(f"VM {name} is already running", code="vm.running")
        record = self._records.vm(name)
        self._start(domain, record.guest if record else "none")
        return self._view(domain)

    def _start(self, domain: DomainHandle, guest: str) -> None:
        started = time.monotonic()
        domain.start()
        if guest == "linux":
            self.wait_for_guest_agent(domain)
        self._events.publish(
            "vm.started", domain.name, seconds=round(time.monotonic() - started, 3)
        )

    def wait_for_guest_agent(self, domain: DomainHandle) -> None:
        deadline = time.monotonic() + GUEST_READY_TIMEOUT_S
        while True:
            try:
                domain.agent_command({"execute": "guest-ping"}, timeout_s=2)
                return
            except OperationFailed:
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"the guest of {domain.name} did not answer within "
                        f"{GUEST_READY_TIMEOUT_S:.0f} s",
                        code="guest.boot_timeout",
                    ) from None
                time.sleep(0.25)

    def stop(self, name: str, timeout_s: float = 30.0) -> VMView:
        domain = self._managed(name)
        if not domain.is_active():
            raise Conflict(f"VM {name} is not running", code="vm.not_running")
        # The test guest has no ACPI daemon; its guest agent powers it off instead.
        try:
            domain.shutdown(through_guest_agent=self.record(name).guest == "linux")
        except DeadlineExceeded as error:
            raise DeadlineExceeded(
                f"VM {name} was asked to shut down, but {error.message}. The guest may still "
                f"shut down once it reads the request; `blockplane vm destroy {name}` powers it "
                "off now",
                code=error.code,
                vm=name,
            ) from error
        deadline = time.monotonic() + timeout_s
        while domain.is_active():
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"VM {name} did not shut down within {timeout_s:.0f} s; "
                    f"use `blockplane vm destroy {name}` to power it off",
                    code="vm.stop_timeout",
                )
            time.sleep(0.1)
        self._events.publish("vm.stopped", name)
        return self._view(domain)

    def destroy(self, name: str) -> VMView:
        domain = self._managed(name)
        if not domain.is_active():
            raise Conflict(f"VM {name} is not running", code="vm.not_running")
        domain.destroy()
        self._events.publish("vm.destroyed", name)
        return self._view(domain)

    def require_stopped(self, name: str) -> DomainHandle:
        """The managed VM ``name``; Conflict ``vm.running`` while it runs."""
        domain = self._managed(name)
        if domain.is_active():
            raise Conflict(
                f"VM {name} is running: stop or destroy it before deleting it", code="vm.running"
            )
        return domain

    def remove(self, name: str, volumes_deleted: list[str]) -> VMDeleteResult:
        """Undefine the stopped VM ``name`` and forget it; its disks were released already."""
        domain = self.require_stopped(name)
        released = volumes_deleted
        domain.undefine()
        self._records.delete_vm(name)
        log = self._settings.paths.guest_logs / f"{name}.console.log"
        log.unlink(missing_ok=True)
        self._events.publish("vm.deleted", name, volumes_deleted=released)
        return VMDeleteResult(name, deleted=True, volumes_deleted=tuple(released))

    def list_vms(self) -> list[VMView]:
        views = [self._view(domain) for domain in self._hypervisor.domains()]
        present = {view.name for view in views}
        views += [self._undefined(record) for record in self._records.vms()
                  if record.name not in present]
        return views

    def show(self, name: str) -> VMView:
        try:
            return self._view(self._hypervisor.lookup(name))
        except NotFound:
            record = self._records.vm(name)
            if record is None:
                raise
            return self._undefined(record)

    def live_xml(self, name: str, *, inactive: bool = False) -> str:
        """The domain XML libvirt has now (``inactive``: the persistent definition)."""
        return self._hypervisor.lookup(name).xml(inactive=inactive)

    def guest_exec(self, name: str, argv: list[str], timeout_s: float) -> GuestExecResult:
        if not argv:
            raise InvalidInput("guest exec needs a command", code="guest.exec_invalid")
        domain = self._managed(name)
        if not domain.is_active():
            raise Conflict(f"VM {name} is not running", code="vm.not_running")
        if self.record(name).guest != "linux":
            # Only the Linux test guest has a guest-agent channel; asking the others never works.
            raise Conflict(
                f"VM {name} has no guest agent (created with --guest none)", code="guest.no_agent"
            )
        return domain.guest_exec(argv, timeout_s=timeout_s)

    def domain(self, name: str) -> DomainHandle:
        return self._managed(name)

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """A managed VM started, stopped, paused ...: publish it as ``vm.lifecycle``."""
        if self._records.vm(event.domain) is None:
            return
        await asyncio.to_thread(
            self._events.publish, "vm.lifecycle", event.domain, event=event.event,
            detail=event.detail,
        )

    def redefine(self, domain_xml: str) -> None:
        """Replace a managed VM's persistent definition; a running VM is not touched."""
        self._hypervisor.define(domain_xml)

    def record(self, name: str) -> VMRecord:
        record = self._records.vm(name)
        if record is None:
            raise NotFound(f"no VM named {name!r} is managed by blockplane", code="vm.not_found")
        return record

    def _managed(self, name: str) -> DomainHandle:
        self.record(name)
        return self._hypervisor.lookup(name)

    def _undefined(self, record: VMRecord) -> VMView:
        """A managed VM whose domain is no longer in libvirt (undefined outside blockplane)."""
        return _with_adoption(
            VMView(record.name, record.uuid, "undefined", record.vcpus, record.memory_bytes,
                   record.guest, managed=True),
            self._adoption(record.name),
        )

    def _adoption(self, name: str) -> AdoptionRecord | None:
        return self._adoptions.get(name) if self._adoptions is not None else None

    def _view(self, domain: DomainHandle) -> VMView:
        record = self._records.vm(domain.name)
        current = domain.state()
        state = "crashed" if current.crashed else current.state
        if record is None:
            return VMView(domain.name, domain.uuid, state, 0, 0, "unknown", managed=False)
        view = VMView(
            record.name,
            domain.uuid,
            state,
            record.vcpus,
            record.memory_bytes,
            record.guest,
            managed=True,
        )
        return _with_adoption(view, self._adoption(record.name))


def _with_adoption(view: VMView, adoption: AdoptionRecord | None) -> VMView:
    if adoption is None:
        return view
    return dataclasses.replace(
        view, adopted=True, gone_since=adoption.gone_since,
        reserved_iothreads=adoption.reserved_iothreads, foreign_disks=adoption.foreign_disks,
    )


def emulator_path() -> str:
    for candidate in ("qemu-system-x86_64", "/usr/libexec/qemu-kvm"):
        found = shutil.which(candidate)
        if found:
            return found
    raise OperationFailed("no QEMU binary found (qemu-system-x86_64)", code="qemu.missing")
