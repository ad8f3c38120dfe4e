"""Define-time provisioning: a new VM together with its disks, all or nothing.

The disks are attached to the VM's persistent definition before it first starts, so their
IOThreads and mappings are part of the definition QEMU starts with. If any disk fails, the VM
and the volumes created so far are removed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blockplane.model.vm import GuestKind
from blockplane.vms.disks import AttachRequest, DiskService
from blockplane.vms.lifecycle import VMService


def create_with_disks(
    vms: VMService,
    disks: DiskService,
    name: str,
    vcpus: int,
    memory_bytes: int,
    guest: GuestKind,
    start: bool,
    requests: Sequence[AttachRequest],
) -> dict[str, Any]:
    if not requests:
        return vms.create(name, vcpus, memory_bytes, guest, start).to_json()
    vms.create(name, vcpus, memory_bytes, guest, start=False)
    try:
        attached = [disks.attach(request) for request in requests]
    except BaseException:
        vms.delete(name)
        raise
    view = vms.start(name) if start else vms.show(name)
    return {**view.to_json(), "disks": attached}
