"""Step 2, IOThread mapping: one unthrottled disk with a queue per vCPU spread over 2 IOThreads,
as the agent answered, as libvirt's live XML has it, and as the guest sees it; then the same
VM checked against a host with older QEMU and libvirt (gating: each gap with its fallback).

The disk has no I/O limits on purpose: a throttled disk keeps all its queues on one IOThread
(the QEMU throttle-group deadlock, capability ``throttle_multi_iothread``), which the limits
step shows.
"""

from __future__ import annotations

import copy

from blockplane.cli.demo.figures import StepOutcome, equal, exactly, measured
from blockplane.cli.demo.session import TourFailure, TourSession
from blockplane.xml.disk import parse_disks

IO_THREADS = 2
#: The host to check against: Debian 12's own QEMU and libvirt, too old for the mapping.
OLDER_HOST = {"qemu": "7.2.0", "libvirt": "9.0.0"}


def iothreads_step(tour: TourSession) -> StepOutcome:
    guest = tour.guest()
    disk = tour.attach({"size": "256M", "queues": guest.vcpus, "io_threads": IO_THREADS})
    target, plan = disk["target"], disk["plan"]
    tour.narrator.say(f"attach {target}: queues={guest.vcpus} io_threads={IO_THREADS}")
    tour.narrator.say(f"agent: {plan['reason']}")
    answered = {int(thread): [int(q) for q in queues] for thread, queues in plan["mapping"]}

    live = next((d for d in parse_disks(tour.text("vms", guest.name, "xml"))
                 if d.target == target), None)
    if live is None:
        raise TourFailure(f"{target} is not in the live domain XML")
    live_mapping = {thread: list(queues) for thread, queues in live.queue_mapping}
    tour.narrator.rows(("IOThread", "queues (agent's answer)", "queues (live libvirt XML)"), [
        (str(thread), " ".join(map(str, answered.get(thread, []))),
         " ".join(map(str, live_mapping.get(thread, []))))
        for thread in sorted(set(answered) | set(live_mapping))])

    device = f"/sys/block/{target}/mq"
    listing = tour.sh(f"ls {device}; echo --; for q in {device}/*; do "
                      "echo \"$(basename $q): cpus $(cat $q/cpu_list)\"; done").split("--\n")
    guest_queues = len(listing[0].split())
    tour.narrator.say(f"guest: {guest_queues} queues in {device}/")
    for line in listing[1].strip().splitlines():
        tour.narrator.say(f"guest {device}/{line}")

    throttled = tour.facts()["capabilities"].get("throttle_multi_iothread", {})
    if not throttled.get("supported", True):
        tour.narrator.note("with I/O limits a disk would get one IOThread for all its queues: "
                           f"{throttled.get('reason')}")

    gaps = _gaps_on_an_older_host(tour, guest.name, target)
    queues = int(plan["queues"])
    figures = (
        exactly("queues the guest sees", guest_queues, queues, basis="queues applied"),
        exactly("queues in the live XML", live.queues or 0, queues, basis="queues applied"),
        exactly("IOThreads in the live XML", len(live_mapping), len(answered),
                basis="IOThreads in the answer"),
        equal("queue mapping in the live XML", _mapping_text(live_mapping),
              _mapping_text(answered), basis="the agent's answer"),
        measured(f"gaps on QEMU {OLDER_HOST['qemu']} / libvirt {OLDER_HOST['libvirt']}",
                 len(gaps)),
    )
    threads = ", ".join(str(thread) for thread in sorted(live_mapping)) or "none"
    title = (f"{target}: {queues} queues over {len(live_mapping)} IOThreads ({threads}) on a "
             f"{guest.vcpus}-vCPU guest, {plan['mode']}, no I/O limits")
    return StepOutcome(title, f"the guest sees {guest_queues} queues; live XML = answer",
                       figures, "queues the guest sees")


def _gaps_on_an_older_host(tour: TourSession, vm: str, target: str) -> list[dict[str, str]]:
    other = copy.deepcopy(tour.facts())
    other["qemu"]["version"] = OLDER_HOST["qemu"]
    other["libvirt"]["version"] = OLDER_HOST["libvirt"]
    check = tour.post("vms", vm, "migrate-check", body={"facts": other})
    gaps = [gap for gap in check["gaps"] if gap["target"] == target]
    tour.narrator.say(f"gating: on QEMU {OLDER_HOST['qemu']} / libvirt {OLDER_HOST['libvirt']} "
                      f"{target} would have {len(gaps)} gap(s)")
    for gap in gaps:
        tour.narrator.note(f"{gap['feature']}: {gap['reason']}; fallback: {gap['fallback']}")
    return gaps


def _mapping_text(mapping: dict[int, list[int]]) -> str:
    return " ".join(f"{thread}:{','.join(map(str, queues))}"
                    for thread, queues in sorted(mapping.items()))
