"""The actions on one thin volume: extend, arm the write threshold, disable.

Each action records what it is about to do (``VolumeRegistry.save``) before doing it, then
publishes what it did as a ``thin.*`` event and in the metrics. Callers hold the volume's lock
(``VolumeRegistry.lock``); nothing here takes it. Owns the growth policy of a volume (its pool's
chunk and utilization, capped at ``qcow2_max_physical``), the per-volume write rates and extend
latencies that size each step (``thin.adaptive``: one chunk at least, more for a fast writer),
and a cache of pool backends, so the hot path forks nothing. Must not decide *whether* to act
(``monitor_state`` and the monitor do) and must not resume VMs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from blockplane.errors import Conflict
from blockplane.failpoints import failpoint
from blockplane.hypervisor.bulk_stats import chain_nodes, find_node
from blockplane.metrics import AgentMetrics
from blockplane.model.chain import libvirt_name
from blockplane.storage.backends.base import VolumeBackend, align_up
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.store.events import EventPublisher
from blockplane.store.records import PoolRecord, Records
from blockplane.thin.adaptive import (
    Growth,
    GrowthTracker,
    Step,
    WriteSample,
    adaptive_step,
    reserve_for,
    unmeasured_reserve,
)
from blockplane.thin.monitor_state import (
    Armed,
    Extended,
    GrowthPolicy,
    MonitorState,
    ReachedCap,
    transition,
)
from blockplane.thin.monitor_store import MonitoredVolume
from blockplane.thin.ports import DomainPort, PoolsPort
from blockplane.thin.registry import VolumeRegistry

log = logging.getLogger(__name__)


class Extender:
    def __init__(
        self,
        registry: VolumeRegistry,
        pools: PoolsPort,
        records: Records,
        events: EventPublisher,
        metrics: AgentMetrics,
    ) -> None:
        self._registry = registry
        self._pools = pools
        self._records = records
        self._events = events
        self._metrics = metrics
        self._backends: dict[str, tuple[PoolRecord, VolumeBackend]] = {}
        self.growth = GrowthTracker()
        #: ``BLOCKPLANE_THIN_STEP=fixed``: VDSM's fixed chunk, to compare (``bench.thin``).
        self.adaptive = os.environ.get("BLOCKPLANE_THIN_STEP", "adaptive") != "fixed"

    def policy(self, volume: MonitoredVolume) -> GrowthPolicy:
        pool = self._pools.get(volume.pool)
        reserve = self.growth.reserve(volume.key)
        if reserve is None:
            reserve = self._unmeasured_reserve(pool.chunk_bytes, pool.utilization_pct)
        return GrowthPolicy(pool.chunk_bytes, pool.utilization_pct,
                            qcow2_max_physical(volume.virtual_bytes), reserve_bytes=reserve)

    def prepare(self, volume: MonitoredVolume) -> None:
        """Look up the volume's backend and device now, at attach, so that its first extend,
        which a guest writing flat out waits on, does not: a loop pool learns its devices from
        sysfs then (75 ms of a first extend's 118 ms in ``bench.thin``, 444 loop devices)."""
        self.backend(volume.pool).physical_size(volume.volume)

    def backend(self, pool_name: str) -> VolumeBackend:
        """The pool's backend, rebuilt only when its record (e.g. its capacity) changed."""
        record = self._pools.get(pool_name)
        cached = self._backends.get(pool_name)
        if cached is None or cached[0] != record:
            cached = (record, self._pools.backend(record))
            self._backends[pool_name] = cached
        return cached[1]

    def extend(
        self,
        volume: MonitoredVolume,
        domain: DomainPort | None,
        *,
        started: float,
        cause: str,
        at_least: int = 0,
        missed_event: bool = False,
        allocation: int | None = None,
        observed_at: float | None = None,
    ) -> MonitoredVolume:
        """Grow by the adaptive step (or to ``at_least``, in whole chunks), then re-arm or
        disable.

        ``started`` is the ``time.monotonic()`` of the event (or decision) this answers; the
        latency to the re-armed threshold is measured from it. ``allocation``: QEMU's
        allocation, when the caller knows it; with the moment it was read (``observed_at``)
        it also measures the write rate that sizes the step. A pool.full refusal is recorded
        and published, and returned as ``refused=True``; the state stays EXCEEDED.
        """
        policy = self.policy(volume)
        backend = self.backend(volume.pool)
        physical = backend.physical_size(volume.volume)
        if physical >= policy.max_physical_bytes:
            return self.disable(volume, physical, policy)
        if allocation is not None and observed_at is not None:
            rate = self.growth.observe(volume.key, WriteSample(observed_at, allocation))
        else:
            rate = self.growth.rate(volume.key, time.monotonic())
        if not self.adaptive:
            rate = 0.0
        step = self._step(volume, policy, physical, allocation, rate)
        wanted = step.physical
        if at_least > wanted:
            wanted = min(align_up(at_least, policy.chunk_bytes), policy.max_physical_bytes)
        state = volume.state
        if state is not MonitorState.EXCEEDED:
            state = MonitorState.EXCEEDED
        volume = self._registry.save(volume, state=state, physical=physical,
                                     pending_physical=wanted)
        try:
            grown_to, step = self._grow(volume, backend, policy, step, wanted, allocation,
                                        at_least)
        except Conflict as error:
            if error.code != "pool.full":
                raise
            return self._refused(volume, error, wanted - physical)
        failpoint("thin.extend.after_grow")  # grown, not recorded: reconcile finishes it
        self.growth.grown(volume.key, Growth(rate, grown_to - physical, step.reserve))
        policy = self.policy(volume)
        self._records.set_volume_physical(volume.pool, volume.volume, grown_to)
        volume = self._registry.save(
            volume,
            state=transition(volume.state, Extended(grown_to)),
            physical=grown_to,
            pending_physical=None,
            extends=volume.extends + 1,
            refused=False,
            last_extended_at=time.time(),
        )
        failpoint("thin.extend.after_record")  # recorded, not re-armed: reconcile arms it
        if grown_to >= policy.max_physical_bytes:
            volume = self.disable(volume, grown_to, policy)
        elif domain is not None:
            volume = self.arm(volume, domain, policy)
        latency = time.monotonic() - started
        self.growth.note_latency(volume.key, latency)
        volume = self._registry.save(volume, last_extend_latency_s=latency)
        self._metrics.thin_extend_latency.labels(cause).observe(latency)
        self._metrics.thin_extends.labels(cause).inc()
        self.update_gauges(volume)
        self._events.publish(
            "thin.extended", volume.vm, target=volume.target, index=volume.libvirt_index,
            volume=volume.volume, pool=volume.pool, from_bytes=physical, to_bytes=grown_to,
            threshold=volume.threshold, latency_s=round(latency, 4), cause=cause,
            missed_event=missed_event, rate_bytes_s=round(rate), step_bytes=grown_to - physical,
            reserve_bytes=step.reserve,
        )
        return volume

    def _step(
        self,
        volume: MonitoredVolume,
        policy: GrowthPolicy,
        physical: int,
        allocation: int | None,
        rate: float,
        pool_free: int | None = None,
    ) -> Step:
        return adaptive_step(
            physical=physical, allocation=allocation, rate=rate,
            latency_s=self.growth.latency_s(volume.key), chunk=policy.chunk_bytes,
            utilization_pct=policy.utilization_pct, ceiling=policy.max_physical_bytes,
            pool_free=pool_free,
            unmeasured=self._unmeasured_reserve(policy.chunk_bytes, policy.utilization_pct),
        )

    def _unmeasured_reserve(self, chunk: int, utilization_pct: int) -> int:
        """The least reserve of a writer nobody measured; 0 (VDSM's mark) in fixed mode."""
        return unmeasured_reserve(chunk, utilization_pct) if self.adaptive else 0

    def _grow(
        self, volume: MonitoredVolume, backend: VolumeBackend, policy: GrowthPolicy, step: Step,
        wanted: int, allocation: int | None, at_least: int,
    ) -> tuple[int, Step]:
        """Grow to ``wanted``; a step of several chunks that the pool refuses is cut to what
        the pool has free (its volumes are summed only then, not on every extend)."""
        try:
            return backend.grow(volume.volume, wanted), step
        except Conflict as error:
            chunk = policy.chunk_bytes
            if (error.code != "pool.full" or at_least > step.physical
                    or step.physical - volume.physical <= chunk):
                raise
            free = backend.capacity.free_bytes(backend.used_bytes())
            if free is None or free < chunk:
                raise
            smaller = self._step(volume, policy, volume.physical, allocation, step.rate, free)
            if smaller.physical >= wanted:
                raise
            self._registry.save(volume, pending_physical=smaller.physical)
            return backend.grow(volume.volume, smaller.physical), smaller

    def reserve_for_writer(
        self, volume: MonitoredVolume, domain: DomainPort, rate: float
    ) -> MonitoredVolume:
        """A writer measured at ``rate`` (bytes/s) needs more room above the armed threshold
        than the last extend left (it did not know the rate): arm it lower, now. If the guest
        passed the new mark already, QEMU fires at its next write and the extend that follows
        knows the rate."""
        if not self.adaptive or volume.state is not MonitorState.SET or volume.threshold is None:
            return volume
        policy = self.policy(volume)
        reserve = reserve_for(rate, self.growth.latency_s(volume.key), policy.chunk_bytes,
                              policy.utilization_pct)
        if reserve <= volume.physical - volume.threshold or reserve >= volume.physical:
            return volume
        last = self.growth.growth(volume.key)
        self.growth.grown(volume.key, Growth(rate, last.step if last else 0, reserve))
        return self.arm(volume, domain, publish=True)

    def arm(
        self,
        volume: MonitoredVolume,
        domain: DomainPort,
        policy: GrowthPolicy | None = None,
        *,
        publish: bool = False,
    ) -> MonitoredVolume:
        """Set the threshold where it belongs for the current size (recorded first).

        Leaves the volume as it is when no threshold fits (the caller should extend) or its
        place in the chain is unknown (not running: reconcile arms it later).
        """
        policy = policy or self.policy(volume)
        threshold = policy.threshold(volume.physical)
        if threshold <= 0 or volume.state in (MonitorState.EXCEEDED, MonitorState.DISABLED):
            return volume
        if volume.libvirt_index is None:
            volume = self.locate(volume, domain)
            if volume.libvirt_index is None:
                return volume
        volume = self._registry.save(volume, state=transition(volume.state, Armed(threshold)),
                                     threshold=threshold)
        name = libvirt_name(volume.target, volume.libvirt_index or 0)
        domain.set_block_threshold(name, threshold)
        self.update_gauges(volume)
        if publish:
            self._events.publish("thin.armed", volume.vm, target=volume.target,
                                 index=volume.libvirt_index, volume=volume.volume,
                                 threshold=threshold, physical=volume.physical)
        return volume

    def locate(self, volume: MonitoredVolume, domain: DomainPort) -> MonitoredVolume:
        """Find the volume's libvirt index from the domain's block stats (by its path)."""
        node = find_node(chain_nodes(domain.block_stats()), volume.target, volume.path)
        if node is None or node.libvirt_index == volume.libvirt_index:
            return volume
        return self._registry.save(volume, libvirt_index=node.libvirt_index)

    def disable(
        self, volume: MonitoredVolume, physical: int, policy: GrowthPolicy
    ) -> MonitoredVolume:
        volume = self._registry.save(volume, state=transition(volume.state, ReachedCap()),
                                     physical=physical, pending_physical=None, threshold=None)
        self.update_gauges(volume)
        self._events.publish("thin.disabled", volume.vm, target=volume.target,
                             volume=volume.volume, physical=physical,
                             max_physical=policy.max_physical_bytes)
        return volume

    def _refused(self, volume: MonitoredVolume, error: Conflict, extra: int) -> MonitoredVolume:
        first = not volume.refused
        volume = self._registry.save(volume, pending_physical=None, refused=True,
                                     refusals=volume.refusals + int(first))
        if first:
            log.warning("thin extend of %s/%s refused: %s", volume.pool, volume.volume, error)
            self._metrics.thin_extend_refusals.inc()
            self._events.publish(
                "thin.extend_refused", volume.vm, target=volume.target, volume=volume.volume,
                pool=volume.pool, code=error.code, message=error.message,
                requested_bytes=extra,
            )
        return volume

    def update_gauges(self, volume: MonitoredVolume, allocation: int | None = None) -> None:
        labels = (volume.vm, volume.target, volume.volume)
        self._metrics.thin_physical_bytes.labels(*labels).set(volume.physical)
        self._metrics.thin_threshold_bytes.labels(*labels).set(
            volume.threshold if volume.state is MonitorState.SET and volume.threshold else 0
        )
        if allocation is not None:
            self._metrics.thin_allocation_bytes.labels(*labels).set(allocation)

    def drop_gauges(self, volume: MonitoredVolume) -> None:
        labels = (volume.vm, volume.target, volume.volume)
        for gauge in (self._metrics.thin_physical_bytes, self._metrics.thin_allocation_bytes,
                      self._metrics.thin_threshold_bytes):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
