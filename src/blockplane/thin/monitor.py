"""``ThinMonitor``: grows thin volumes on QEMU write-threshold events, before the guest notices.

The service the agent wires up (``runtime.agent``):
- a ``DiskObserver``: a thin disk attached is tracked and its threshold armed on libvirt's name
  of its chain node (``vda[1]``, libvirt's index, not a depth); a disk detached is forgotten;
- ``on_threshold`` (BlockThresholdEvent): acts on the indexed name only, since libvirt may
  also report the bare ``vda``; extends by one chunk at once, serialized per volume, re-reads
  the size, re-arms; at the qcow2 ceiling the volume goes DISABLED;
- ``on_io_error`` (IOErrorEvent, reason ``enospc``): makes room if the failed write needs it,
  then resumes the VM;
- ``reconcile``: the safety net (``reconciler.Reconciler``), every volume, run at start and
  every full reconcile period; ``quick_reconcile``: the same for the VMs where something changed
  since the last look (``watch.ChangeWatch``), run every reconcile period;
- ``status(vm)``: a ``ThinVolumeView`` per volume (``blockplane thin status``, ``GET /v1/thin``);
- ``pre_extend(vm, libvirt_name, needed_bytes) -> int``, the block-job hook: before a commit
  into libvirt's ``vda[N]``, call it with ``needed_bytes = measure_commit(top_path, base_path)``
  (``storage.images``; ``measure_commit(top_path, base_path, *, between=()) -> int`` returns the
  bytes the base may occupy after the commit). It grows the base to
  ``storage.fill_size.fill_size(needed_bytes, ...)`` (that plus one chunk, room for writes
  after a pivot, capped at the ceiling), re-arms it, and returns the new physical size;
  raises NotFound ``thin.not_monitored`` or Conflict ``pool.full``.
  The job code may also ``track``/``forget`` other chain volumes QEMU writes;
- the copy hooks: a thin copy destination is ``track``ed before the mirror starts, armed on
  the mirror's own chain index once it runs (``watch_mirror``), and ``refill``ed (grown to
  ``fill_size`` of what is to be copied, disarmed) before a copy that ran out of room is
  started again. After the pivot ``track`` keeps its record: no gap in monitoring.

Blocking work runs in threads (``asyncio.to_thread``). Must not call libvirt other than
through the ports (``thin.ports``) and must not edit domain XML. The per-volume work is done
by the extender, the pause keeper and the reconciler.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blockplane.errors import BlockplaneError, Conflict, NotFound
from blockplane.hypervisor.bulk_stats import (
    BlockNode,
    chain_nodes,
    find_node,
    monitor_answered,
)
from blockplane.hypervisor.domain import IO_ERROR_ACTION_PAUSE
from blockplane.hypervisor.events import BlockThresholdEvent, IOErrorEvent
from blockplane.metrics import AgentMetrics
from blockplane.model.chain import libvirt_name, parse_libvirt_name
from blockplane.storage.fill_size import fill_size
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records, VolumeRecord
from blockplane.thin.activity import written_bytes
from blockplane.thin.adaptive import MEASURE_AFTER_S, Crossing, crossing_latency
from blockplane.thin.extender import Extender
from blockplane.thin.monitor_state import MonitorState
from blockplane.thin.monitor_store import MonitoredVolume, MonitorStore, VolumeKey
from blockplane.thin.pauses import PauseResolver
from blockplane.thin.ports import DomainPort, HypervisorPort, PoolsPort
from blockplane.thin.reconciler import Reconciler
from blockplane.thin.registry import VolumeRegistry
from blockplane.thin.views import ThinVolumeView
from blockplane.thin.watch import ChangeWatch

log = logging.getLogger(__name__)

EVENT_WORKERS = 16


def live_node(stats: dict[str, dict[str, Any]], volume: MonitoredVolume) -> BlockNode | None:
    """``volume``'s node in QEMU's live stats of its VM; None when the VM is not running or
    its monitor did not answer."""
    if volume.vm not in stats or not monitor_answered(stats[volume.vm]):
        return None
    return find_node(chain_nodes(stats[volume.vm]), volume.target, volume.path,
                     volume.libvirt_index)


class ThinMonitor:
    def __init__(
        self,
        hypervisor: HypervisorPort,
        pools: PoolsPort,
        records: Records,
        database: Database,
        events: EventPublisher,
        metrics: AgentMetrics,
    ) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._registry = VolumeRegistry(MonitorStore(database))
        self._extender = Extender(self._registry, pools, records, events, metrics)
        self._pauses = PauseResolver(self._registry, self._extender, events, metrics)
        self._reconciler = Reconciler(hypervisor, self._registry, self._extender, self._pauses,
                                      records, metrics, self.event_work_in_flight)
        self._watch = ChangeWatch(self._registry, events)
        self._tasks: set[asyncio.Future[None]] = set()
        self._in_flight: dict[VolumeKey, int] = {}
        self._in_flight_lock = threading.Lock()
        # Its own threads: in a burst most of them wait on QEMU (setBlockThreshold), and the
        # shared default executor (CPUs + 4 threads) would queue the rest behind them.
        self._workers = ThreadPoolExecutor(max_workers=EVENT_WORKERS,
                                           thread_name_prefix="thin-event")
        self._adopt_untracked()

    # DiskObserver
    def disk_attached(self, vm: str, target: str, volume: VolumeRecord) -> None:
        if not volume.thin:
            return
        try:
            self._extender.prepare(self.track(vm, target, volume))
        except BlockplaneError:
            log.exception("arming thin volume %s/%s of %s failed; reconcile retries", volume.pool,
                          volume.name, vm)

    def disk_detached(self, vm: str, target: str) -> None:
        for volume in self._registry.all(vm):
            if volume.target == target:
                self.forget(volume.key)

    def track(self, vm: str, target: str, record: VolumeRecord,
              libvirt_index: int | None = None) -> MonitoredVolume:
        """Monitor ``record`` as a volume of ``vm``'s disk ``target``; arm it if running.

        A volume already monitored for the same VM and path (a copy's destination, now the
        disk's top after the pivot) keeps its record, its counters and the threshold QEMU
        holds on its node: monitoring goes on without a gap. ``libvirt_index``: where libvirt
        has it when that is not in the disk's chain (a pull backup's scratch image, ``vda[N]``
        as the backup's description numbers it).
        """
        fresh = MonitoredVolume(vm, target, record.pool, record.name, record.path,
                                record.virtual_bytes, physical=record.physical_bytes,
                                libvirt_index=libvirt_index)
        with self._registry.lock(fresh.key):
            current = self._registry.get(fresh.key)
            if current is not None and (current.vm, current.path) == (vm, record.path):
                volume = self._registry.save(current, target=target,
                                             virtual_bytes=record.virtual_bytes)
            else:
                volume = self._registry.save(fresh)
            domain = self._hypervisor.lookup(vm)
            running = domain.state().state in ("running", "paused", "blocked")
            if running and volume.state is not MonitorState.SET:
                volume = self._extender.arm(volume, domain, publish=True)
            self._extender.update_gauges(volume)
            return volume

    def watch_mirror(
        self, vm: str, key: VolumeKey, libvirt_index: int | None
    ) -> MonitoredVolume | None:
        """A block copy into the tracked volume ``key`` has started: arm its threshold on the
        mirror's own chain node, libvirt's ``<mirror>`` index (``vda[N]``; libvirt 11.3's
        ``setBlockThreshold`` takes it, and its bulk stats list the node under that index).
        With no index given, the node is found in the stats by its path."""
        with self._registry.lock(key):
            volume = self._registry.get(key)
            if volume is None:
                return None
            if libvirt_index is not None and volume.libvirt_index != libvirt_index:
                volume = self._registry.save(volume, libvirt_index=libvirt_index)
            volume = self._extender.arm(volume, self._hypervisor.lookup(vm), publish=True)
            self._extender.update_gauges(volume)
            return volume

    def crossed(self, key: VolumeKey) -> bool:
        """Whether a write threshold of the tracked ``key`` fired since it was tracked: it was
        extended, or an extend is due or was refused (waits for an extend under way)."""
        with self._registry.lock(key):
            volume = self._registry.get(key)
        return volume is not None and (volume.extends > 0 or volume.refused
                                       or volume.state is MonitorState.EXCEEDED)

    def refill(self, key: VolumeKey, required_bytes: int) -> int:
        """Make the tracked volume ``key`` ready to be copied into again from the start: grown
        to ``fill_size(required_bytes)`` (Conflict ``pool.full`` if the pool cannot), and
        disarmed, since the next mirror gets a new chain index. Returns its physical size."""
        with self._registry.lock(key):
            volume = self._registry.get(key)
            if volume is None:
                raise NotFound(f"volume {key[1]} of pool {key[0]} is not monitored",
                               code="thin.not_monitored")
            volume = self._fill(volume, None, required_bytes, "before the copy starts again")
            state = (volume.state if volume.state is MonitorState.DISABLED
                     else MonitorState.UNSET)
            volume = self._registry.save(volume, state=state, libvirt_index=None,
                                         threshold=None, refused=False)
            self._extender.update_gauges(volume)
            return volume.physical

    def monitored(self, vm: str) -> list[MonitoredVolume]:
        """The volumes of ``vm`` being monitored now."""
        return self._registry.all(vm)

    def forget(self, key: VolumeKey) -> None:
        with self._registry.lock(key):
            volume = self._registry.forget(key)
        if volume is not None:
            self._extender.drop_gauges(volume)
            self._extender.growth.forget(key)
            self._watch.forget(key)

    # events
    async def on_threshold(self, event: BlockThresholdEvent) -> None:
        target, libvirt_index = parse_libvirt_name(event.target)
        if libvirt_index is None:
            return
        volume = self._registry.find(event.domain, target, event.path, libvirt_index)
        if volume is not None:
            self._spawn(self._extend_on_threshold, volume.key, libvirt_index, event,
                        asyncio.get_running_loop())

    async def on_io_error(self, event: IOErrorEvent) -> None:
        if event.reason != "enospc" or event.action != IO_ERROR_ACTION_PAUSE:
            return
        self._pauses.io_error_seen(event.domain, event.received_at)
        for volume in self._registry.all(event.domain):
            if volume.path == event.source_path:
                self._spawn(self._resolve_pause, volume.key, volume.vm, event.received_at)
                return

    def _extend_on_threshold(
        self, key: VolumeKey, libvirt_index: int, event: BlockThresholdEvent,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        with self._registry.lock(key):
            volume = self._registry.get(key)
            if volume is None or volume.state is MonitorState.DISABLED:
                return
            if volume.state is MonitorState.SET and volume.threshold != event.threshold:
                return  # re-armed since that threshold fired: already handled
            if volume.libvirt_index != libvirt_index:
                volume = self._registry.save(volume, libvirt_index=libvirt_index)
            domain = self._hypervisor.lookup(volume.vm)
            # A writer not measured yet: the host's count of bytes written, before and after.
            unmeasured = self._extender.growth.rate(key, event.received_at) == 0.0
            counted = (time.monotonic(), written_bytes(volume.path)) if unmeasured else None
            # Where the write that fired it ended: QEMU's allocation at the event.
            crossed_at = event.threshold + event.excess
            volume = self._extender.extend(volume, domain, started=event.received_at,
                                           cause="event", allocation=crossed_at,
                                           observed_at=event.received_at)
            crossing = Crossing(crossed_at, armed_at=time.monotonic())
        if volume.state is not MonitorState.SET or not self._extender.adaptive:
            return
        rate = self._extender.growth.rate(key, time.monotonic())
        if rate > 0:
            self._measure_crossing(key, crossing, rate)
        elif counted is not None and counted[1] is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.call_later, MEASURE_AFTER_S, self._spawn,
                                      self._measure_writer, key, counted, crossing)

    def _measure_writer(
        self, key: VolumeKey, counted: tuple[float, int | None], crossing: Crossing
    ) -> None:
        """``MEASURE_AFTER_S`` after a writer's first extend: its rate from the host's count,
        then the crossing measured at that rate."""
        (before_at, before), volume = counted, self._registry.get(key)
        if volume is None or before is None:
            return
        after = written_bytes(volume.path)
        if after is None:
            return
        rate = max(after - before, 0) / max(time.monotonic() - before_at, 1e-3)
        self._measure_crossing(key, crossing, rate)

    def _measure_crossing(self, key: VolumeKey, crossing: Crossing, rate: float) -> None:
        """After an extend of a writer at ``rate``: its latency from QEMU's crossing
        (``adaptive.crossing_latency``, one stats call for the VM, which does not wait for a
        job another call holds), and a lower threshold now if the reserve armed is too small
        for that latency or that rate."""
        volume = self._registry.get(key)
        if volume is None or rate <= 0:
            return
        asked_at = time.monotonic()
        stats = self._live_stats([volume.vm])
        read_at = (asked_at + time.monotonic()) / 2
        node = live_node(stats, volume)
        latency = None if node is None else crossing_latency(
            crossing, node.stats.allocation, read_at, rate)
        if latency is not None:
            self._extender.growth.note_crossing(key, latency)
        with self._registry.lock(key):
            volume = self._registry.get(key)
            if volume is not None:
                self._extender.reserve_for_writer(volume, self._hypervisor.lookup(volume.vm),
                                                  rate)

    def _resolve_pause(self, key: VolumeKey, vm: str, received_at: float) -> None:
        self._pauses.resolve(key, self._hypervisor.lookup(vm), started=received_at)

    # reconcile, status, hooks
    def reconcile(self) -> dict[str, int]:
        """A full pass: every volume, with one stats call for every running domain."""
        self._watch.restart()
        return self._reconciler.run()

    def quick_reconcile(self) -> dict[str, int]:
        """A quick pass: the volumes of the VMs where something changed since the last look
        (no stats call at all on a host where nothing did)."""
        due = self._watch.due(self._reconciler.running) | self._reconciler.busy
        return self._reconciler.run(due)

    def status(
        self, vm: str | None = None, *, vms: Collection[str] | None = None
    ) -> list[ThinVolumeView]:
        """One row per volume (of ``vm``, or of ``vms``; None: all), with QEMU's live figures
        from one stats call for just those VMs, which does not wait for a VM whose job another
        call holds: its rows then show the recorded figures, as for an unresponsive VM."""
        wanted = {vm} if vm is not None else None if vms is None else set(vms)
        volumes = [volume for volume in self._registry.all()
                   if wanted is None or volume.vm in wanted]
        stats = self._live_stats(None if wanted is None else sorted(wanted)) if volumes else {}
        unresponsive = self._hypervisor.unresponsive_domains()
        rows = []
        for volume in volumes:
            rows.append(self._describe(volume, live_node(stats, volume),
                                       running=volume.vm in stats,
                                       unresponsive=volume.vm in unresponsive))
        return rows

    def _live_stats(self, vms: list[str] | None) -> dict[str, dict[str, Any]]:
        """QEMU's stats of ``vms`` (None: all running) from one call that does not wait for a
        VM whose job another call holds; {} when libvirt cannot answer."""
        try:
            return dict(self._hypervisor.bulk_stats(domains=vms, nowait=True))
        except BlockplaneError:
            return {}

    def pre_extend(self, vm: str, libvirt_name: str, needed_bytes: int) -> int:
        target, libvirt_index = parse_libvirt_name(libvirt_name)
        domain = self._hypervisor.lookup(vm)
        candidates = [n for n in chain_nodes(domain.block_stats()) if n.target == target
                      and (libvirt_index is None or n.libvirt_index == libvirt_index)]
        path = candidates[0].path if candidates else ""
        volume = self._registry.find(vm, target, path, libvirt_index)
        if volume is None:
            raise NotFound(f"{libvirt_name} of VM {vm} is not a monitored thin volume",
                           code="thin.not_monitored")
        with self._registry.lock(volume.key):
            volume = self._registry.get(volume.key) or volume
            return self._fill(volume, domain, needed_bytes, "before the commit").physical

    def _fill(
        self, volume: MonitoredVolume, domain: DomainPort | None, required_bytes: int, when: str
    ) -> MonitoredVolume:
        """Grow ``volume`` (locked by the caller) to ``fill_size(required_bytes)``, the one
        sizing rule for a volume filled by copying; re-armed if ``domain`` is given."""
        policy = self._extender.policy(volume)
        wanted = fill_size(required_bytes, chunk_bytes=policy.chunk_bytes,
                           ceiling_bytes=policy.max_physical_bytes)
        physical = self._extender.backend(volume.pool).physical_size(volume.volume)
        if physical >= wanted or volume.state is MonitorState.DISABLED:
            return volume if volume.physical == physical else self._registry.save(
                volume, physical=physical)
        before = volume.state
        volume = self._extender.extend(volume, domain, started=time.monotonic(),
                                       cause="pre_extend", at_least=wanted)
        if volume.refused:
            # Nothing crossed a threshold: leave the volume as it was for the monitor.
            self._registry.save(volume, state=before, refused=False)
            raise Conflict(f"cannot grow {volume.volume} to {wanted} bytes {when}: pool "
                           f"{volume.pool} would pass its capacity",
                           code="pool.full", volume=volume.volume, needed_bytes=wanted)
        return volume

    def _describe(
        self, volume: MonitoredVolume, node: BlockNode | None, *, running: bool,
        unresponsive: bool = False,
    ) -> ThinVolumeView:
        chunk: int | None = None
        ceiling: int | None = None
        try:
            policy = self._extender.policy(volume)
            chunk, ceiling = policy.chunk_bytes, policy.max_physical_bytes
        except NotFound:
            pass
        index = node.libvirt_index if node is not None else volume.libvirt_index
        # The adaptive extension (thin.adaptive): the write rate the last extend measured, the
        # bytes it added and the room it left above the threshold; None before one.
        growth = self._extender.growth.growth(volume.key)
        return ThinVolumeView(
            vm=volume.vm,
            target=volume.target,
            index=index,
            disk=volume.target if index is None else libvirt_name(volume.target, index),
            pool=volume.pool,
            volume=volume.volume,
            path=volume.path,
            running=running or unresponsive,
            live=node is not None,
            unresponsive=unresponsive,
            virtual=volume.virtual_bytes,
            physical=node.stats.physical if node else volume.physical,
            allocation=node.stats.allocation if node else None,
            threshold=node.stats.threshold if node else None,
            armed_threshold=volume.threshold,
            chunk=chunk,
            max_physical=ceiling,
            state=volume.state.value,
            extends=volume.extends,
            pauses=volume.pauses,
            paused=volume.paused,
            refusals=volume.refusals,
            refused=volume.refused,
            last_extend_latency_s=volume.last_extend_latency_s,
            write_rate=round(growth.rate) if growth else None,
            step=growth.step if growth else None,
            reserve=growth.reserve if growth else None,
        )

    async def settle(self) -> None:
        """Wait until the actions started by events so far are done (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Stop taking event work; what already runs finishes (each step is recorded first)."""
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, work: Callable[..., None], key: VolumeKey, *args: Any) -> None:
        """Run ``work(key, *args)`` in a thread without holding up the agent's event dispatch;
        until it is done, ``key`` has event work in flight."""
        with self._in_flight_lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.get_running_loop().run_in_executor(self._workers, work, key, *args)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, key))

    def _finished(self, task: asyncio.Future[None], key: VolumeKey) -> None:
        self._tasks.discard(task)
        with self._in_flight_lock:
            left = self._in_flight.pop(key, 1) - 1
            if left:
                self._in_flight[key] = left
        if not task.cancelled() and task.exception() is not None:
            log.error("thin monitor action failed", exc_info=task.exception())

    def event_work_in_flight(self, key: VolumeKey) -> bool:
        """An event of ``key`` was taken and its work has not finished (reconcile leaves
        the volume to it)."""
        with self._in_flight_lock:
            return key in self._in_flight

    def _adopt_untracked(self) -> None:
        """Thin disks attached while no monitor recorded them (older state, or a crash)."""
        known = {volume.key for volume in self._registry.all()}
        for vm in self._records.vms():
            for disk in self._records.disks(vm.name):
                record = self._records.volume(disk.pool, disk.volume)
                if record is None or not record.thin or (record.pool, record.name) in known:
                    continue
                self._registry.save(MonitoredVolume(
                    vm.name, disk.target, record.pool, record.name, record.path,
                    record.virtual_bytes, physical=record.physical_bytes))
