"""Step 5, backing chains: two snapshots with guest writes between, then an intermediate commit,
a pull and a copy with pivot, each followed with a progress bar; after each, the guest reads the
disk back and its checksum must equal the one computed here from what was written.
"""

from __future__ import annotations

import time
from typing import Any

from blockplane.cli.demo.figures import Figure, StepOutcome, equal, exactly, measured
from blockplane.cli.demo.patterns import Region, expected_checksum, guest_checksum
from blockplane.cli.demo.session import TourSession

#: Small on purpose: under TCG the guest's CPU, not the disk, bounds how fast it writes and
#: hashes. The second region overlaps the first, so a snapshot's overlay must shadow its base.
SPAN_MIB = 6
REGIONS = (Region("a", 0, 2), Region("b", 1, 2), Region("c", 4, 2))


class ChainCheck:
    """The disk under test: writes, chain length and checksum checks, and the figures."""

    def __init__(self, tour: TourSession, vm: str, target: str) -> None:
        self.tour, self.vm, self.target = tour, vm, target
        self.device = f"/dev/{target}"
        self.written: list[Region] = []
        self.figures: list[Figure] = []
        self.matched = 0

    def write(self, region: Region) -> None:
        self.tour.sh(region.guest_write(self.device))
        self.written.append(region)
        self.tour.narrator.say(f"guest wrote {region.length_mib} MiB of '{region.letter}' at "
                               f"{region.offset_mib} MiB")

    def chain(self) -> list[dict[str, Any]]:
        elements: list[dict[str, Any]] = self.tour.get("vms", self.vm, "disks", self.target,
                                                       "chain")["elements"]
        return elements

    def check(self, after: str, length: int) -> None:
        elements = self.chain()
        names = " <- ".join(f"{e['name']} ({e['volume'] or e['path']})" for e in elements)
        self.tour.narrator.say(f"chain after {after}: {names}")
        seen = self.tour.sh(guest_checksum(self.device, SPAN_MIB)).strip()
        figure = equal(f"checksum after {after}", seen,
                       expected_checksum(self.written, SPAN_MIB), "the data written")
        self.matched += int(bool(figure.within))
        self.figures += [exactly(f"chain length after {after}", len(elements), length), figure]
        self.tour.narrator.figure(figure)

    def job(self, kind: str, body: dict[str, Any], label: str) -> dict[str, Any]:
        started = time.monotonic()
        job = self.tour.post("vms", self.vm, "disks", self.target, kind, body=body)
        ended = self.tour.follow(job, label)
        self.figures.append(measured(f"{kind} seconds", time.monotonic() - started, "s"))
        return ended


def chains_step(tour: TourSession) -> StepOutcome:
    guest = tour.guest()
    disk = tour.attach({"size": "64M"})
    check = ChainCheck(tour, guest.name, disk["target"])
    target = disk["target"]

    check.write(REGIONS[0])
    snapshots = []
    for number, region in enumerate(REGIONS[1:], start=1):
        snapshot = tour.post("vms", guest.name, "snapshots",
                             body={"name": tour.name(f"s{number}"), "disks": [target]})
        snapshots.append(snapshot["name"])
        tour.narrator.say(f"snapshot {snapshot['name']}: {snapshot['state']} in "
                          f"{snapshot['seconds']:.2f} s")
        check.write(region)
    check.check("2 snapshots", 3)

    check.job("commit", {"top": f"{target}[1]", "base": f"{target}[2]"},
              f"commit {target}[1] into {target}[2]")
    check.check("commit", 2)
    check.job("pull", {}, f"pull into {target}")
    check.check("pull", 1)
    before = check.chain()[0]["path"]
    copied = check.job("copy", {"pool": tour.pool().name, "pivot": True},
                       f"copy {target} to pool {tour.pool().name}, pivot")
    check.check("copy", 1)
    moved = check.chain()[0]["path"]
    destination = (copied["spec"].get("destination") or {}).get("path", moved)
    check.figures.append(equal("disk after copy", moved, destination, "the copy's destination"))
    total = len([f for f in check.figures if f.name.startswith("checksum")])
    check.figures.insert(0, exactly("checksums equal", check.matched, total,
                                    basis="one per step"))
    title = (f"{target}: snapshots {' and '.join(snapshots)} with writes between; commit "
             f"{target}[1] into {target}[2], pull, copy to {tour.pool().name} with pivot "
             f"({before} -> {moved})")
    return StepOutcome(title, f"{check.matched} of {total} checksums equal the data written",
                       tuple(check.figures), "checksums equal")
