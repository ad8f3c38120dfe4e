"""Keep each running VM's persistent definition on the chains its disks run on.

libvirt emits a block job's end before it saves the persistent definition (it updates the live
one, queues the event, then saves the status and the config), and the embedded libvirt dies
with the agent. A SIGKILL in between leaves the next cold start on the chain from before the
job: after an active commit or a copy with pivot, an image whose data is stale, or one the
cleanup deleted. So on the agent's first reconcile pass, every managed disk of a running,
persistent VM whose chain blockplane has changed (it has chain volumes on record, or a live
job; other VMs' chains cannot have moved, and a full host need not wait for them) and whose
persistent chain is not the live chain (or, where libvirt left it
unterminated, the start of it) gets the live chain written into the persistent definition.
A disk with a ``<mirror>`` is left alone: until a copy or active commit pivots, libvirt keeps
both definitions on the old chain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from blockplane.chain.jobs.store import JobStore
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, NotFound
from blockplane.model.chain import Chain
from blockplane.store.chain_records import ChainRecords
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.xml.backing_chain import parse_chain
from blockplane.xml.persistent_chain import with_live_chains

log = logging.getLogger(__name__)


def out_of_step(live: Chain, persistent: Chain) -> bool:
    """True when a cold start would not open the images the running VM uses."""
    if live.mirror is not None:
        return False
    running, listed = live.paths(), persistent.paths()
    if running[: len(listed)] != listed:
        return True
    return persistent.complete and len(listed) != len(running)


class PersistentChains:
    def __init__(self, chains: ChainService, records: Records, chain_records: ChainRecords,
                 store: JobStore, redefine: Callable[[str], None], events: EventPublisher) -> None:
        self._chains = chains
        self._records = records
        self._chain_records = chain_records
        self._store = store
        self._redefine = redefine
        self._events = events

    def repair_all(self) -> None:
        changed = {row.vm for row in self._chain_records.volumes()}
        changed |= {job.state.vm for job in self._store.live()}
        for vm in sorted(changed):
            if self._records.vm(vm) is None:
                continue
            try:
                self.repair(vm)
            except BlockplaneError:
                log.exception("bringing the persistent chains of VM %s in step failed", vm)

    def repair(self, vm: str) -> list[str]:
        """Write the live chain of each out-of-step disk of ``vm``; return their targets."""
        domain = self._chains.domain(vm)
        if not domain.is_active() or not domain.is_persistent():
            return []
        live_xml, persistent_xml = domain.xml(), domain.xml(inactive=True, secure=True)
        stale = []
        for disk in self._records.disks(vm):
            try:
                live = parse_chain(live_xml, disk.target)
                persistent = parse_chain(persistent_xml, disk.target)
            except NotFound:
                continue
            if out_of_step(live, persistent):
                stale.append((disk.target, persistent.paths(), live.paths()))
        if not stale:
            return []
        self._redefine(with_live_chains(persistent_xml, live_xml, [t for t, _, _ in stale]))
        for target, was, now in stale:
            log.warning("VM %s/%s: the persistent chain %s is now the running chain %s",
                        vm, target, list(was), list(now))
            self._events.publish("chain.persistent_repaired", vm, target=target,
                                 was=list(was), now=list(now))
        return [target for target, _, _ in stale]
