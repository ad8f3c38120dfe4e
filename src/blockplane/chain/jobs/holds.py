"""What the live block jobs hold on to, for the services that must not pull it away.

The disk service asks before a detach or a VM delete (``refuse_if_busy``); the chain volumes ask
before deleting an image (``referenced_paths``) or a volume left ``creating`` (``preparing``).
A job in CLEANUP still holds its images: its cleanup decides what becomes of them (an aborted
copy's destination is kept as a point-in-time copy), not a reconcile pass beside it. Reads only.
"""

from __future__ import annotations

from blockplane.chain.jobs.state import JobPhase
from blockplane.chain.jobs.store import JobStore, busy_error
from blockplane.chain.service import ChainService
from blockplane.vms.locks import VMLocks


class JobHolds:
    def __init__(self, store: JobStore, chains: ChainService, locks: VMLocks) -> None:
        self._store = store
        self._chains = chains
        self._locks = locks

    def preparing(self, vm: str) -> bool:
        """A job of ``vm`` is starting, or a snapshot of it is being taken."""
        if any(job.state.vm == vm and job.state.phase is JobPhase.PREPARING
               for job in self._store.live()):
            return True
        return self._locks.lock_for(vm).locked()

    def refuse_if_busy(self, vm: str, target: str | None) -> None:
        """Refuse a detach (``target``) or a VM delete (None) while a job holds the disk."""
        for stored in self._store.live():
            if stored.state.vm == vm and (target is None or target in stored.spec.targets):
                raise busy_error(vm, stored)

    def referenced_paths(self, vm: str) -> set[str]:
        """Paths ``vm``'s chains and its live jobs still use."""
        paths = self._chains.disk_paths(vm)
        for stored in self._store.live():
            if stored.state.vm == vm:
                paths |= stored.spec.paths() - set(stored.spec.invalidated)
        return paths
