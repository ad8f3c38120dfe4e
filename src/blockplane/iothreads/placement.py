"""Placement: can another host run a VM's IOThread mappings unchanged?

Owns the per-disk comparison of a VM's mappings with a host's mapping support and CPU count
(for ``vm migrate-check``) and the host-allocator filter built on it. Must not read facts files
or recompute capabilities from versions (the caller passes ``MappingSupport``), nor plan.

A gap is anything the host cannot run as is, with what the policy would give the disk there:
- a ``mapped`` disk on a bus whose mapping the host lacks (it would get one dedicated IOThread);
- a ``mapped`` disk spread over more IOThreads than the host has CPUs (the policy caps a pool
  at the host's CPUs, so it would get fewer). Several disks sharing CPUs is not a gap.
``single`` and ``none`` disks need nothing beyond plain IOThreads, which every host has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blockplane.errors import InvalidInput
from blockplane.iothreads.model import ERROR_CODE, DiskMapping, MappingSupport, VMIOThreads

# Names as in `blockplane facts` capabilities.
FEATURE_BY_BUS = {"virtio": "iothread_vq_mapping", "scsi": "scsi_iothread_vq_mapping"}
CPU_FEATURE = "iothread_cpus"

HostSupport = tuple[str, MappingSupport, MappingSupport, int]
"""(host_id, virtio-blk mapping support, virtio-scsi mapping support, CPUs)."""


@dataclass(frozen=True)
class Gap:
    """One disk feature a host cannot run, and the fallback the disk would get there."""

    target: str
    feature: str
    reason: str
    fallback: str


def migration_gaps(
    vm_disks: Sequence[DiskMapping],
    target_support_blk: MappingSupport,
    target_support_scsi: MappingSupport,
    target_host_cpus: int,
) -> list[Gap]:
    """Every gap between the disks and the host, in disk order; empty means compatible."""
    if isinstance(target_host_cpus, bool) or target_host_cpus < 1:
        raise InvalidInput(
            f"target_host_cpus must be >= 1, got {target_host_cpus}", code=ERROR_CODE
        )
    gaps: list[Gap] = []
    for disk in vm_disks:
        if disk.mode != "mapped":
            continue
        support = target_support_blk if disk.bus == "virtio" else target_support_scsi
        threads = len(disk.mapping)
        if not support.supported:
            gaps.append(
                Gap(
                    disk.target,
                    FEATURE_BY_BUS[disk.bus],
                    f"{disk.queues} queues mapped over {threads} IOThreads; "
                    f"mapping not supported: {support.reason}",
                    f"one dedicated IOThread for all {disk.queues} queues",
                )
            )
        elif threads > target_host_cpus:
            gaps.append(
                Gap(
                    disk.target,
                    CPU_FEATURE,
                    f"mapped over {threads} IOThreads, host has {target_host_cpus} CPUs",
                    f"a mapping over at most {target_host_cpus} IOThreads",
                )
            )
    return gaps


def hosts_that_can_run(vm: VMIOThreads, hosts: Sequence[HostSupport]) -> list[str]:
    """The host-allocator filter: ids of the hosts with no gap, in the order given."""
    return [
        host_id
        for host_id, support_blk, support_scsi, cpus in hosts
        if not migration_gaps(vm.disks, support_blk, support_scsi, cpus)
    ]
