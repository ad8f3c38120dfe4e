"""Reading libvirt's bulk stats (``virConnectGetAllDomainStats``) of one domain: the one parser.

Pure parsing of the dict libvirt returns for one domain with the block (and state, IOThread)
groups, backing chain nodes included. Each ``block.N`` is one node of a disk's backing chain,
named by its disk target (``block.N.name``) and libvirt's node index (``block.N.backingIndex``):
``vda[3]`` here means that libvirt index, which is not the node's depth in the chain (the chain
package's positional ``vda[N]`` is; see ``model.chain``). Two views are read from the same
entries: every node with its sizes (``chain_nodes``, for thin provisioning) and the active top of
each disk with its I/O counters (``domain_sample``, for ``top`` and the metrics; libvirt lists a
disk's top before its backing nodes). Must not call libvirt (``Hypervisor.bulk_stats`` makes the
call) or decide anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.model.chain import libvirt_name


@dataclass(frozen=True)
class BlockStats:
    """One node's ``block.N.allocation``, ``block.N.physical`` and ``block.N.threshold``
    (None when absent: never armed, or already fired)."""

    allocation: int
    physical: int
    threshold: int | None = None


@dataclass(frozen=True)
class BlockNode:
    """One ``block.N``: a node of disk ``target``'s backing chain, as libvirt numbers it."""

    target: str
    libvirt_index: int | None
    path: str
    stats: BlockStats

    @property
    def libvirt_name(self) -> str:
        """``vda[1]``: the name thresholds are armed on; the bare target if libvirt gave no
        index."""
        if self.libvirt_index is None:
            return self.target
        return libvirt_name(self.target, self.libvirt_index)


def chain_nodes(stats: Mapping[str, Any]) -> list[BlockNode]:
    """Every ``block.N`` of one domain's stats, in libvirt's order (top of each disk first)."""
    nodes = []
    for prefix, target in _blocks(stats):
        index = stats.get(prefix + "backingIndex")
        nodes.append(
            BlockNode(
                target=target,
                libvirt_index=index if isinstance(index, int) else None,
                path=str(stats.get(prefix + "path", "")),
                stats=BlockStats(
                    allocation=_int(stats.get(prefix + "allocation")),
                    physical=_int(stats.get(prefix + "physical")),
                    threshold=_threshold(stats.get(prefix + "threshold")),
                ),
            )
        )
    return nodes


def find_node(
    nodes: Iterable[BlockNode], target: str, path: str, libvirt_index: int | None = None
) -> BlockNode | None:
    """The node of disk ``target`` holding ``path``; by ``libvirt_index`` when the path is
    unknown."""
    candidates = [node for node in nodes if node.target == target]
    for node in candidates:
        if path and node.path == path:
            return node
    if libvirt_index is not None:
        for node in candidates:
            if node.libvirt_index == libvirt_index:
                return node
    return None


def monitor_answered(stats: Mapping[str, Any]) -> bool:
    """Did QEMU's monitor contribute (sizes, counters)? Not for a domain whose job was busy
    when asked without waiting (``VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT``)."""
    blocks = list(_blocks(stats))
    return not blocks or any(prefix + "wr.reqs" in stats for prefix, _ in blocks)


def domain_state(stats: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(state.state, state.reason)`` as libvirt's numbers, if the stats carry them."""
    state, reason = stats.get("state.state"), stats.get("state.reason")
    if isinstance(state, int) and isinstance(reason, int):
        return state, reason
    return None


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
    """The active top of each disk (its first ``block.N``) with its counters and sizes."""
    disks: dict[str, DiskSample] = {}
    for prefix, target in _blocks(stats):
        if target in disks:
            continue
        disks[target] = DiskSample(
            target=target,
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
            threshold=_threshold(stats.get(prefix + "threshold")),
        )
    state = stats.get("state.state")
    return DomainSample(
        vm=vm,
        state=state if isinstance(state, int) else None,
        iothreads=_int(stats.get("iothread.count")),
        disks=tuple(disks.values()),
    )


def _blocks(stats: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``("block.N.", target)`` of every ``block.N`` that names its disk, in libvirt's order."""
    for number in range(_int(stats.get("block.count"))):
        prefix = f"block.{number}."
        target = stats.get(prefix + "name")
        if isinstance(target, str):
            yield prefix, target


def _threshold(value: object) -> int | None:
    """A write threshold is armed only when positive: libvirt reports 0 (or nothing) for none."""
    number = _int(value)
    return number if number > 0 else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
