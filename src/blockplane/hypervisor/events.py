"""Typed hypervisor events and the bridge from libvirt's event thread into asyncio.

libvirt calls back on its own thread; the callbacks here only build a frozen event object
and hand it to the asyncio loop with ``call_soon_threadsafe``. Nothing here decides what an
event means: the agent's handlers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HypervisorEvent:
    domain: str
    received_at: float = field(default_factory=time.monotonic, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__


LIFECYCLE_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


@dataclass(frozen=True)
class LifecycleEvent(HypervisorEvent):
    event: str
    detail: int


@dataclass(frozen=True)
class BlockThresholdEvent(HypervisorEvent):
    target: str
    path: str
    threshold: int
    excess: int


@dataclass(frozen=True)
class BlockJobEvent(HypervisorEvent):
    target: str
    job_type: int
    status: int


@dataclass(frozen=True)
class IOErrorEvent(HypervisorEvent):
    source_path: str
    device_alias: str
    action: int
    reason: str


@dataclass(frozen=True)
class DeviceRemovedEvent(HypervisorEvent):
    device_alias: str


@dataclass(frozen=True)
class DeviceRemovalFailedEvent(HypervisorEvent):
    device_alias: str


EventSink = Callable[[HypervisorEvent], None]


class EventBridge:
    """Registers libvirt callbacks on a connection and forwards typed events to a sink."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: EventSink | None = None
        self._callback_ids: list[int] = []

    def attach(self, loop: asyncio.AbstractEventLoop, sink: EventSink) -> None:
        self._loop = loop
        self._sink = sink

    def register(self, connection: Any) -> None:
        registrations: list[tuple[int, Callable[..., None]]] = [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD, self._on_block_threshold),
            (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job),
            (libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, self._on_io_error),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device_removed),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED, self._on_removal_failed),
        ]
        for event_id, callback in registrations:
            self._callback_ids.append(
                connection.domainEventRegisterAny(None, event_id, callback, None)
            )

    def unregister(self, connection: Any) -> None:
        for callback_id in self._callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                connection.domainEventDeregisterAny(callback_id)
        self._callback_ids.clear()

    def _emit(self, event: HypervisorEvent) -> None:
        loop, sink = self._loop, self._sink
        if loop is None or sink is None or loop.is_closed():
            log.debug("dropping %s: no event loop attached", event)
            return
        loop.call_soon_threadsafe(sink, event)

    def _on_lifecycle(self, _c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
        self._emit(LifecycleEvent(dom.name(), LIFECYCLE_NAMES.get(event, str(event)), detail))

    def _on_block_threshold(
        self, _c: Any, dom: Any, dev: str, path: str, threshold: int, excess: int, _o: Any
    ) -> None:
        self._emit(BlockThresholdEvent(dom.name(), dev, path, threshold, excess))

    def _on_block_job(
        self, _c: Any, dom: Any, disk: str, job_type: int, status: int, _o: Any
    ) -> None:
        self._emit(BlockJobEvent(dom.name(), disk, job_type, status))

    def _on_io_error(
        self, _c: Any, dom: Any, src: str, alias: str, action: int, reason: str, _o: Any
    ) -> None:
        self._emit(IOErrorEvent(dom.name(), src, alias, action, reason))

    def _on_device_removed(self, _c: Any, dom: Any, alias: str, _o: Any) -> None:
        self._emit(DeviceRemovedEvent(dom.name(), alias))

    def _on_removal_failed(self, _c: Any, dom: Any, alias: str, _o: Any) -> None:
        self._emit(DeviceRemovalFailedEvent(dom.name(), alias))
