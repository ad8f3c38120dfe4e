"""The agent: serves the services ``build_services`` wired, and keeps them in step.

One process per host owns the libvirt connection (an embedded libvirt root can only be held
by one process). Hypervisor events arrive on an asyncio queue and go to one handler per event
type (``Services.handlers``); periodic reconcile passes catch whatever was missed: quick ones
(``Services.quick_reconcilers``, on what changed) every ``reconcile_interval_s``, full ones
(``Services.reconcilers``) every ``full_reconcile_interval_s`` (``runtime.reconcile_schedule``).
Intents a dead agent left are recovered before the API serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from blockplane.api.app import create_app
from blockplane.api.auth import ensure_token
from blockplane.api.listeners import check_listen, serve_api, tcp_socket
from blockplane.config import Settings
from blockplane.failpoints import failpoint_delay
from blockplane.hypervisor.calls import ALL_DOMAINS, CallKind, LateResult
from blockplane.hypervisor.events import HypervisorEvent
from blockplane.runtime import memory
from blockplane.runtime.reconcile_schedule import PassKind, ReconcileSchedule
from blockplane.runtime.services import Services, build_services

log = logging.getLogger(__name__)


class Agent:
    """Serves ``services`` (``build_services``): the API, the event dispatch, the reconcile."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.pid = os.getpid()
        self._queue: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._reconcile_now = asyncio.Event()  # a full pass at once, e.g. after a reconnect
        settings = services.settings
        self.schedule = ReconcileSchedule(settings.reconcile_interval_s,
                                          settings.full_reconcile_interval_s)

    async def serve(self) -> None:
        services = self.services
        settings = services.settings
        loop = asyncio.get_running_loop()
        services.events.bind(loop)
        services.hypervisor.events.attach(loop, self._queue.put_nowait)
        services.hypervisor.on_lost.append(self._hypervisor_lost)
        services.hypervisor.on_reconnected.append(
            lambda attempts: self._hypervisor_reconnected(loop, attempts)
        )
        services.hypervisor.gate.on_late_result.append(
            lambda late: self._late_result(loop, late)
        )
        token = ensure_token(settings.paths.token)
        app = create_app(services, token)
        listener = check_listen(settings.listen, settings.tls_cert, settings.tls_key)
        unix = self._unix_socket()
        tcp = tcp_socket(listener) if listener is not None else None
        settings.paths.pid_file.write_text(f"{self.pid}\n")
        services.events.publish("agent.started", None, pid=self.pid, uri=settings.libvirt_uri)
        await asyncio.to_thread(services.intents.recover)
        await asyncio.to_thread(self.reconcile_once)
        services.rbd.health.start()
        background = [
            asyncio.create_task(self._dispatch_events()),
            asyncio.create_task(self._reconcile_forever()),
            *(asyncio.create_task(task()) for task in services.background),
        ]
        try:
            await serve_api(app, unix, tcp, listener)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            settings.paths.socket.unlink(missing_ok=True)
            settings.paths.pid_file.unlink(missing_ok=True)
            services.migrations.source.close()
            services.thin.close()
            services.rbd.health.stop()
            services.secrets.close()
            services.hypervisor.close()
            services.database.close()

    def _unix_socket(self) -> socket.socket:
        path = self.services.settings.paths.socket
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
        self.services.events.publish("hypervisor.disconnected", None,
                                     uri=self.services.settings.libvirt_uri, reason=why)

    def _hypervisor_reconnected(self, loop: asyncio.AbstractEventLoop, attempts: int) -> None:
        """On the reconnect thread: finish what the outage broke, then reconcile at once."""
        self.services.events.publish("hypervisor.reconnected", None,
                                     uri=self.services.settings.libvirt_uri, attempts=attempts)
        self.services.intents.recover()
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._reconcile_now.set)

    def _late_result(self, loop: asyncio.AbstractEventLoop, late: LateResult) -> None:
        """A call abandoned past its deadline returned: finish or undo what its request left
        (the request failed with a timeout, so its intent is still recorded), then reconcile."""
        call = late.call
        self.services.events.publish(
            "hypervisor.late_result", None if call.domain == ALL_DOMAINS else call.domain,
            call=call.what, waited_on=call.kind.value, seconds=round(late.finished_after_s, 3),
            outcome="failed" if late.error else "ok",
        )
        if call.kind is not CallKind.MONITOR:
            return  # a guest agent command changes nothing the agent records
        self.services.intents.recover()
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._reconcile_now.set)

    def reconcile_once(self, kind: PassKind = PassKind.FULL) -> None:
        """One pass of every feature's reconcile: the safety net under the events."""
        services = self.services
        if not services.hypervisor.check_alive():
            return  # reconnecting; a pass follows as soon as the connection is back
        started = time.monotonic()
        self.schedule.started(kind)
        steps = services.reconcilers if kind is PassKind.FULL else services.quick_reconcilers
        record = services.reconcile_log.run(steps, kind.value)
        services.metrics.reconcile_duration.observe(time.monotonic() - started)
        if kind is PassKind.FULL or record.counts().get("thin_vms_looked_at"):
            memory.trim()  # what the pass (and the events before it) allocated and freed

    async def _reconcile_forever(self) -> None:
        while True:
            # On a full host a full pass can outlast the interval (seconds at 100 VMs under
            # TCG); passes back to back then starve event handling, so idle twice as long.
            last = self.services.reconcile_log.last
            pause = self.schedule.pause_s(last.duration_s if last else None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_now.wait(), pause)
            kind = self.schedule.next_kind(forced_full=self._reconcile_now.is_set())
            self._reconcile_now.clear()
            await asyncio.to_thread(self.reconcile_once, kind)

    async def _dispatch_events(self) -> None:
        metrics, handlers = self.services.metrics, self.services.handlers
        while True:
            event = await self._queue.get()
            # Tests hold event delivery here to prove the reconcile passes catch what it missed.
            held = failpoint_delay(f"events.dispatch.{event.kind}")
            if held:
                await asyncio.sleep(held)
            metrics.hypervisor_events.labels(event.kind).inc()
            metrics.event_lag.observe(time.monotonic() - event.received_at)
            handler = handlers.get(type(event))
            if handler is None:
                continue
            try:
                await handler(event)
            except Exception:
                log.exception("handling %s failed", event)


def run_agent(settings: Settings) -> None:
    check_listen(settings.listen, settings.tls_cert, settings.tls_key)  # before anything starts
    memory.tune_allocator()  # before libvirt starts a thread per VM
    asyncio.run(Agent(build_services(settings)).serve())
