"""Step 7, several hosts: a lab of two simulated hosts whose agents are each other's peers over
pinned TLS; a VM on host1 with a mapped disk is checked against host2's live facts, the check a
live migration starts with.

Live migration itself (``POST /v1/vms/{vm}/migrate``) plugs in here once the agent has it: the
step asks the agent's OpenAPI document rather than assuming.
"""

from __future__ import annotations

from blockplane.cli.client import api_path
from blockplane.cli.demo.figures import Figure, StepOutcome, at_least, equal, exactly, measured
from blockplane.cli.demo.lab_hosts import LabStarter, describe, start_lab
from blockplane.cli.demo.session import TourSession, route_served

MIGRATE_ROUTE = "/v1/vms/{vm}/migrate"


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

    vm = tour.name("")
    pool = tour.name("")
    source.request("POST", "/v1/pools", {"name": pool, "type": "dir"})
    source.request("POST", "/v1/vms", {"name": vm, "vcpus": 2, "memory": "128M",
                                       "guest": "none", "start": True})
    disk = source.request("POST", api_path("vms", vm, "disks"),
                          {"pool": pool, "size": "64M", "queues": 2, "io_threads": 2})
    tour.narrator.say(f"{source.name}: VM {vm} (no OS) with {disk['target']}: "
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
    migrated = route_served(source.request("GET", "/v1/openapi.json"), "post", MIGRATE_ROUTE)
    if not migrated:
        tour.narrator.note(f"live migration is not built on this agent yet (no POST "
                           f"{MIGRATE_ROUTE}): the step ends at the check a migration starts "
                           "with")
    for figure in figures:
        tour.narrator.figure(figure)
    title = (f"lab of {len(lab.hosts)} hosts ({', '.join(h.name for h in lab.hosts)}), peers "
             f"over pinned TLS; {vm} on {source.name} checked against {destination.name}: "
             f"{'compatible' if check['compatible'] else 'gaps'}"
             + ("" if migrated else "; live migration not built yet"))
    return StepOutcome(title, f"{destination.name} answers as a peer, {len(check['gaps'])} gaps",
                       tuple(figures), f"gaps for {vm} on {destination.name}")

