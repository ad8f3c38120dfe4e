"""ENOSPC pauses of VMs on thin volumes: make room, count the pause once, resume safely.

With ``error_policy='enospace'`` a write past the end of a thin volume pauses the VM instead of
failing in the guest. Owns what happens next (``PauseResolver.resolve``): grow the volume if the
failed write needs it, record the pause (once, however many I/O error events it raises), and
resume. Must not decide thresholds; growth goes through the extender.

Two facts of QEMU 10 / libvirt 11.3 shape it (see FIELD-NOTES):
- QEMU rate-limits BLOCK_IO_ERROR to one event per second per disk and delivers the ones it
  held back up to a second late. libvirt marks a *running* VM paused on such a late event, and
  a later resume cannot undo that (QEMU, already running, sends no RESUME). So a VM is resumed
  only once ``IO_ERROR_QUIET_S`` passed since the first I/O error event of the current burst.
- libvirt reports an ENOSPC pause with reason IOERROR or, when QEMU's STOP overtook the late
  error event, UNKNOWN; ``disk_errors()`` then names the disk. Its NO_SPACE entry also stays
  after a resume, so it only counts while the VM is paused.
A VM that pauses again soon after a resume got too little room: each repeat grows the volume by
twice the previous step (1, 2, 4 ... chunks), which also covers qcow2 metadata placed far out.
"""

from __future__ import annotations

import logging
import time

from blockplane.errors import HypervisorError
from blockplane.hypervisor.bulk_stats import chain_nodes, find_node
from blockplane.hypervisor.domain import PAUSED_IOERROR_REASON, PAUSED_UNKNOWN_REASON
from blockplane.metrics import AgentMetrics
from blockplane.store.events import EventPublisher
from blockplane.thin.extender import Extender
from blockplane.thin.monitor_state import MonitorState
from blockplane.thin.monitor_store import MonitoredVolume, VolumeKey
from blockplane.thin.ports import DomainPort, DomainStateView
from blockplane.thin.registry import VolumeRegistry

log = logging.getLogger(__name__)

PAUSE_WAIT_S = 0.5
IO_ERROR_QUIET_S = 1.2
REPAUSE_WINDOW_S = 5.0
_POLL_S = 0.005
ENOSPC_REASONS = (PAUSED_IOERROR_REASON, PAUSED_UNKNOWN_REASON)


def paused_on_io_error(state: DomainStateView) -> bool:
    return state.state == "paused" and state.reason in ENOSPC_REASONS


