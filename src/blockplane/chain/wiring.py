"""Builds the chain services for the agent and hooks them into the disk service.

Owns only the wiring (which service gets which collaborator); the agent calls ``build`` once,
then routes BLOCK_JOB_2 events to ``events.on_block_job`` and runs ``reconcile``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.jobs.cleanup import JobCleanup
from blockplane.chain.jobs.driver import JobDriver
from blockplane.chain.jobs.events import JobEvents
from blockplane.chain.jobs.rbd_copies import RbdCopies
from blockplane.chain.jobs.reconcile import JobReconciler
from blockplane.chain.jobs.service import JobsService
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.persistent_chains import PersistentChains
from blockplane.chain.ports import ThinHook
from blockplane.chain.rbd_snapshots import RbdSnapshots
from blockplane.chain.service import ChainService
from blockplane.chain.snapshots import SnapshotService
from blockplane.chain.volume_references import ChainVolumeReferences
from blockplane.chain.volumes import ChainVolumes
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.chain_records import ChainRecords
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.vms.disks import DiskService
from blockplane.vms.lifecycle import VMService


@dataclass
class ChainServices:
    chains: ChainService
    snapshots: SnapshotService
    jobs: JobsService
    events: JobEvents
    volumes: ChainVolumes
    checkpoints: CheckpointService
    volume_references: ChainVolumeReferences
    persistent: PersistentChains
    persistent_checked: bool = False
    rbd: RbdSnapshots | None = None
    records: Records | None = None

    @classmethod
    def build(
        cls,
        vms: VMService,
        disks: DiskService,
        pools: PoolService,
        volume_service: VolumeService,
        records: Records,
        database: Database,
        events: EventPublisher,
        thin: ThinHook | None,
    ) -> ChainServices:
        chain_records = ChainRecords(database)
        store = JobStore(database)
        chains = ChainService(vms, records, chain_records)
        volumes = ChainVolumes(records, chain_records, pools, volume_service, events, thin)
        rbd_copies = RbdCopies(pools, records)
        driver = JobDriver(store, chains, JobCleanup(volumes, rbd_copies.forget_failed_backup),
                           events)
        reconciler = JobReconciler(store, chains, driver)
        jobs = JobsService(store, chains, driver, reconciler, volumes, pools, records, disks,
                           thin)
        volumes.references = jobs.referenced_paths
        volumes.preparing = jobs.preparing
        volumes.adopt_untracked()
        disks.observers.append(volumes)
        rbd = RbdSnapshots(pools, records, chain_records)
        snapshots = SnapshotService(chains, disks, records, chain_records, volumes, store,
                                    events, rbd)
        checkpoints = CheckpointService(chains, store, records, events, disks.vm_lock)
        return cls(chains, snapshots, jobs, JobEvents(store, chains, driver), volumes,
                   checkpoints, ChainVolumeReferences(records, chain_records, chains, store),
                   PersistentChains(chains, records, chain_records, store, vms.redefine,
                                    events), rbd=rbd, records=records)

    def show(self, vm: str, target: str) -> dict[str, Any]:
        """``chain VM TARGET``; a disk on an rbd pool is one image, with its RBD snapshots."""
        shown = self.chains.show(vm, target)
        disk = self.records.disk(vm, target) if self.records is not None else None
        if self.rbd is None or disk is None or not self.rbd.on_rbd(disk):
            return shown
        volume = self.records.volume(disk.pool, disk.volume) if self.records else None
        for element in shown["elements"]:
            if volume is not None and element["path"] == volume.path:
                element["virtual_bytes"] = volume.virtual_bytes
        return {**shown, "rbd_snapshots": self.rbd.chain_snapshots(disk)}

    def reconcile(self) -> None:
        if not self.persistent_checked:
            # Only a restart can leave the persistent definitions behind (persistent_chains).
            self.persistent.repair_all()
            self.persistent_checked = True
        self.snapshots.reconcile()
        self.jobs.reconcile()
