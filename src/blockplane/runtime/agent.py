"""The composition root: builds the services, owns the event loop and serves the API.

One process per host owns the libvirt connection (an embedded libvirt root can only be held
by one process). Hypervisor events arrive on an asyncio queue and go to one handler per event
type; a periodic reconcile catches whatever was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from blockplane.api.app import create_app
from blockplane.api.auth import ensure_token
from blockplane.api.listeners import check_listen, serve_api, tcp_socket
from blockplane.chain.wiring import ChainServices
from blockplane.config import Settings
from blockplane.facts.host import HostFacts, LibvirtRuntime, gather_host_facts
from blockplane.facts.kernel_probe import ProbeKernel
from blockplane.home import ensure_room_to_start, prepare_home
from blockplane.hypervisor.calls import ALL_DOMAINS, LateResult
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.events import (
    BlockJobEvent,
    BlockThresholdEvent,
    HypervisorEvent,
    IOErrorEvent,
    LifecycleEvent,
)
from blockplane.hypervisor.secrets import SecretStore
from blockplane.iothreads import MappingSupport
from blockplane.iothreads.apply import HostIOThreadLimits, IOThreadApplier
from blockplane.metrics import AgentMetrics
from blockplane.migration.peer_store import PeerStore
from blockplane.migration.peers import PeerService
from blockplane.observe.wiring import ObserveServices
from blockplane.runtime.eventlog import EventLog
from blockplane.storage.ceph_health import CephHealth
from blockplane.storage.pool_volumes import PoolVolumes
from blockplane.storage.pools import PoolService
from blockplane.storage.rbd_pools import RbdPools
from blockplane.storage.volumes import VolumeService
from blockplane.store.database import Database
from blockplane.store.pending import PendingOperations
from blockplane.store.rbd_pools import RbdPoolStore
from blockplane.store.records import Records
from blockplane.thin.monitor import ThinMonitor
from blockplane.throttle.wiring import ThrottleServices
from blockplane.vms.disks import DiskService
from blockplane.vms.lifecycle import VMService, emulator_path
from blockplane.vms.recovery import DiskRecovery

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.hypervisor = Hypervisor(settings.libvirt_uri)
        ensure_room_to_start(settings.paths, self.hypervisor.is_embedded)
        prepare_home(settings.paths, self.hypervisor.is_embedded)
        self.database = Database(settings.paths.database)
        self.records = Records(self.database)
        self.events = EventLog(self.records)
        self.metrics = AgentMetrics()
        self.hypervisor.open()
        self._facts: HostFacts | None = None
        virt_type = self.facts().accel.selected
        self.secrets = SecretStore(self.hypervisor)
        self.secrets.open()  # before any VM with an rbd disk starts on an embedded libvirt
        self.rbd = RbdPools(RbdPoolStore(self.database), self.secrets)
        self.rbd.health.listeners.append(self._ceph_health_observed)
        self.pools = PoolService(settings, self.records, self.events, self.rbd)
        self.volumes = VolumeService(self.pools, self.records, self.events)
        self.vms = VMService(
            settings,
            self.hypervisor,
            self.records,
            self.events,
            "kvm" if virt_type == "kvm" else "qemu",
            emulator_path(),
        )
        self.disks = DiskService(
            self.vms,
            self.pools,
            self.volumes,
            self.records,
            self.events,
            IOThreadApplier(self._iothread_limits()),
            PendingOperations(self.database),
        )
        self.vms.release_disks = self.disks.release_vm
        self.recovery = DiskRecovery(
            self.hypervisor,
            self.records,
            self.disks.pending,
            self.pools,
            self.volumes,
            self.events,
            lambda: [observer.disk_attached for observer in self.disks.observers],
        )
        self.peers = PeerService(PeerStore(self.database), self.events)
        self.throttle = ThrottleServices.build(self.vms, self.disks, self.database, self.events,
                                               self.facts())
        self._queue: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._reconcile_now = asyncio.Event()  # a pass at once, e.g. after a reconnect
        self._handlers: dict[type[HypervisorEvent], Handler] = {
            LifecycleEvent: self._on_lifecycle,
        }
        self.reconcilers: list[Callable[[], object]] = []
        self.reconcilers.append(self.throttle.rescaler.reconcile)
        self.thin = ThinMonitor(
            self.hypervisor, self.pools, self.records, self.database, self.events, self.metrics
        )
        self.disks.observers.append(self.thin)
        self.reconcilers.append(self.thin.reconcile)
        self.on_event(BlockThresholdEvent, self.thin.on_threshold)
        self.on_event(IOErrorEvent, self.thin.on_io_error)
        self.chain = ChainServices.build(
            self.vms,
            self.disks,
            self.pools,
            self.volumes,
            self.records,
            self.database,
            self.events,
            self.thin,
        )
        self.reconcilers.append(self.chain.reconcile)
        self.disks.guards.append(self.chain.jobs.refuse_if_busy)
        self.pool_volumes = PoolVolumes(self.pools, self.volumes, self.records, self.events,
                                        self.chain.volume_references, self.thin.forget)
        self.disks.volume_users = self.chain.volume_references.live_users
        self.on_event(BlockJobEvent, self.chain.events.on_block_job)
        # Last: it reads what every feature above built, and confirms after their reconciles.
        self.observe = ObserveServices.build(
            self.hypervisor,
            self.records,
            self.events,
            self.metrics,
            thin=self.thin,
            jobs=self.chain.jobs,
        )
        self.reconcilers.append(self.observe.confirmer.run)

    def facts(self) -> HostFacts:
        if self._facts is None:
            versions = self.hypervisor.versions()
            try:
                domain_caps: str | None = self.hypervisor.domain_capabilities("qemu")
            except Exception:  # a host without TCG support still reports its versions
                domain_caps = None
            self._facts = gather_host_facts(
                LibvirtRuntime(
                    library_version=versions.library,
                    daemon_version=versions.daemon,
                    uri=versions.uri,
                ),
                domain_caps,
                requested_accel=self.settings.accel,
                linux=ProbeKernel.in_images(self.settings.paths.images),
            )
        return self._facts

    def _iothread_limits(self) -> HostIOThreadLimits:
        facts = self.facts()
        capabilities = facts.capabilities
        blk = capabilities["iothread_vq_mapping"]
        scsi = capabilities["scsi_iothread_vq_mapping"]
        throttled = capabilities["throttle_multi_iothread"]
        rbd = capabilities["rbd_multi_iothread"]
        return HostIOThreadLimits(
            host_cpus=facts.cpus or 1,
            host_cap=self.settings.iothread_cap,
            support_blk=MappingSupport(blk.supported, blk.reason),
            support_scsi=MappingSupport(scsi.supported, scsi.reason),
            support_throttled=MappingSupport(throttled.supported, throttled.reason),
            support_rbd=MappingSupport(rbd.supported, rbd.reason),
        )

    def facts_json(self) -> dict[str, Any]:
        """The host's facts, and the health of each rbd pool's cluster (the last probe)."""
        return {**self.facts().to_json(),
                "ceph": {"pools": [health.to_json() for health in self.rbd.health.all()]}}

    def _ceph_health_observed(self, health: CephHealth) -> None:
        self.metrics.ceph_pool_healthy.labels(health.pool).set(1 if health.healthy else 0)
        self.metrics.ceph_probe_seconds.labels(health.pool).set(health.probe_seconds or 0)
        since = health.unhealthy_since
        self.metrics.ceph_unhealthy_seconds.labels(health.pool).set(
            time.time() - since if since is not None else 0)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.events.bind(loop)
        self.hypervisor.events.attach(loop, self._queue.put_nowait)
        self.hypervisor.on_lost.append(self._hypervisor_lost)
        self.hypervisor.on_reconnected.append(
            lambda attempts: self._hypervisor_reconnected(loop, attempts)
        )
        self.hypervisor.gate.on_late_result.append(lambda late: self._late_result(loop, late))
        token = ensure_token(self.settings.paths.token)
        app = create_app(self, token)
        listener = check_listen(
            self.settings.listen, self.settings.tls_cert, self.settings.tls_key
        )
        unix = self._unix_socket()
        tcp = tcp_socket(listener) if listener is not None else None
        self.settings.paths.pid_file.write_text(f"{self.pid}\n")
        self.events.publish("agent.started", None, pid=self.pid, uri=self.settings.libvirt_uri)
        # Throttle intents first: the disk recovery drops every kind it does not know.
        await asyncio.to_thread(self.throttle.groups.recover)
        await asyncio.to_thread(self.recovery.recover)
        await asyncio.to_thread(self.reconcile_once)
        self.rbd.health.start()
        background = [
            asyncio.create_task(self._dispatch_events()),
            asyncio.create_task(self._reconcile_forever()),
        ]
        try:
            await serve_api(app, unix, tcp, listener)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.settings.paths.socket.unlink(missing_ok=True)
            self.settings.paths.pid_file.unlink(missing_ok=True)
            self.thin.close()
            self.rbd.health.stop()
            self.secrets.close()
            self.hypervisor.close()
            self.database.close()

    def _unix_socket(self) -> socket.socket:
        path = self.settings.paths.socket
        path.unlink(missing_ok=True)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            unix.bind(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        unix.listen(128)
        return unix

    def _hypervisor_lost(self, why: str) -> None:
        self.events.publish("hypervisor.disconnected", None, uri=self.settings.libvirt_uri,
                            reason=why)

    def _hypervisor_reconnected(self, loop: asyncio.AbstractEventLoop, attempts: int) -> None:
        """On the reconnect thread: finish what the outage broke, then reconcile at once."""
        self.events.publish("hypervisor.reconnected", None, uri=self.settings.libvirt_uri,
                            attempts=attempts)
        self.throttle.groups.recover()
        self.recovery.recover_orphans(self.disks.vm_lock)
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._reconcile_now.set)

    def _late_result(self, loop: asyncio.AbstractEventLoop, late: LateResult) -> None:
        """A call abandoned past its deadline returned: finish or undo what its request left
        (the request failed with a timeout, so its intent is still recorded), then reconcile."""
        call = late.call
        self.events.publish(
            "hypervisor.late_result", None if call.domain == ALL_DOMAINS else call.domain,
            call=call.what, waited_on=call.kind.value, seconds=round(late.finished_after_s, 3),
            outcome="failed" if late.error else "ok",
        )
        self.throttle.groups.recover()
        self.recovery.recover_orphans(self.disks.vm_lock)
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._reconcile_now.set)

    def reconcile_once(self) -> None:
        """One pass of every feature's reconcile: the safety net under the events."""
        if not self.hypervisor.check_alive():
            return  # reconnecting; a pass follows as soon as the connection is back
        started = time.monotonic()
        self.observe.reconcile.run(self.reconcilers)
        self.metrics.reconcile_duration.observe(time.monotonic() - started)

    async def _reconcile_forever(self) -> None:
        while True:
            # On a full host one pass can outlast the interval (seconds at 100 VMs under TCG);
            # passes back to back then starve event handling, so idle twice as long as it took.
            last = self.observe.reconcile.last
            pause = max(self.settings.reconcile_interval_s, 2 * last.duration_s if last else 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_now.wait(), pause)
            self._reconcile_now.clear()
            await asyncio.to_thread(self.reconcile_once)

    def on_event(self, event_type: type[HypervisorEvent], handler: Handler) -> None:
        """Route one hypervisor event type to its handler (one handler per type)."""
        if event_type in self._handlers:
            raise ValueError(f"{event_type.__name__} already has a handler")
        self._handlers[event_type] = handler

    async def _dispatch_events(self) -> None:
        while True:
            event = await self._queue.get()
            self.metrics.hypervisor_events.labels(event.kind).inc()
            self.metrics.event_lag.observe(time.monotonic() - event.received_at)
            handler = self._handlers.get(type(event))
            if handler is None:
                continue
            try:
                await handler(event)
            except Exception:
                log.exception("handling %s failed", event)

    async def _on_lifecycle(self, event: LifecycleEvent) -> None:
        if self.records.vm(event.domain) is None:
            return
        await asyncio.to_thread(
            self.events.publish,
            "vm.lifecycle",
            event.domain,
            event=event.event,
            detail=event.detail,
        )


def run_agent(settings: Settings) -> None:
    check_listen(settings.listen, settings.tls_cert, settings.tls_key)  # before anything starts
    agent = Agent(settings)
    asyncio.run(agent.serve())
