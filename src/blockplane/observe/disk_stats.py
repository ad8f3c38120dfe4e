"""Per-disk counters and sizes from one domain's bulk stats (``virConnectGetAllDomainStats``).

Pure parsing of the dict libvirt returns for one domain with ``VIR_DOMAIN_STATS_BLOCK`` and
``VIR_DOMAIN_STATS_IOTHREAD``: the first ``block.N`` of each disk name is its active top (libvirt
lists the top before its backing elements). Must not call libvirt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DiskSample:
    """One disk's counters (monotonic since QEMU started) and sizes, as libvirt reports them."""

    target: str
    path: str
    read_ops: int
    write_ops: int
    read_bytes: int
    write_bytes: int
    read_ns: int
    write_ns: int
    flush_ops: int
    capacity: int
    allocation: int
    physical: int
    threshold: int | None


@dataclass(frozen=True)
class DomainSample:
    vm: str
    state: int | None
    iothreads: int
    disks: tuple[DiskSample, ...]

    def disk(self, target: str) -> DiskSample | None:
        return next((disk for disk in self.disks if disk.target == target), None)


def domain_sample(vm: str, stats: Mapping[str, Any]) -> DomainSample:
    disks: dict[str, DiskSample] = {}
    for number in range(_int(stats.get("block.count"))):
        prefix = f"block.{number}."
        name = stats.get(prefix + "name")
        if not isinstance(name, str) or name in disks:
            continue
        threshold = _int(stats.get(prefix + "threshold"))
        disks[name] = DiskSample(
            target=name,
            path=str(stats.get(prefix + "path", "")),
            read_ops=_int(stats.get(prefix + "rd.reqs")),
            write_ops=_int(stats.get(prefix + "wr.reqs")),
            read_bytes=_int(stats.get(prefix + "rd.bytes")),
            write_bytes=_int(stats.get(prefix + "wr.bytes")),
            read_ns=_int(stats.get(prefix + "rd.times")),
            write_ns=_int(stats.get(prefix + "wr.times")),
            flush_ops=_int(stats.get(prefix + "fl.reqs")),
            capacity=_int(stats.get(prefix + "capacity")),
            allocation=_int(stats.get(prefix + "allocation")),
            physical=_int(stats.get(prefix + "physical")),
            threshold=threshold or None,
        )
    state = stats.get("state.state")
    return DomainSample(
        vm=vm,
        state=state if isinstance(state, int) else None,
        iothreads=_int(stats.get("iothread.count")),
        disks=tuple(disks.values()),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
