"""Effective I/O limits of each disk, and the IOThread count, read from one domain XML.

A disk's limits are its ``<throttlefilters>`` chain (each filter a ``<throttlegroup>`` of the
domain) or its own ``<iotune>`` (the fallback without throttle groups). QEMU applies every layer,
so the tightest non-zero value of each field is what binds; a group's value is shared by all disks
in the group. Pure: reads the XML through ``xml/``, decides nothing, never calls libvirt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.model.throttle_limits import AVG_FIELDS, ThrottleLimits
from blockplane.xml.disk import parse_disks
from blockplane.xml.domain import parse_iothread_ids
from blockplane.xml.throttle import parse_throttle_groups


@dataclass(frozen=True)
class DiskLimits:
    target: str
    #: The filter chain, first filter first; ``("<iotune>",)`` for plain per-disk limits.
    chain: tuple[str, ...]
    #: Per average field (``total_iops_sec``, ...), the tightest non-zero value; absent: none.
    effective: dict[str, int] = field(default_factory=dict)
    #: Per field, the layer that sets ``effective`` (a group name or ``<iotune>``).
    bound_by: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"chain": list(self.chain), "effective": self.effective, "bound_by": self.bound_by}


@dataclass(frozen=True)
class DomainLimits:
    groups: dict[str, ThrottleLimits]
    disks: dict[str, DiskLimits]
    iothreads: int = 0

    def disk(self, target: str) -> DiskLimits:
        return self.disks.get(target, DiskLimits(target, ()))


IOTUNE_LAYER = "<iotune>"


def domain_limits(domain_xml: str) -> DomainLimits:
    groups = {group.name: group.limits for group in parse_throttle_groups(domain_xml)}
    disks: dict[str, DiskLimits] = {}
    for disk in parse_disks(domain_xml):
        if not disk.target:
            continue
        layers = [(group, groups.get(group, ThrottleLimits())) for group in disk.throttle_groups]
        if disk.iotune is not None:
            layers.append((IOTUNE_LAYER, disk.iotune))
        disks[disk.target] = _effective(disk.target, layers)
    return DomainLimits(groups, disks, len(parse_iothread_ids(domain_xml)))


def _effective(target: str, layers: list[tuple[str, ThrottleLimits]]) -> DiskLimits:
    effective: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    for layer, limits in layers:
        values = limits.to_dict()
        for name in AVG_FIELDS:
            value = values[name]
            if value and (name not in effective or value < effective[name]):
                effective[name] = value
                bound_by[name] = layer
    return DiskLimits(target, tuple(layer for layer, _ in layers), effective, bound_by)
