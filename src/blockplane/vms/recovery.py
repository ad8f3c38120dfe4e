"""Finishing or undoing disk changes the agent died in the middle of.

Each attach and detach writes an intent (``store/pending.py``) before its first step. On start,
before serving, the intent registry (``store.intents``) hands what is left of kinds
``disk.attach`` and ``disk.detach`` to ``recover_intent``, which compares it with libvirt's view:
- attach: the disk is in the domain -> complete it (record it); otherwise roll back every step
  that may have happened (controller, IOThreads the attach added, the volume);
- detach: the disk is gone from the domain -> complete it (orphan IOThreads, record, volume);
  otherwise leave the disk as it is, attached and recorded, for the user to retry.
Either way nothing is left half-done. The steps themselves live with the disk service.
"""

from __future__ import annotations

import contextlib
import logging

from blockplane.errors import BlockplaneError, NotFound
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.domain import DomainHandle
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.events import EventPublisher
from blockplane.store.intents import IntentOutcome
from blockplane.store.pending import PendingOperation
from blockplane.store.records import DiskRecord, Records
from blockplane.vms.observers import DiskObservers
from blockplane.xml.disk import parse_disks, scsi_controller_indexes, scsi_controller_xml

log = logging.getLogger(__name__)

class DiskRecovery:
    def __init__(
        self,
        hypervisor: Hypervisor,
        records: Records,
        pools: PoolService,
        volumes: VolumeService,
        events: EventPublisher,
        observers: DiskObservers,
    ) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._pools = pools
        self._volumes = volumes
        self._events = events
        self._observers = observers

    def recover_intent(self, operation: PendingOperation) -> IntentOutcome:
        """Complete or roll back one ``disk.attach`` or ``disk.detach`` intent (the registry
        finishes it), and publish ``disk.recovered``."""
        try:
            outcome = self._recover(operation)
        except BlockplaneError as error:
            log.error("recovering %s failed: %s", operation, error)
            outcome = f"failed: {error}"
        self._events.publish("disk.recovered", operation.vm, operation=operation.kind,
                             target=operation.target, outcome=outcome)
        return IntentOutcome(operation.vm, operation.kind, operation.target, outcome)

    def _recover(self, operation: PendingOperation) -> str:
        try:
            domain: DomainHandle | None = self._hypervisor.lookup(operation.vm)
        except NotFound:
            domain = None
        present = domain is not None and self._present(domain, operation.target)
        if operation.kind == "disk.attach":
            if present:
                return self._complete_attach(operation)
            self._roll_back_attach(domain, operation)
            return "rolled back"
        if operation.kind == "disk.detach":
            if present:
                return "not detached: the disk is still attached; retry the detach"
            self._complete_detach(domain, operation)
            return "completed"
        raise ValueError(f"not a disk intent: {operation.kind}")

    @staticmethod
    def _present(domain: DomainHandle, target: str) -> bool:
        views = [domain.xml(inactive=True)]
        if domain.is_active():
            views.append(domain.xml())
        return any(disk.target == target for xml in views for disk in parse_disks(xml))

    def _complete_attach(self, operation: PendingOperation) -> str:
        data = operation.data
        if self._records.disk(operation.vm, operation.target) is None:
            self._records.add_disk(
                DiskRecord(
                    operation.vm,
                    operation.target,
                    data["pool"],
                    data["volume"],
                    data["bus"],
                    data["plan"],
                )
            )
            volume = self._records.volume(data["pool"], data["volume"])
            if volume is not None:
                self._observers.attached(operation.vm, operation.target, volume)
        return "completed"

    def _roll_back_attach(self, domain: DomainHandle | None, operation: PendingOperation) -> None:
        data = operation.data
        if domain is not None:
            live = domain.is_active()
            index = data.get("controller_index")
            if index is not None:
                self._remove_controller(domain, int(index), live)
            self._remove_unused_iothreads(
                domain, data.get("plan", {}).get("iothreads_added", []), live
            )
        self._delete_volume(data["pool"], data["volume"])
        self._records.delete_disk(operation.vm, operation.target)

    def _complete_detach(self, domain: DomainHandle | None, operation: PendingOperation) -> None:
        data = operation.data
        if domain is not None:
            self._remove_unused_iothreads(domain, data.get("orphans", []), domain.is_active())
        self._records.delete_disk(operation.vm, operation.target)
        self._delete_volume(data["pool"], data["volume"])

    @staticmethod
    def _remove_controller(domain: DomainHandle, index: int, live: bool) -> None:
        xml = scsi_controller_xml(index)
        for inactive in (True, False) if live else (True,):
            if index in scsi_controller_indexes(domain.xml(inactive=inactive)):
                with contextlib.suppress(BlockplaneError):
                    domain.detach_device(xml, live=not inactive, config=inactive)

    @staticmethod
    def _remove_unused_iothreads(domain: DomainHandle, candidates: list[int], live: bool) -> None:
        used: set[int] = set()
        for inactive in (True, False) if live else (True,):
            for disk in parse_disks(domain.xml(inactive=inactive)):
                used |= {iothread for iothread, _queues in disk.queue_mapping}
                if disk.iothread is not None:
                    used.add(disk.iothread)
        for iothread in candidates:
            if iothread not in used:
                with contextlib.suppress(BlockplaneError):
                    domain.del_iothread(iothread, live=live, config=True)

    def _delete_volume(self, pool_name: str, volume: str) -> None:
        if self._records.volume(pool_name, volume) is not None:
            self._volumes.delete(pool_name, volume)
            return
        pool = self._records.pool(pool_name)
        if pool is None:
            return
        backend = self._pools.backend(pool)
        if volume in backend.list():
            backend.delete(volume)
