"""What ``blockplane iothreads`` answers: which IOThread serves which queues of which disk, and
where the live domain disagrees with the plans on record (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass

#: Per IOThread id, the virtqueue ids it serves.
Mapping = tuple[tuple[int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class ServedQueues:
    disk: str
    queues: tuple[int, ...]
    mode: str


@dataclass(frozen=True)
class IOThreadView:
    id: int
    serves: tuple[ServedQueues, ...]


@dataclass(frozen=True)
class DiskIOThreadsView:
    """One disk's queues and mapping; ``reason``: why its plan was chosen, as recorded."""

    target: str
    bus: str
    mode: str
    queues: int
    mapping: Mapping
    reason: str | None


@dataclass(frozen=True)
class IOThreadsView:
    vm: str
    iothreads: tuple[IOThreadView, ...]
    disks: tuple[DiskIOThreadsView, ...]
    spread: int
    disagreements: tuple[str, ...]
