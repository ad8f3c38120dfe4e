"""The source's cleanup, once the destination confirmed the VM as its own: this host lets go.

Per disk: the thin monitor forgets its volumes; a copied disk's volumes (the top and every
chain volume blockplane made under it) are deleted with their bytes; a disk left on shared
storage only loses its records here (the destination owns those bytes now). Then the VM's
record goes (its disk, I/O limit, thin, snapshot and job rows with it), with its console log,
and a definition libvirt left behind is undefined if it is not running. Every step can be run
again after a crash. Must not touch a VM that runs here: it is called only for one that left.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from blockplane.errors import BlockplaneError, NotFound
from blockplane.hypervisor.connection import Hypervisor
from blockplane.migration.plan import MigrationPlan, MigrationRequest
from blockplane.storage.volumes import VolumeService
from blockplane.store.chain_records import ChainRecords
from blockplane.store.records import Records
from blockplane.xml.relocate import serial_log_paths

log = logging.getLogger(__name__)

ForgetThin = Callable[[tuple[str, str]], None]


class SourceCleanup:
    def __init__(self, hypervisor: Hypervisor, records: Records, chain_records: ChainRecords,
                 volumes: VolumeService, forget_thin: ForgetThin) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._chain = chain_records
        self._volumes = volumes
        self._forget_thin = forget_thin

    def release(self, request: MigrationRequest, plan: MigrationPlan) -> list[str]:
        """Let go of the VM that migrated away; return the volumes deleted."""
        vm = request.vm.name
        self._undefine_leftover(vm)
        deleted: list[str] = []
        for move in request.disks:
            landing = plan.disk(move.target)
            copied = landing is None or landing.copy
            volumes = {(row.pool, row.volume) for row in self._chain.volumes(vm=vm,
                                                                              target=move.target)}
            volumes.add((move.source_pool, move.source_volume))
            self._records.delete_disk(vm, move.target)
            for pool, volume in sorted(volumes):
                self._forget_thin((pool, volume))
                self._chain.forget_volume(pool, volume)
                if copied:
                    if self._delete(pool, volume):
                        deleted.append(volume)
                else:
                    self._records.delete_volume(pool, volume)
        self._records.delete_vm(vm)
        for path in serial_log_paths(request.persistent_xml):
            with contextlib.suppress(OSError):
                Path(path).unlink(missing_ok=True)
        return deleted

    def _delete(self, pool: str, volume: str) -> bool:
        if self._records.volume(pool, volume) is None:
            return False
        try:
            self._volumes.delete(pool, volume)
        except NotFound:
            self._records.delete_volume(pool, volume)  # its bytes are gone already
        return True

    def _undefine_leftover(self, vm: str) -> None:
        try:
            domain = self._hypervisor.lookup(vm)
        except NotFound:
            return
        if domain.is_active():
            raise BlockplaneError(f"{vm} runs on this host again: its records are kept",
                                  code="migration.state")
        domain.undefine()
