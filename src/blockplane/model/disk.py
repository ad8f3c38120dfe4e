"""A VM disk as a device: where its bytes live and how QEMU serves them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from blockplane.model.throttle_limits import ThrottleLimits

Bus = Literal["virtio", "scsi"]
ImageFormat = Literal["qcow2", "raw"]
SourceKind = Literal["file", "block", "network"]

QueueMapping = tuple[tuple[int, tuple[int, ...]], ...]
"""Per IOThread id, the virtqueue ids it serves, in IOThread order."""


@dataclass(frozen=True)
class NetworkHost:
    name: str
    port: int | None = None


@dataclass(frozen=True)
class NetworkSource:
    """An image QEMU opens over the network: ``protocol`` (``rbd``) and ``name``
    (``POOL/IMAGE``), the monitors to ask, and the cephx user with the libvirt secret that
    holds its key (the key itself never appears in the XML)."""

    protocol: str
    name: str
    hosts: tuple[NetworkHost, ...] = ()
    auth_username: str | None = None
    secret_uuid: str | None = None

    @property
    def path(self) -> str:
        """How blockplane names the image everywhere a path goes: ``rbd:POOL/IMAGE``."""
        return f"{self.protocol}:{self.name}"


@dataclass(frozen=True)
class DiskDevice:
    target: str
    bus: Bus
    source: str
    source_kind: SourceKind
    format: ImageFormat
    queues: int | None = None
    iothread: int | None = None
    queue_mapping: QueueMapping = ()
    throttle_groups: tuple[str, ...] = ()
    #: Plain per-disk limits, only where throttle groups are unavailable (libvirt < 11.2).
    iotune: ThrottleLimits | None = None
    iotune_group: str | None = None
    error_policy: str | None = None
    #: ``<driver cache discard io>``: how QEMU serves the disk (chosen by ``vms.disks``).
    cache: str | None = None
    discard: str | None = None
    io: str | None = None
    controller_index: int | None = None
    alias: str | None = None
    #: Set for ``source_kind == "network"``; ``source`` is then ``network.path``.
    network: NetworkSource | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def user_alias(self) -> str:
        return f"ua-bp-{self.target}"


def target_prefix(bus: Bus) -> str:
    return "vd" if bus == "virtio" else "sd"


def next_free_target(bus: Bus, used: set[str]) -> str:
    prefix = target_prefix(bus)
    for index in range(26 * 27):
        name = prefix + _letters(index)
        if name not in used:
            return name
    raise ValueError("no free disk target left")


def _letters(index: int) -> str:
    letters = ""
    index += 1
    while index > 0:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return letters
