"""The chain package's reconcile step: persistent chains (once), snapshots, then jobs.

Only a restart can leave a persistent definition behind its running chains
(``persistent_chains``), so that is checked on the first pass only; every pass then finishes or
undoes snapshots a dead agent left ``creating`` and sets each live job right. Owns only the
order of those steps.
"""

from __future__ import annotations

from blockplane.chain.jobs.service import JobsService
from blockplane.chain.persistent_chains import PersistentChains
from blockplane.chain.snapshots import SnapshotService


class ChainReconciler:
    def __init__(
        self, persistent: PersistentChains, snapshots: SnapshotService, jobs: JobsService
    ) -> None:
        self._persistent = persistent
        self._snapshots = snapshots
        self._jobs = jobs
        self._persistent_checked = False

    def run(self) -> None:
        if not self._persistent_checked:
            self._persistent.repair_all()
            self._persistent_checked = True
        self._snapshots.reconcile()
        self._jobs.reconcile()
