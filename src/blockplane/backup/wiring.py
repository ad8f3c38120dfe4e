"""Builds the backup services on top of the chain services.

Owns only the wiring; the agent calls ``build`` once, runs ``reconcile`` with the other
reconciles, follows the event log with ``pull.watch_refusals``, and calls ``vm_started`` on a
VM's STARTED lifecycle event.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.backup.checkpoint_keeper import CheckpointKeeper, RedefineResult
from blockplane.backup.pull import PullBackupService, TcpEndpoint
from blockplane.backup.records import CheckpointDefinitions, PullExports
from blockplane.backup.restore import RestoreService
from blockplane.backup.scratch import ScratchImages, SocketRoom
from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.ports import ThinHook
from blockplane.chain.wiring import ChainServices
from blockplane.errors import BlockplaneError
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.vms.disks import DiskService


class BackupCheckpoints:
    """``checkpoint delete`` through the chain's checkpoint service, then forgotten here too,
    so that the keeper does not define it again."""

    def __init__(self, checkpoints: CheckpointService, keeper: CheckpointKeeper) -> None:
        self._checkpoints = checkpoints
        self._keeper = keeper

    def delete(self, vm: str, name: str) -> dict[str, Any]:
        result = self._checkpoints.delete(vm, name)
        self._keeper.forget(vm, name)
        return result


@dataclass
class BackupServices:
    pull: PullBackupService
    keeper: CheckpointKeeper
    checkpoints: BackupCheckpoints
    restore: RestoreService

    @classmethod
    def build(
        cls, chain: ChainServices, volumes: VolumeService, pools: PoolService,
        disks: DiskService, records: Records, database: Database, events: EventPublisher,
        thin: ThinHook | None, home: Path, tcp: TcpEndpoint | None = None,
    ) -> BackupServices:
        """``tcp``: where exports over TCP listen (``tcp_export.TcpExports.endpoint``)."""
        keeper = CheckpointKeeper(chain.chains, CheckpointDefinitions(database), records, events)
        scratch = ScratchImages(volumes, chain.volumes, records, thin)
        pull = PullBackupService(
            chain.jobs, JobStore(database), chain.chains, chain.checkpoints, keeper,
            PullExports(database), scratch, SocketRoom(home), records, events, tcp,
        )
        restore = RestoreService(JobStore(database), volumes, pools, disks, records, events)
        return cls(pull, keeper, BackupCheckpoints(chain.checkpoints, keeper), restore)

    def reconcile(self) -> None:
        self.pull.reconcile()

    def vm_started(self, vm: str) -> RedefineResult | None:
        """A VM (re)started: define again whatever checkpoint libvirt lost meanwhile."""
        with contextlib.suppress(BlockplaneError):
            return self.keeper.redefine_checkpoints(vm)
        return None
