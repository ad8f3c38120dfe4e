"""What ``blockplane thin status`` answers: the monitor's view of each thin volume
(``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.model.view import KEY_IF_SET


@dataclass(frozen=True)
class ThinVolumeView:
    """One monitored volume. ``index`` is libvirt's index of its chain node (``disk`` is
    libvirt's name of it, ``vda[1]``); ``physical``, ``allocation`` and ``threshold`` are
    QEMU's now when ``live`` (read for this answer), ``armed_threshold`` the one the monitor set
    last; ``chunk`` and ``max_physical`` are its base growth step and ceiling (None while its
    pool is unknown).

    Not ``live``: QEMU was not read (the VM is stopped, another call holds its job, or it is
    ``unresponsive``): ``physical`` is the size the monitor recorded last, ``allocation`` and
    ``threshold`` are None, never a mix of old and new figures.

    A disk on an rbd pool is listed too, ``state`` ``not_monitored`` with the ``reason``, and
    None for what only the monitor knows (``running``, and its sizes if the volume is gone)."""

    vm: str
    target: str
    index: int | None
    disk: str
    pool: str
    volume: str
    path: str | None
    running: bool | None
    virtual: int | None
    physical: int | None
    allocation: int | None
    threshold: int | None
    armed_threshold: int | None
    chunk: int | None
    max_physical: int | None
    state: str
    extends: int
    pauses: int
    paused: bool
    refusals: int
    refused: bool
    last_extend_latency_s: float | None
    #: physical, allocation and threshold were read from QEMU for this answer.
    live: bool = False
    #: Its QEMU does not answer (a call to it was abandoned): the figures are the last known.
    unresponsive: bool = False
    #: The adaptive extension (``thin.adaptive``): the write rate (bytes/s) the last extend
    #: measured, the bytes it added and the room it left above the threshold; None before one.
    write_rate: int | None = None
    step: int | None = None
    reserve: int | None = None
    #: Why the volume is listed without a monitor (rbd).
    reason: str | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)
