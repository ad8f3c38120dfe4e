"""Builds the backup services from the collaborators ``runtime.services.build_services`` made.

Owns only the wiring: the keeper is made first (the checkpoint service is handed its
``forget``, so that a deleted checkpoint is not defined again), then the pull backups and the
restore. The agent runs ``reconcile`` with the other reconciles, ``watch_refusals`` in the
background, and ``on_lifecycle`` wraps the VM service's lifecycle handler so that a VM that
started gets back whatever checkpoint libvirt lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.backup.checkpoint_keeper import CheckpointKeeper, RedefineResult
from blockplane.backup.pull import EventStream, PullBackupService, TcpEndpoint
from blockplane.backup.records import CheckpointDefinitions, PullExports
from blockplane.backup.restore import RestoreService
from blockplane.backup.scratch import ScratchImages, SocketRoom
from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.jobs.service import JobsService
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.ports import ThinHook
from blockplane.chain.service import ChainService
from blockplane.chain.volumes import ChainVolumes
from blockplane.errors import BlockplaneError
from blockplane.hypervisor.events import LifecycleEvent
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.vms.disks import DiskService

LifecycleHandler = Callable[[LifecycleEvent], Awaitable[None]]


def checkpoint_keeper(chains: ChainService, database: Database, records: Records,
                      events: EventPublisher) -> CheckpointKeeper:
    return CheckpointKeeper(chains, CheckpointDefinitions(database), records, events)


@dataclass(frozen=True)
class BackupServices:
    pull: PullBackupService
    keeper: CheckpointKeeper
    restore: RestoreService
    records: Records

    @classmethod
    def build(
        cls, keeper: CheckpointKeeper, jobs: JobsService, job_store: JobStore,
        chains: ChainService, checkpoints: CheckpointService, chain_volumes: ChainVolumes,
        volumes: VolumeService, pools: PoolService, disks: DiskService, records: Records,
        database: Database, events: EventPublisher, thin: ThinHook | None, home: Path,
        tcp: TcpEndpoint | None = None,
    ) -> BackupServices:
        """``tcp``: where exports over TCP listen (``tcp_export.TcpExports.endpoint``)."""
        scratch = ScratchImages(volumes, chain_volumes, records, thin)
        pull = PullBackupService(
            jobs, job_store, chains, checkpoints, keeper, PullExports(database), scratch,
            SocketRoom(home), records, events, tcp,
        )
        restore = RestoreService(job_store, volumes, pools, disks, records, events)
        return cls(pull, keeper, restore, records)

    def reconcile(self) -> None:
        self.pull.reconcile()

    def watch_refusals(self, events: EventStream
                       ) -> Callable[[], Coroutine[Any, Any, None]]:
        """The background task that ends a pull backup whose scratch cannot grow."""
        return lambda: self.pull.watch_refusals(events)

    def vm_started(self, vm: str) -> RedefineResult | None:
        """A VM (re)started: define again whatever checkpoint libvirt lost meanwhile."""
        with contextlib.suppress(BlockplaneError):
            return self.keeper.redefine_checkpoints(vm)
        return None

    def on_lifecycle(self, then: LifecycleHandler) -> LifecycleHandler:
        """``then`` (the VM service's handler), after the checkpoints of a managed VM that
        started are defined again."""
        async def handle(event: LifecycleEvent) -> None:
            if event.event == "started" and self.records.vm(event.domain) is not None:
                await asyncio.to_thread(self.vm_started, event.domain)
            await then(event)
        return handle
