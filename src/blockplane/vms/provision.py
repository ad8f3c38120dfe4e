"""A VM together with its disks: define-time provisioning and deletion, all or nothing.

Define-time disks are attached to the VM's persistent definition before it first starts, so
their IOThreads and mappings are part of the definition QEMU starts with. If any disk fails, the
VM and the volumes created so far are removed again. Deleting a VM releases its disks (their
volumes and every chain volume) before the domain is undefined. Owns only that order: VMs are
``lifecycle``'s, disks ``disks``'.
"""

from __future__ import annotations

from collections.abc import Sequence

from blockplane.model.view import view_fields
from blockplane.model.vm import GuestKind
from blockplane.vms.disks import AttachRequest, DiskService
from blockplane.vms.lifecycle import VMService
from blockplane.vms.views import VMCreated, VMDeleteResult


class Provisioner:
    def __init__(self, vms: VMService, disks: DiskService) -> None:
        self._vms = vms
        self._disks = disks

    def create(
        self,
        name: str,
        vcpus: int,
        memory_bytes: int,
        guest: GuestKind,
        start: bool,
        requests: Sequence[AttachRequest],
    ) -> VMCreated:
        if not requests:
            return VMCreated(**view_fields(self._vms.create(name, vcpus, memory_bytes, guest,
                                                           start)))
        self._vms.create(name, vcpus, memory_bytes, guest, start=False)
        try:
            attached = [self._disks.attach(request) for request in requests]
        except BaseException:
            self.delete(name)
            raise
        view = self._vms.start(name) if start else self._vms.show(name)
        return VMCreated(**view_fields(view), disks=tuple(attached))

    def delete(self, name: str) -> VMDeleteResult:
        """Delete the stopped VM ``name`` and the volumes of its disks."""
        self._vms.require_stopped(name)
        released = self._disks.release_vm(name)
        return self._vms.remove(name, released)
