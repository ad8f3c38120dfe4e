"""``blockplane.plan``: the disk plan for platforms that write their own domain XML. Stable API.

What ``blockplane disk attach`` would apply to a domain, computed in-process by the same
function the agent uses (``vms.disk_plan.plan_disk``), with no agent, no libvirt call and
nothing changed. The host's limits come from its ``blockplane facts --json`` document (or
``GET /v1/facts``)::

    import json, subprocess
    from blockplane.plan import plan_disk

    facts = json.loads(subprocess.run(["blockplane", "facts", "--json"],
                                      capture_output=True, check=True).stdout)
    plan = plan_disk(facts, domain_xml=open("web.xml").read(), size="20G",
                     queues=4, io_threads=2, limits={"total_iops_sec": 300})
    plan.disk_xml           # <disk ...><driver ... queues="4"><iothreads>...</driver>...
    plan.iothreadids_xml    # <iothreadids><iothread id="101"/>...: add these to <iothreadids>
    plan.throttlegroups_xml # <throttlegroups>...: groups to add to the domain
    plan.fallbacks          # why anything asked for was not given, e.g. mapping unsupported

Without the XML, ``vcpus=`` and ``iothread_ids=`` describe the domain. The IOThreads the domain
already has are taken as the platform's and are never used (``reserved_iothreads=[]`` lets the
disk share those >= 101 with earlier plans). Add your own ``<source>`` to ``disk_xml``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockplane.config import DEFAULT_IOTHREAD_CAP
from blockplane.errors import InvalidInput
from blockplane.facts.capabilities import capabilities_from_facts_json
from blockplane.iothreads import MappingSupport
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.storage.sizes import parse_size
from blockplane.vms.disk_plan import (
    DiskDescriptor,
    HostPlanning,
    context_from_xml,
    stand_in_domain,
)
from blockplane.vms.disk_plan import plan_disk as _plan_disk

__all__ = ["DiskPlanResult", "host_planning", "plan_disk"]


@dataclass(frozen=True)
class DiskPlanResult:
    target: str
    disk_xml: str
    driver_xml: str | None
    controller_xml: str | None
    iothreads_to_add: tuple[int, ...]
    iothreadids_xml: str
    throttle_filters: tuple[str, ...]
    throttlegroups_xml: str
    notes: tuple[str, ...]
    fallbacks: tuple[str, ...]
    #: The whole answer, as ``POST /v1/plan/disk`` gives it.
    document: Mapping[str, Any]


def host_planning(facts: Mapping[str, Any], iothread_cap: int = DEFAULT_IOTHREAD_CAP
                  ) -> HostPlanning:
    """The host's limits on IOThreads and I/O limits, from its ``facts --json`` document."""
    capabilities = capabilities_from_facts_json(facts)
    cpus = facts.get("cpus")
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
        raise InvalidInput("the facts document has no valid 'cpus' count", code="facts.invalid")

    def support(name: str) -> MappingSupport:
        return MappingSupport(capabilities[name].supported, capabilities[name].reason)

    return HostPlanning(
        HostIOThreadLimits(
            host_cpus=cpus,
            host_cap=iothread_cap,
            support_blk=support("iothread_vq_mapping"),
            support_scsi=support("scsi_iothread_vq_mapping"),
            support_throttled=support("throttle_multi_iothread"),
        ),
        capabilities["throttle_groups"],
    )


def plan_disk(
    facts: Mapping[str, Any],
    *,
    domain_xml: str | None = None,
    vcpus: int | None = None,
    iothread_ids: Sequence[int] = (),
    reserved_iothreads: Sequence[int] | None = None,
    size: int | str = "1G",
    queues: int | None = None,
    io_threads: int | None = None,
    bus: str = "virtio",
    format: str = "qcow2",
    thin: bool = False,
    block: bool | None = None,
    throttle_groups: Sequence[str] = (),
    limits: Mapping[str, int | str] | None = None,
    iothread_cap: int = DEFAULT_IOTHREAD_CAP,
) -> DiskPlanResult:
    """Plan one disk on the domain ``domain_xml`` (or one of ``vcpus`` with ``iothread_ids``).

    ``block``: whether the image is a block device (default: ``thin``), which sets ``io``.
    Raises ``blockplane.errors.BlockplaneError`` (``code`` says why) for what attach refuses.
    """
    if (domain_xml is None) == (vcpus is None):
        raise InvalidInput("give domain_xml or vcpus", code="plan.invalid")
    xml = domain_xml if domain_xml is not None else stand_in_domain("vm", vcpus or 1,
                                                                     iothread_ids)
    context = context_from_xml(xml, reserved_iothreads=reserved_iothreads)
    descriptor = DiskDescriptor(
        size_bytes=parse_size(size),
        bus=bus,
        format=format,
        thin=thin,
        queues=queues,
        io_threads=io_threads,
        throttle_groups=tuple(throttle_groups),
        limits=dict(limits or {}),
    )
    is_block = thin if block is None else block
    plan = _plan_disk(context, descriptor, host_planning(facts, iothread_cap),
                      "block" if is_block else "file")
    document = plan.to_json()
    fragments = document["xml"]
    return DiskPlanResult(
        target=plan.target,
        disk_xml=fragments["disk"],
        driver_xml=fragments["driver"],
        controller_xml=fragments["controller"],
        iothreads_to_add=tuple(document["iothreads_to_add"]),
        iothreadids_xml=fragments["iothreadids"],
        throttle_filters=tuple(document["throttle_filters"]),
        throttlegroups_xml=fragments["throttlegroups"],
        notes=tuple(document["notes"]),
        fallbacks=tuple(document["fallbacks"]),
        document=document,
    )