def wait_until_paused(domain: DomainPort, timeout_s: float = PAUSE_WAIT_S) -> bool:
    """True once the VM is paused on an I/O error; False if it is not within ``timeout_s``
    (QEMU reports the error before its stop request has landed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if paused_on_io_error(domain.state()):
                return True
        except HypervisorError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


class PauseResolver:
    def __init__(
        self,
        registry: VolumeRegistry,
        extender: Extender,
        events: EventPublisher,
        metrics: AgentMetrics,
    ) -> None:
        self._registry = registry
        self._extender = extender
        self._events = events
        self._metrics = metrics
        self._burst_started: dict[str, float] = {}
        self._paused_since: dict[VolumeKey, float] = {}
        self._resumed_at: dict[VolumeKey, float] = {}
        self._repeats: dict[VolumeKey, int] = {}

    def io_error_seen(self, vm: str, received_at: float) -> None:
        """An I/O error event of ``vm`` arrived: it may open a new burst of held-back events."""
        started = self._burst_started.get(vm)
        if started is None or received_at - started > IO_ERROR_QUIET_S:
            self._burst_started[vm] = received_at

    def resolve(
        self, key: VolumeKey, domain: DomainPort, *, started: float, missed_event: bool = False
    ) -> None:
        """``key``'s VM is (about to be) paused on ENOSPC: make room, then resume it.

        Takes the volume's lock itself, and not while waiting. A refused extend (pool full)
        leaves the VM paused; reconcile retries.
        """
        with self._registry.lock(key):
            volume = self._registry.get(key)
            if volume is None or volume.state is MonitorState.DISABLED:
                return
            repeats = self._repeat_count(key)
            if repeats and not paused_on_io_error(domain.state()):
                repeats = 0  # a late duplicate of the pause just resolved, not a new pause
            volume = self._make_room(volume, domain, started, repeats, missed_event)
        if not wait_until_paused(domain):
            return
        with self._registry.lock(key):
            volume = self._registry.get(key) or volume
            volume = self.note_pause(volume)
            if volume.refused or volume.state is MonitorState.EXCEEDED:
                return
        self._wait_for_quiet(volume.vm)
        with self._registry.lock(key):
            volume = self._registry.get(key) or volume
            self._repeats[key] = repeats
            self._resume(volume, domain)

    def note_pause(self, volume: MonitoredVolume) -> MonitoredVolume:
        """Record that ``volume``'s VM is paused on ENOSPC (counted once per pause)."""
        if volume.paused:
            self._paused_since.setdefault(volume.key, time.monotonic())
            return volume
        self._paused_since[volume.key] = time.monotonic()
        volume = self._registry.save(volume, paused=True, pauses=volume.pauses + 1)
        self._metrics.thin_pauses.inc()
        self._events.publish("thin.paused", volume.vm, target=volume.target,
                             volume=volume.volume, physical=volume.physical,
                             refused=volume.refused)
        return volume

    def clear(self, volume: MonitoredVolume) -> MonitoredVolume:
        """The VM stopped: no pause of it is open any more."""
        self._paused_since.pop(volume.key, None)
        return self._registry.save(volume, paused=False) if volume.paused else volume

    def _repeat_count(self, key: VolumeKey) -> int:
        resumed_at = self._resumed_at.get(key)
        if resumed_at is None or time.monotonic() - resumed_at > REPAUSE_WINDOW_S:
            return 0
        return self._repeats.get(key, 0) + 1

    def _make_room(
        self,
        volume: MonitoredVolume,
        domain: DomainPort,
        started: float,
        repeats: int,
        missed_event: bool,
    ) -> MonitoredVolume:
        node = find_node(chain_nodes(domain.block_stats()), volume.target, volume.path,
                         volume.libvirt_index)
        past_end = node is not None and node.stats.allocation >= node.stats.physical
        if not (repeats or past_end or volume.state is MonitorState.EXCEEDED):
            return volume  # grown since the failed write: resuming is enough
        at_least = 0
        if repeats:
            chunk = self._extender.policy(volume).chunk_bytes
            physical = node.stats.physical if node is not None else volume.physical
            at_least = physical + chunk * (1 << (repeats - 1))
        return self._extender.extend(volume, domain, started=started, cause="enospc",
                                     at_least=at_least, missed_event=missed_event,
                                     allocation=node.stats.allocation if node else None,
                                     observed_at=time.monotonic())

    def _wait_for_quiet(self, vm: str) -> None:
        started = self._burst_started.get(vm)
        if started is not None:
            delay = started + IO_ERROR_QUIET_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _resume(self, volume: MonitoredVolume, domain: DomainPort) -> None:
        resumed = False
        try:
            if paused_on_io_error(domain.state()):
                domain.resume()
                resumed = True
        except HypervisorError as error:
            if _still_paused(domain):
                raise
            log.debug("resume of %s not needed: %s", volume.vm, error)
        self._resumed_at[volume.key] = time.monotonic()
        self._extender.growth.restart_rate(volume.key)
        since = self._paused_since.pop(volume.key, None)
        if volume.paused:
            self._registry.save(volume, paused=False)
            self._events.publish(
                "thin.resumed", volume.vm, target=volume.target, volume=volume.volume,
                physical=volume.physical, resumed_by_us=resumed,
                paused_s=None if since is None else round(time.monotonic() - since, 3),
            )


def _still_paused(domain: DomainPort) -> bool:
    try:
        return paused_on_io_error(domain.state())
    except HypervisorError:
        return False
