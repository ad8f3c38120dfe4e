"""The thin monitor's safety net: one stats call, then each volume set right.

A full pass (agent start, then every full reconcile period) reads every running domain; a quick
pass reads only the domains it is given (``thin.watch`` picks them: what changed). From
``block.N.allocation``, ``physical`` and ``threshold`` and the VM state it finds what events
missed (agent down, a one-shot threshold that already fired, a VM paused on ENOSPC) and acts
through the extender and the pause keeper, under each volume's lock. A threshold gone from QEMU
while its volume is still armed may have fired a moment ago, its event still on the way: it is
looked at again ``SUSPECT_RECHECK_S`` later, in the same pass, and extended if still so, unless
its event was taken and the work on it is still running (queued behind others in a burst). Also
finishes what a crash interrupted: an extend recorded as pending whose volume did grow is
completed, not repeated. Owns the ``missed events`` count. Must not decide by itself
(``monitor_state.reconcile`` does) and must not call libvirt beyond the ports.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from typing import Any

from blockplane.errors import BlockplaneError
from blockplane.hypervisor.bulk_stats import (
    BlockNode,
    chain_nodes,
    domain_state,
    find_node,
    monitor_answered,
)
from blockplane.hypervisor.domain import DISK_ERROR_NO_SPACE, PAUSED_STATE
from blockplane.metrics import AgentMetrics
from blockplane.store.records import Records
from blockplane.thin.adaptive import WriteSample
from blockplane.thin.extender import Extender
from blockplane.thin.monitor_state import (
    Action,
    Extended,
    MonitorState,
    ReconcileDecision,
    reconcile,
    transition,
)
from blockplane.thin.monitor_store import MonitoredVolume, VolumeKey
from blockplane.thin.pauses import ENOSPC_REASONS, PauseResolver
from blockplane.thin.ports import DomainPort, HypervisorPort
from blockplane.thin.registry import VolumeRegistry

log = logging.getLogger(__name__)

_WAIT = ReconcileDecision(Action.NONE, "a threshold event may still be on its way")
#: How long a threshold that vanished unseen is given for its event to arrive.
SUSPECT_RECHECK_S = 0.5
#: A stats call at most this long dates its allocations well enough to measure a write rate.
RATE_SAMPLE_MAX_CALL_S = 0.05


class Reconciler:
    def __init__(
        self,
        hypervisor: HypervisorPort,
        registry: VolumeRegistry,
        extender: Extender,
        pauses: PauseResolver,
        records: Records,
        metrics: AgentMetrics,
        event_work_in_flight: Callable[[VolumeKey], bool] = lambda _key: False,
    ) -> None:
        self._hypervisor = hypervisor
        self._event_work_in_flight = event_work_in_flight
        self._registry = registry
        self._extender = extender
        self._pauses = pauses
        self._records = records
        self._metrics = metrics
        self._passes = 0
        # A threshold that vanished may have fired a moment ago with its event still on the
        # way; after start-up such a volume is acted on only if it still looks so on a second
        # look, SUSPECT_RECHECK_S later.
        self._suspects: set[VolumeKey] = set()
        #: VMs whose QEMU answered the last look at them (unarmed volumes there need arming).
        self.running: set[str] = set()
        #: VMs a quick look found busy with a job (no sizes without waiting): look again.
        self.busy: set[str] = set()

    def run(self, vms: Collection[str] | None = None) -> dict[str, int]:
        """Set right the volumes of every VM (None: a full pass) or of ``vms`` only."""
        looked = self._look(vms)
        busy = self.busy
        if self._suspects:
            time.sleep(SUSPECT_RECHECK_S)
            again = {volume.vm for key in self._suspects
                     if (volume := self._registry.get(key)) is not None}
            self._look(again)
            busy |= self.busy
            self._suspects.clear()
        self.busy = busy
        self._passes += 1
        return {"thin_vms_looked_at": looked}

    def _look(self, vms: Collection[str] | None) -> int:
        if vms is not None and not vms:
            return 0
        snapshot_at = time.monotonic()
        # No look waits for a VM whose job another call holds (an attach under way, a VM
        # starting): the next quick pass takes that VM up again (``busy``).
        stats_by_vm = dict(self._hypervisor.bulk_stats(domains=vms, nowait=True))
        self.busy = {vm for vm, stats in stats_by_vm.items() if not monitor_answered(stats)}
        read_at = time.monotonic()
        # Allocations read in a short call are dated well enough to measure write rates.
        sampled_at = (snapshot_at + read_at) / 2 if read_at - snapshot_at <= (
            RATE_SAMPLE_MAX_CALL_S) else None
        # Left out of the stats because their QEMU does not answer, not because it is gone.
        unresponsive = self._hypervisor.unresponsive_domains()
        by_vm: dict[str, list[MonitoredVolume]] = defaultdict(list)
        for volume in self._registry.all():
            if vms is None or volume.vm in vms:
                by_vm[volume.vm].append(volume)
        answered = set(stats_by_vm)
        self.running = (answered | (self.running & unresponsive)) if vms is None else (
            (self.running - (set(vms) - unresponsive)) | answered)
        for vm, volumes in by_vm.items():
            try:
                stats = stats_by_vm.get(vm)
                if vm in self.busy:
                    continue
                if stats is None and vm in unresponsive:
                    log.warning("thin reconcile skips VM %s: its QEMU does not answer", vm)
                elif stats is None:
                    self._not_running(volumes, snapshot_at)
                else:
                    self._reconcile_vm(vm, stats, volumes, snapshot_at, sampled_at)
            except BlockplaneError:
                log.exception("thin reconcile of VM %s failed", vm)
        return len(by_vm)

    def _not_running(self, volumes: list[MonitoredVolume], snapshot_at: float) -> None:
        """QEMU is gone, and the thresholds it held with it: they must be armed again."""
        for volume in volumes:
            with self._registry.lock(volume.key):
                current = self._registry.get(volume.key)
                if current is None or self._registry.changed_since(volume.key, snapshot_at):
                    continue
                current = self._pauses.clear(current)
                if current.state is MonitorState.SET:
                    self._registry.save(current, state=MonitorState.UNSET)

    def _reconcile_vm(
        self, vm: str, stats: dict[str, Any], volumes: list[MonitoredVolume], snapshot_at: float,
        sampled_at: float | None,
    ) -> None:
        nodes = chain_nodes(stats)
        domain = self._hypervisor.lookup(vm)
        state = domain_state(stats)
        paused = state is not None and state[0] == PAUSED_STATE and state[1] in ENOSPC_REASONS
        errors = domain.disk_errors() if paused else {}
        for volume in volumes:
            node = find_node(nodes, volume.target, volume.path, volume.libvirt_index)
            if node is None:
                continue
            short = paused and errors.get(volume.target) == DISK_ERROR_NO_SPACE
            with self._registry.lock(volume.key):
                current = self._registry.get(volume.key)
                if current is None or self._registry.changed_since(volume.key, snapshot_at):
                    continue
                current, decision = self._reconcile_volume(current, node, short, domain,
                                                           sampled_at)
            if decision.action in (Action.EXTEND_AND_RESUME, Action.RESUME):
                self._pauses.resolve(volume.key, domain, started=time.monotonic(),
                                     missed_event=decision.missed_event)
            self._extender.update_gauges(current, node.stats.allocation)

    def _reconcile_volume(
        self, volume: MonitoredVolume, node: BlockNode, short: bool, domain: DomainPort,
        sampled_at: float | None,
    ) -> tuple[MonitoredVolume, ReconcileDecision]:
        """Act on everything but an ENOSPC pause, which the caller resolves without the lock."""
        if volume.libvirt_index != node.libvirt_index:
            volume = self._registry.save(volume, libvirt_index=node.libvirt_index)
        volume = self._finish_interrupted_extend(volume, node)
        policy = self._extender.policy(volume)
        decision = reconcile(volume.state, node.stats, short, policy, armed=volume.threshold)
        if self._wait_for_event(volume.key, decision, node):
            return volume, _WAIT
        if decision.missed_event:
            self._metrics.thin_missed_events.inc()
            log.info("thin reconcile of %s/%s: %s", volume.vm, volume.target, decision.reason)
        started = time.monotonic()
        match decision.action:
            case Action.ARM:
                volume = self._extender.arm(volume, domain, policy, publish=True)
            case Action.EXTEND:
                volume = self._extender.extend(volume, domain, started=started,
                                               cause="reconcile",
                                               missed_event=decision.missed_event,
                                               allocation=node.stats.allocation,
                                               observed_at=sampled_at)
            case Action.NONE if sampled_at is not None and node.stats.allocation > 0:
                self._extender.growth.observe(volume.key,
                                              WriteSample(sampled_at, node.stats.allocation))
            case Action.DISABLE:
                volume = self._extender.disable(volume, node.stats.physical, policy)
        return volume, decision

    def _wait_for_event(self, key: VolumeKey, decision: ReconcileDecision, node: BlockNode) -> bool:
        fired_unseen = (decision.action is Action.EXTEND and decision.missed_event
                        and node.stats.threshold is None)
        if fired_unseen and self._event_work_in_flight(key):
            return True  # its event was taken: the handler extends it (a burst: it queues)
        if not fired_unseen or self._passes == 0 or key in self._suspects:
            self._suspects.discard(key)
            return False
        self._suspects.add(key)
        return True

    def _finish_interrupted_extend(
        self, volume: MonitoredVolume, node: BlockNode
    ) -> MonitoredVolume:
        """An extend was recorded as pending; if the volume did grow, only re-arming is left."""
        pending = volume.pending_physical
        if pending is None or node.stats.physical < pending:
            return volume
        physical = node.stats.physical
        self._records.set_volume_physical(volume.pool, volume.volume, physical)
        return self._registry.save(
            volume, state=transition(volume.state, Extended(physical)), physical=physical,
            pending_physical=None, extends=volume.extends + 1, last_extended_at=time.time(),
        )
