"""What a libvirt domain holds, as read from its XML before blockplane manages it.

Owns the value types that ``xml.inventory`` fills and ``vms.adopt_plan`` judges: every ``<disk>``
(whatever its device, bus or source type), its backing chain as libvirt shows it, its IOThread
mapping, throttle filters and ``<iotune>``; the domain's IOThreads and throttle groups. Decides
nothing and must not parse XML, call libvirt or touch the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockplane.model.throttle import ThrottleGroup
from blockplane.model.throttle_limits import ThrottleLimits


@dataclass(frozen=True)
class ChainLink:
    """One image of a disk's backing chain, top first; ``path`` as libvirt names it."""

    path: str
    format: str | None
    source_kind: str


@dataclass(frozen=True)
class DiskInventory:
    """One ``<disk>``. ``path`` is None for a network or an empty drive. ``chain`` starts with
    the top (``path``); ``chain_complete`` is False where libvirt did not show the whole chain
    (the inactive XML), so the images must be asked."""

    target: str
    bus: str
    device: str
    source_type: str
    path: str | None
    format: str | None
    chain: tuple[ChainLink, ...] = ()
    chain_complete: bool = False
    readonly: bool = False
    shareable: bool = False
    queues: int | None = None
    iothread: int | None = None
    queue_mapping: tuple[tuple[int, tuple[int, ...]], ...] = ()
    throttle_groups: tuple[str, ...] = ()
    iotune: ThrottleLimits | None = None
    iotune_group: str | None = None
    network: str | None = None
    mirror_path: str | None = None

    @property
    def iothread_ids(self) -> tuple[int, ...]:
        ids = [iothread for iothread, _ in self.queue_mapping]
        if self.iothread is not None:
            ids.append(self.iothread)
        return tuple(sorted(set(ids)))

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "bus": self.bus,
            "device": self.device,
            "source_type": self.source_type,
            "path": self.path,
            "format": self.format,
            "readonly": self.readonly,
            "chain": [link.path for link in self.chain],
            "iothreads": list(self.iothread_ids),
            "queues": self.queues,
            "throttle_groups": list(self.throttle_groups),
            "iotune": self.iotune.to_dict(nonzero_only=True) if self.iotune else None,
        }


@dataclass(frozen=True)
class DomainInventory:
    name: str
    uuid: str
    vcpus: int
    memory_bytes: int
    iothread_ids: tuple[int, ...]
    throttle_groups: tuple[ThrottleGroup, ...]
    disks: tuple[DiskInventory, ...]

    def disk(self, target: str) -> DiskInventory | None:
        return next((disk for disk in self.disks if disk.target == target), None)
