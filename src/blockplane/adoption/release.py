"""``vm release``: stop managing a VM and leave its domain and files exactly as they are.

Refused while a blockplane job, snapshot or multi-step change of the VM is under way. Then the
thin monitor lets go of its volumes (and the write thresholds it armed are cleared, so QEMU is
back where it was), and every row blockplane keeps about the VM (the VM, its disks and their
volumes, chain volumes, QoS, jobs, snapshots, the adoption record) is dropped in ONE
transaction: an agent killed at any point leaves the VM either fully managed (a restarted agent
re-arms what is still recorded) or not at all. No libvirt definition, device, IOThread, group
or file is changed or deleted. Must not undefine, detach or delete anything.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from blockplane.chain.jobs.store import JobStore, busy_error
from blockplane.deadlines import BoundedLock
from blockplane.errors import BlockplaneError, Conflict, NotFound
from blockplane.failpoints import failpoint
from blockplane.hypervisor.connection import Hypervisor
from blockplane.store.adoption import AdoptionRecords
from blockplane.store.chain_records import ChainRecords
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.pending import PendingOperations
from blockplane.store.records import Records

log = logging.getLogger(__name__)


class ThinRelease(Protocol):
    def monitored(self, vm: str) -> list[Any]: ...

    def forget(self, key: tuple[str, str]) -> None: ...


@dataclass(frozen=True)
class ReleaseResult:
    vm: str
    adopted: bool
    disks: list[str]
    volumes_forgotten: list[str]
    thresholds_cleared: list[str]
    domain_present: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ReleaseService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        database: Database,
        records: Records,
        chain_records: ChainRecords,
        jobs: JobStore,
        adoptions: AdoptionRecords,
        pending: PendingOperations,
        events: EventPublisher,
        vm_lock: Callable[[str], BoundedLock],
        thin: ThinRelease | None,
    ) -> None:
        self._hypervisor = hypervisor
        self._database = database
        self._records = records
        self._chain = chain_records
        self._jobs = jobs
        self._adoptions = adoptions
        self._pending = pending
        self._events = events
        self._vm_lock = vm_lock
        self._thin = thin

    def release(self, vm: str) -> ReleaseResult:
        if self._records.vm(vm) is None:
            raise NotFound(f"no VM named {vm!r} is managed by blockplane", code="vm.not_found")
        with self._vm_lock(vm):
            self._refuse_if_busy(vm)
            adopted = self._adoptions.get(vm) is not None
            disks = [disk.target for disk in self._records.disks(vm)]
            cleared = self._disarm(vm)
            failpoint("release.after_disarm")
            volumes = self._drop_records(vm)
            failpoint("release.after_records")
        present = self._hypervisor.exists(vm)
        self._events.publish("vm.released", vm, adopted=adopted, disks=disks,
                             volumes_forgotten=volumes)
        return ReleaseResult(vm, adopted, disks, volumes, cleared, present)

    def _refuse_if_busy(self, vm: str) -> None:
        for stored in self._jobs.live():
            if stored.state.vm == vm:
                raise busy_error(vm, stored)
        if self._chain.snapshots(vm, state="creating"):
            raise Conflict(f"a snapshot of VM {vm} is being taken; release it once it is done",
                           code="vm.busy")
        pending = [op for op in self._pending.all() if op.vm == vm]
        if pending:
            raise Conflict(
                f"VM {vm} has a change under way ({pending[0].kind} of {pending[0].target}); "
                "release it once the agent has finished it",
                code="vm.busy",
            )

    def _disarm(self, vm: str) -> list[str]:
        """Stop the thin monitor acting on ``vm``, and clear the thresholds it armed."""
        if self._thin is None:
            return []
        volumes = list(self._thin.monitored(vm))
        for volume in volumes:
            self._thin.forget(volume.key)
        cleared: list[str] = []
        try:
            domain = self._hypervisor.lookup(vm)
            running = domain.is_active()
        except BlockplaneError:
            return cleared
        for volume in volumes:
            if not running or volume.libvirt_index is None:
                continue
            name = f"{volume.target}[{volume.libvirt_index}]"
            try:
                domain.set_block_threshold(name, 0)
                cleared.append(name)
            except BlockplaneError as error:
                log.info("clearing the threshold of %s/%s: %s", vm, name, error.message)
        return cleared

    def _drop_records(self, vm: str) -> list[str]:
        """Every row about ``vm``, in one transaction; the volumes it forgot (files kept)."""
        volumes: dict[tuple[str, str], None] = {}
        with self._database.transaction():
            for disk in self._records.disks(vm):
                volumes[(disk.pool, disk.volume)] = None
            for row in self._chain.volumes(vm=vm):
                volumes[(row.pool, row.volume)] = None
            # Disks, QoS, monitor rows, jobs, snapshots and the adoption record go with it.
            self._records.delete_vm(vm)
            failpoint("release.in_records")
            for pool, volume in volumes:
                self._chain.forget_volume(pool, volume)
                self._records.delete_volume(pool, volume)
        return [volume for _, volume in volumes]

