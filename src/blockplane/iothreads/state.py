"""A VM's IOThreads as the planner sees them, read from the domain XML, and the report of them.

Owns the translation from parsed XML (``DiskDevice``) into ``iothreads.VMIOThreads`` and the
per-IOThread view that ``blockplane iothreads`` prints, including disagreements with the store.
It decides nothing: planning is ``iothreads.planner``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from blockplane.iothreads import DiskMapping, VMIOThreads
from blockplane.iothreads.model import FIRST_PLANNER_ID
from blockplane.iothreads.views import DiskIOThreadsView, IOThreadsView, IOThreadView, ServedQueues
from blockplane.model.disk import DiskDevice
from blockplane.xml.disk import parse_disks
from blockplane.xml.domain import parse_iothread_ids


def disk_mapping(device: DiskDevice) -> DiskMapping:
    queues = device.queues or 1
    if device.queue_mapping:
        return DiskMapping(device.target, queues, device.queue_mapping, "mapped", device.bus)
    if device.iothread is not None:
        mapping = ((device.iothread, tuple(range(queues))),)
        return DiskMapping(device.target, queues, mapping, "single", device.bus)
    return DiskMapping(device.target, queues, (), "none", device.bus)


def vm_iothreads(domain_xml: str, reserved: Iterable[int] = ()) -> VMIOThreads:
    """``reserved``: ids the planner must neither use nor remove beyond those below 101 (the
    IOThreads an adopted domain already had)."""
    ids = parse_iothread_ids(domain_xml)
    disks = tuple(disk_mapping(device) for device in parse_disks(domain_xml))
    kept = {iothread for iothread in ids if iothread < FIRST_PLANNER_ID} | set(reserved)
    return VMIOThreads(ids, disks, tuple(sorted(kept)))


def iothread_report(
    vm: str, domain_xml: str, stored: Mapping[str, Mapping[str, Any]]
) -> IOThreadsView:
    """Per IOThread the disks and queues it serves, plus every disagreement with ``stored``.

    ``stored`` maps a disk target to the plan saved when it was attached.
    """
    state = vm_iothreads(domain_xml)
    serving: dict[int, list[ServedQueues]] = {iothread: [] for iothread in state.iothread_ids}
    for disk in state.disks:
        for iothread, queues in disk.mapping:
            serving.setdefault(iothread, []).append(ServedQueues(disk.target, queues, disk.mode))
    disagreements = []
    for disk in state.disks:
        plan = stored.get(disk.target)
        if plan is None or "mapping" not in plan:
            continue
        saved = [[iothread, list(queues)] for iothread, queues in plan["mapping"]]
        live = [[iothread, list(queues)] for iothread, queues in disk.mapping]
        if saved != live:
            disagreements.append(
                f"{disk.target}: the store says {saved}, the live domain has {live}"
            )
    for target in sorted(set(stored) - {disk.target for disk in state.disks}):
        disagreements.append(f"{target}: in the store but not in the domain")
    return IOThreadsView(
        vm=vm,
        iothreads=tuple(
            IOThreadView(iothread, tuple(serving[iothread])) for iothread in sorted(serving)
        ),
        disks=tuple(
            DiskIOThreadsView(
                target=disk.target,
                bus=disk.bus,
                mode=disk.mode,
                queues=disk.queues,
                mapping=disk.mapping,
                reason=stored.get(disk.target, {}).get("reason"),
            )
            for disk in state.disks
        ),
        spread=state.spread() if state.iothread_ids else 0,
        disagreements=tuple(disagreements),
    )
