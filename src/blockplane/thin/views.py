"""What ``blockplane thin status`` answers: the monitor's view of each thin volume
(``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThinVolumeView:
    """One monitored volume. ``index`` is libvirt's index of its chain node (``disk`` is
    libvirt's name of it, ``vda[1]``); ``physical``, ``allocation`` and ``threshold`` are
    QEMU's now when the VM runs, ``armed_threshold`` the one the monitor set last; ``chunk``
    and ``max_physical`` are its growth step and ceiling (None while its pool is unknown)."""

    vm: str
    target: str
    index: int | None
    disk: str
    pool: str
    volume: str
    path: str
    running: bool
    virtual: int
    physical: int
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
    #: Its QEMU does not answer (a call to it was abandoned): the figures are the last known.
    unresponsive: bool = False
