"""Step 7, several hosts: a lab of two simulated hosts whose agents are each other's peers over
pinned TLS; the Linux test guest, booted on host1 while the steps before run, gets a thin disk
under a throttle group and a disk mapped over 2 IOThreads, is checked against host2's live facts,
and live-migrates there and back while it writes (``steps.lab_guest``), with the destination's
mapping, groups and thin monitoring read back (``steps.migration``) and every chunk it wrote
checked after each hop.
"""

from __future__ import annotations

import time

from blockplane.cli.client import api_path
from blockplane.cli.demo.figures import Figure, StepOutcome, at_least, equal, exactly, measured
from blockplane.cli.demo.lab_hosts import LabStarter, TourLab, describe, start_lab
from blockplane.cli.demo.session import TourSession
from blockplane.cli.demo.steps.lab_guest import (
    MEMORY,
    VCPUS,
    LabGuest,
    boot,
    wait_for_devices,
    writing_hop,
)
from blockplane.cli.demo.steps.migration import placement

GROUP_IOPS = 20000


def prepare_lab(tour: TourSession) -> None:
    """Start the lab, and the guest's boot on it, while the steps before this one run (both
    take a while under TCG)."""
    if "lab" not in tour.background:
        vm, pool = tour.name(""), tour.name("")

        def boot_guest(lab: TourLab) -> LabGuest:
            return boot(lab, vm, pool)

        tour.background["lab"] = start_lab(tour, then=boot_guest)


def hosts_step(tour: TourSession) -> StepOutcome:
    prepare_lab(tour)
    starter = tour.background["lab"]
    assert isinstance(starter, LabStarter)
    if not starter.done:
        tour.narrator.say("waiting for the lab of two hosts and its guest's boot ...")
    lab_waited = time.monotonic()
    lab = starter.result()
    lab_waited = time.monotonic() - lab_waited
    describe(tour, lab)
    source, destination = lab.hosts[0], lab.hosts[1]
    peer = source.request("GET", api_path("peers", destination.name))
    now = peer["now"]
    tour.narrator.say(f"{source.name} -> peer {peer['name']} at {peer['api']}: answers "
                      f"{now['answers']} (blockplane {now['version']}, host {now['hostname']}); "
                      f"CA pinned {peer['ca_fingerprints'][0][:23]}…, token {peer['token']}")
    facts = [host.request("GET", "/v1/facts") for host in (source, destination)]
    for host, fact in zip((source, destination), facts, strict=True):
        tour.narrator.say(f"{host.name}: QEMU {fact['qemu']['version']}, libvirt "
                          f"{fact['libvirt']['version']} ({fact['libvirt']['uri']})")

    waited = time.monotonic()
    prepared = starter.prepared()
    assert isinstance(prepared, LabGuest)
    waited = time.monotonic() - waited
    vm, pool, group = prepared.name, prepared.pool, "tier1"
    tour.narrator.say(f"{source.name}: VM {vm} ({VCPUS} vCPUs, {MEMORY}, the Linux test guest) "
                      f"booted to its guest agent in {prepared.boot_seconds:.1f} s, in the "
                      f"background; waited {waited:.1f} s for it here")
    source.request("PUT", api_path("vms", vm, "throttle-groups", group),
                   {"limits": {"total_iops_sec": GROUP_IOPS}})
    thin = source.request("POST", api_path("vms", vm, "disks"),
                          {"pool": pool, "size": "256M", "thin": True, "queues": 2,
                           "throttle_groups": [group]})
    mapped = source.request("POST", api_path("vms", vm, "disks"),
                            {"pool": pool, "size": "64M", "queues": 2, "io_threads": 2})
    device = f"/dev/{thin['target']}"
    wait_for_devices(source, vm, [device, f"/dev/{mapped['target']}"])
    for disk in (thin, mapped):
        tour.narrator.say(f"{source.name}: VM {vm} {disk['target']}: {disk['plan']['reason']}")
    check = source.request("POST", api_path("vms", vm, "migrate-check"),
                           {"peer": destination.name})
    tour.narrator.say(f"migrate-check {vm} --to {destination.name}: "
                      f"{'compatible' if check['compatible'] else 'NOT compatible'}")
    for gap in check["gaps"]:
        tour.narrator.note(f"{gap['target']} {gap['feature']}: {gap['reason']}")

    figures: list[Figure] = [
        equal(f"{destination.name} answers as {source.name}'s peer",
              "yes" if now["answers"] else f"no ({now['code']})", "yes", "pinned TLS, its token"),
        exactly(f"gaps for {vm} on {destination.name}", len(check["gaps"]), 0,
                basis="same QEMU and libvirt"),
        at_least("lab hosts", len(lab.hosts), 2),
        measured("lab up", lab.seconds, "s"),
        measured(f"guest boot on {source.name}", prepared.boot_seconds, "s"),
        measured("waited for the lab and its guest", waited + lab_waited, "s"),
    ]
    target = thin["target"]
    before = placement(source, vm)
    there, chunks = writing_hop(tour, source, destination, vm, device, before, 0)
    back, chunks = writing_hop(tour, destination, source, vm, device, before, chunks)
    figures += there + back
    for figure in figures:
        tour.narrator.figure(figure)
    title = (f"lab of {len(lab.hosts)} hosts ({', '.join(h.name for h in lab.hosts)}), peers "
             f"over pinned TLS; Linux guest {vm} ({target} thin under group {group}, "
             f"{mapped['target']} over 2 IOThreads) live-migrated {source.name} -> "
             f"{destination.name} -> {source.name} while writing")
    return StepOutcome(title, f"two live migrations of a writing guest, {chunks} MiB written "
                              "and read back equal, placement equal after each",
                       tuple(figures), f"checksum of {target} on {destination.name}")
