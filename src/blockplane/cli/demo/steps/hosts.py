"""Step 7, several hosts: a lab of two simulated hosts whose agents are each other's peers over
pinned TLS; a no-OS VM on host1 with a thin disk under a throttle group and a disk mapped over
2 IOThreads is checked against host2's live facts, live-migrated there and back
(``steps.migration``), with the destination's mapping, groups, thin monitoring and data read
back after each hop.
"""

from __future__ import annotations

from blockplane.cli.client import api_path
from blockplane.cli.demo.figures import Figure, StepOutcome, at_least, equal, exactly, measured
from blockplane.cli.demo.lab_hosts import LabStarter, describe, start_lab
from blockplane.cli.demo.patterns import Region
from blockplane.cli.demo.session import TourSession
from blockplane.cli.demo.steps.migration import migrate, placement, write_data

GROUP_IOPS = 20000
#: Written by QEMU before the hop there, and on the destination before the hop back.
THERE = Region("m", 1, 8)
BACK = Region("n", 6, 4)


def prepare_lab(tour: TourSession) -> None:
    """Start the lab while the steps before this one run (it takes a while to come up)."""
    if "lab" not in tour.background:
        tour.background["lab"] = start_lab(tour)


def hosts_step(tour: TourSession) -> StepOutcome:
    prepare_lab(tour)
    starter = tour.background["lab"]
    assert isinstance(starter, LabStarter)
    if not starter.done:
        tour.narrator.say("waiting for the lab of two hosts to come up ...")
    lab = starter.result()
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

    vm, pool, group = tour.name(""), tour.name(""), "tier1"
    for host in (source, destination):  # the same pool name on each host, its own files
        host.request("POST", "/v1/pools", {"name": pool, "type": "loop", "chunk": "64M"})
    source.request("POST", "/v1/vms", {"name": vm, "vcpus": 2, "memory": "128M",
                                       "guest": "none", "start": True})
    source.request("PUT", api_path("vms", vm, "throttle-groups", group),
                   {"limits": {"total_iops_sec": GROUP_IOPS}})
    thin = source.request("POST", api_path("vms", vm, "disks"),
                          {"pool": pool, "size": "256M", "thin": True, "queues": 2,
                           "throttle_groups": [group]})
    mapped = source.request("POST", api_path("vms", vm, "disks"),
                            {"pool": pool, "size": "64M", "queues": 2, "io_threads": 2})
    for disk in (thin, mapped):
        tour.narrator.say(f"{source.name}: VM {vm} (no OS) {disk['target']}: "
                          f"{disk['plan']['reason']}")
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
    ]
    target = thin["target"]
    written = [THERE]
    write_data(source, vm, target, THERE)
    tour.narrator.say(f"{source.name}: QEMU wrote {THERE.length_mib} MiB of "
                      f"'{THERE.letter}' into {target} at {THERE.offset_mib} MiB")
    before = placement(source, vm)
    figures += migrate(tour, source, destination, vm, before, written, target)
    write_data(destination, vm, target, BACK)
    written.append(BACK)
    tour.narrator.say(f"{destination.name}: QEMU wrote {BACK.length_mib} MiB of "
                      f"'{BACK.letter}' into {target} at {BACK.offset_mib} MiB")
    figures += migrate(tour, destination, source, vm, before, written, target)
    for figure in figures:
        tour.narrator.figure(figure)
    title = (f"lab of {len(lab.hosts)} hosts ({', '.join(h.name for h in lab.hosts)}), peers "
             f"over pinned TLS; {vm} ({target} thin under group {group}, "
             f"{mapped['target']} over 2 IOThreads) live-migrated {source.name} -> "
             f"{destination.name} -> {source.name}")
    return StepOutcome(title, "two live migrations, data and placement equal after each",
                       tuple(figures), f"checksum of {target} on {destination.name}")
