"""Step 3, tiered limits: a disk's own IOPS limit under a VM-wide group, fio's rate against the
tightest of the two, then the group lowered live and the new rate.

The limits fio is measured against are read back from the agent (the disk's filter chain and
each group's live limits), never taken from what the tour asked for.
"""

from __future__ import annotations

from typing import Any

from blockplane.cli.demo.figures import StepOutcome, near
from blockplane.cli.demo.session import TourFailure, TourSession
from blockplane.cli.demo.steps.guest_io import RATE_SECONDS, random_read_rate

GROUP = "vm-agg"
TOLERANCE = 0.10
#: Modest rates: a TCG guest costs tens of milliseconds of CPU per I/O on a busy host, and
#: stalls now and then; at these rates the queue in flight carries the limit through.
DISK_IOPS = 100
GROUP_IOPS = 150
LOWERED_GROUP_IOPS = 50


def limits_step(tour: TourSession) -> StepOutcome:
    guest = tour.guest()
    group = tour.put("vms", guest.name, "throttle-groups", GROUP,
                     body={"limits": {"total_iops_sec": GROUP_IOPS}})
    tour.narrator.say(f"VM group {GROUP}: {_limits(group['limits'])} "
                      f"({', '.join(group['changed'])})")
    disk = tour.attach({"size": "256M", "queues": guest.vcpus, "io_threads": 2,
                        "limits": {"total_iops_sec": DISK_IOPS}, "throttle_groups": [GROUP]})
    target, plan = disk["target"], disk["plan"]
    tour.narrator.say(f"attach {target}: {disk['throttle']['reason']}")
    tour.narrator.say(f"IOThreads: {plan['reason']}")

    first_limit, first_chain = _tightest(tour, guest.name, disk)
    tour.narrator.say(f"limits read back: {first_chain}; fio: {RATE_SECONDS} s worth of 4k "
                      "random reads ...")
    first = random_read_rate(tour, f"/dev/{target}", first_limit)
    before = near("IOPS under the per-disk limit", first.iops, first_limit, TOLERANCE, "IOPS",
                  f"tightest limit {first_limit:g}")
    tour.narrator.figure(before)

    changed = tour.put("vms", guest.name, "throttle-groups", GROUP,
                       body={"limits": {"total_iops_sec": LOWERED_GROUP_IOPS}, "live": True})
    targets = [use["target"] for use in changed["disks"]]
    tour.narrator.say(f"live change: {GROUP} -> {_limits(changed['limits'])} "
                      f"({', '.join(changed['changed']) or 'unchanged'}; disks {targets})")
    second_limit, second_chain = _tightest(tour, guest.name, disk)
    tour.narrator.say(f"limits read back: {second_chain}; fio again ...")
    second = random_read_rate(tour, f"/dev/{target}", second_limit)
    after = near("IOPS after the group's live change", second.iops, second_limit, TOLERANCE,
                 "IOPS", f"tightest limit {second_limit:g}")
    tour.narrator.figure(after)

    mapping = plan["mapping"]
    threads = ", ".join(str(thread) for thread, _queues in mapping)
    own = disk["throttle"]["per_disk_limits"].get("total_iops_sec")
    applied = next((step["limits"].get("total_iops_sec") for step in disk["throttle"]["chain"]
                    if step["group"] == GROUP), None)
    title = (f"{target}: {own} IOPS per disk under VM group {GROUP} at {applied}, then "
             f"{GROUP} live to {changed['limits'].get('total_iops_sec')}; its {plan['queues']} "
             f"queues on {len(mapping)} IOThread ({threads}) as limits are applied")
    return StepOutcome(title, f"{first.iops:.0f} IOPS at limit {first_limit:g}, then "
                       f"{second.iops:.0f} at {second_limit:g}", (before, after),
                       "IOPS under the per-disk limit")


def _tightest(tour: TourSession, vm: str, disk: dict[str, Any]) -> tuple[float, str]:
    """The lowest total_iops_sec along the disk's filter chain, from each group's live limits."""
    groups = {entry["group"]: entry for entry in tour.get("vms", vm, "throttle-groups")}
    chain = [step["group"] for step in disk["throttle"]["chain"]]
    limits = []
    for name in chain:
        if name not in groups:
            raise TourFailure(f"group {name} of {disk['target']}'s chain is not on the VM")
        value = groups[name]["limits"].get("total_iops_sec")
        if value:
            limits.append((float(value), name))
    if not limits:
        raise TourFailure(f"{disk['target']} has no IOPS limit along {chain}")
    text = " -> ".join(f"{name} {groups[name]['limits'].get('total_iops_sec')} IOPS"
                       for name in chain)
    return min(limits)[0], text


def _limits(limits: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(limits.items())) or "none"
