"""``vm migrate-check``: can another host run this VM's disk features as they are?

Owns turning another host's ``facts --json`` document and this VM's live XML into the list of
gaps. The IOThread comparison is ``iothreads.placement``; this adds the other disk features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blockplane.errors import InvalidInput
from blockplane.facts.capabilities import capabilities_from_facts_json
from blockplane.iothreads import MappingSupport, migration_gaps
from blockplane.iothreads.placement import Gap
from blockplane.iothreads.state import vm_iothreads
from blockplane.vms.views import MigrateCheckView
from blockplane.xml.disk import parse_disks


def migrate_check(vm: str, domain_xml: str, target_facts: Mapping[str, Any]) -> MigrateCheckView:
    capabilities = capabilities_from_facts_json(target_facts)
    cpus = target_facts.get("cpus")
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
        raise InvalidInput("the facts file has no valid 'cpus' count", code="facts.invalid")
    blk = capabilities["iothread_vq_mapping"]
    scsi = capabilities["scsi_iothread_vq_mapping"]
    state = vm_iothreads(domain_xml)
    gaps = migration_gaps(
        state.disks,
        MappingSupport(blk.supported, blk.reason),
        MappingSupport(scsi.supported, scsi.reason),
        cpus,
    )
    for device in parse_disks(domain_xml):
        throttle = capabilities["throttle_groups"]
        if device.throttle_groups and not throttle.supported:
            gaps.append(
                Gap(
                    target=device.target,
                    feature="throttle_groups",
                    reason=throttle.reason,
                    fallback="none: a multi-tier chain cannot run there (a single tier could "
                    "become <iotune>)",
                )
            )
        threshold = capabilities["block_threshold"]
        if device.error_policy == "enospace" and not threshold.supported:
            gaps.append(
                Gap(
                    target=device.target,
                    feature="block_threshold",
                    reason=threshold.reason,
                    fallback="the thin volume would only grow after an ENOSPC pause",
                )
            )
    return MigrateCheckView(vm, compatible=not gaps, gaps=tuple(gaps))
