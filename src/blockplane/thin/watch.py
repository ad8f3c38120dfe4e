"""Which VMs a quick reconcile pass must ask QEMU about: those where something changed.

A VM is due when, since the last look:
- one of its thin volumes was written (``thin.activity``: the host's own counters, so a
  threshold crossed while its event is lost or held up is still found);
- the event log names it (a disk attached, the VM started or stopped, a job, a snapshot), other
  than the thin monitor's own ``thin.*`` events, which tell of what it just did;
- or one of its volumes is not at rest: an extend pending or refused, a pause open, a volume
  left unarmed while its VM runs.

Everything else waits for the next full pass, which starts the watch over (``restart``). Must not
call libvirt or act on a volume.
"""

from __future__ import annotations

from collections.abc import Collection

from blockplane.store.events import EventPublisher
from blockplane.thin.activity import WriteActivity
from blockplane.thin.monitor_state import MonitorState
from blockplane.thin.monitor_store import MonitoredVolume, VolumeKey
from blockplane.thin.registry import VolumeRegistry

EVENTS_PER_LOOK = 1000


class ChangeWatch:
    def __init__(self, registry: VolumeRegistry, events: EventPublisher) -> None:
        self._registry = registry
        self._events = events
        self._activity = WriteActivity()
        self._event_mark = 0

    def restart(self) -> None:
        """A full pass is about to look at everything: count changes from now on."""
        newest = self._events.history(after=self._event_mark, limit=1)
        if newest:
            self._event_mark = newest[-1].id
        self._activity.refresh()
        for volume in self._registry.all():
            self._activity.written(volume.key, volume.path)

    def due(self, running: Collection[str]) -> set[str]:
        """The VMs to look at now (``running``: those whose QEMU answered the last look)."""
        volumes = self._registry.all()
        named = self._named_since_last_look()
        if named is None:
            return {volume.vm for volume in volumes}
        due = set()
        for volume in volumes:
            written = (volume.state is not MonitorState.DISABLED
                       and self._activity.written(volume.key, volume.path))
            if written or volume.vm in named or unsettled(volume, running):
                due.add(volume.vm)
        return due

    def forget(self, key: VolumeKey) -> None:
        self._activity.forget(key)

    def _named_since_last_look(self) -> set[str] | None:
        """VMs the event log names since the last look; None if too much happened to tell."""
        newer = self._events.history(after=self._event_mark, limit=EVENTS_PER_LOOK)
        if newer:
            self._event_mark = newer[-1].id
        if len(newer) == EVENTS_PER_LOOK:
            return None
        return {event.vm for event in newer
                if event.vm is not None and not event.type.startswith("thin.")}


def unsettled(volume: MonitoredVolume, running: Collection[str]) -> bool:
    """Something is left to do for ``volume`` even if nothing else happens."""
    if volume.state is MonitorState.EXCEEDED or volume.paused or volume.refused:
        return True
    if volume.pending_physical is not None:
        return True
    return volume.vm in running and volume.state is not MonitorState.DISABLED and (
        volume.state is MonitorState.UNSET or volume.libvirt_index is None)
