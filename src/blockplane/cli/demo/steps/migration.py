"""Step 7's live migration between the two lab hosts: the VM migrated with ``POST
/v1/vms/{vm}/migrate`` and followed on the source agent, then what the destination agent reads
back: its IOThread mapping, its throttle group, its thin monitoring; and the host-side checksum
of a disk, read from the destination's volume.

Owns the figures of one hop. It talks to the lab's agents over their TLS API and reads volumes
with ``qemu-img`` (read-only, ``-U``); the tour imports no services and no libvirt.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.cli.client import api_path
from blockplane.cli.demo.figures import Figure, equal, exactly, measured
from blockplane.cli.demo.lab_hosts import LabAgent
from blockplane.cli.demo.session import TERMINAL_PHASES, TourFailure, TourSession

TOOL_TIMEOUT_S = 120
MIGRATION_WAIT_S = 300.0
MAX_DOWNTIME_MS = 300
PHASES = ("check", "prepare", "migrate", "finish", "cleanup")


@dataclass(frozen=True)
class Placement:
    """What one host reads back of the VM: its disks' mappings, groups and thin state."""

    mappings: dict[str, Any]
    limits: dict[str, dict[str, int]]
    thin: dict[str, str]


def placement(host: LabAgent, vm: str) -> Placement:
    report = host.request("GET", api_path("vms", vm, "iothreads"))
    if report["disagreements"]:
        raise TourFailure(f"{host.name}: {vm}'s live XML disagrees with its plan: "
                          f"{report['disagreements']}")
    groups = host.request("GET", api_path("vms", vm, "throttle-groups"))
    thin = host.request("GET", "/v1/thin", vm=vm)
    return Placement({disk["target"]: disk["mapping"] for disk in report["disks"]},
                     {group["group"]: group["limits"] for group in groups},
                     {row["target"]: row["state"] for row in thin})


def content_checksum(host: LabAgent, vm: str, target: str, span_mib: int) -> str:
    """sha256 of the first ``span_mib`` MiB of ``vm``'s disk on ``host``, read from its volume
    (past the guest, which may still be running)."""
    [disk] = [d for d in host.request("GET", api_path("vms", vm, "disks"))
              if d["target"] == target]
    raw = Path(f"/tmp/bp-demo-{vm}-{target}.raw")
    try:
        _tool(["qemu-img", "dd", "-U", "-f", disk["format"], "-O", "raw", "bs=1M",
               f"count={span_mib}", f"if={host.outside(disk['source'])}", f"of={raw}"])
        with raw.open("rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    finally:
        raw.unlink(missing_ok=True)


def migrate(tour: TourSession, source: LabAgent, destination: LabAgent, vm: str,
            before: Placement) -> list[Figure]:
    """One hop, followed on the source, and the figures the destination reads back."""
    started = time.monotonic()
    job = source.request("POST", api_path("vms", vm, "migrate"),
                         {"to": destination.name, "max_downtime": MAX_DOWNTIME_MS})
    hop = f"{source.name} -> {destination.name}"
    for disk in job["spec"].get("disks", []):
        tour.narrator.say(f"{hop}: {disk['target']} {disk['storage']}"
                          f"{', thin' if disk.get('thin') else ''}")
    with tour.narrator.progress(f"live migration of {vm} {hop}") as bar:
        deadline = time.monotonic() + MIGRATION_WAIT_S
        while job["phase"] not in TERMINAL_PHASES:
            if job.get("progress") and job["progress"]["end"]:
                bar.update(job["progress"]["cur"] / job["progress"]["end"])
            if time.monotonic() > deadline:
                raise TourFailure(f"migration {job['id']} still {job['phase']} after "
                                  f"{MIGRATION_WAIT_S:.0f} s")
            time.sleep(0.3)
            job = source.request("GET", api_path("jobs", job["id"]))
        if job["phase"] == "done":
            bar.update(1.0)
    if job["phase"] != "done":
        raise TourFailure(f"migration {hop}: job {job['id']} {job['phase']}: {job['error']}")
    seconds = time.monotonic() - started
    phases = job["phase_seconds"]
    tour.narrator.say(f"{hop}: job {job['id']} {job['outcome']} in {seconds:.1f} s ("
                      + ", ".join(f"{name} {phases[name]:.2f} s" for name in PHASES
                                  if name in phases)
                      + f"), downtime {job['downtime_ms']} ms")
    vms = {entry["name"] for entry in destination.request("GET", "/v1/vms")}
    left = {entry["name"] for entry in source.request("GET", "/v1/vms")}
    after = placement(destination, vm)
    for target, mapping in after.mappings.items():
        tour.narrator.say(f"{destination.name}: {target} mapping {json.dumps(mapping)}, thin "
                          f"{after.thin.get(target, 'no')}")
    for group, limits in after.limits.items():
        tour.narrator.say(f"{destination.name}: throttle group {group} {limits}")
    downtime = job["downtime_ms"]
    migrate_ms = phases.get("migrate", 0.0) * 1000
    where = f"on {destination.name}"
    return [
        equal(f"{hop} outcome", str(job["outcome"]), "succeeded", "the job record"),
        exactly(f"{hop} phases timed", len([p for p in PHASES if p in phases]), len(PHASES),
                basis=", ".join(PHASES)),
        Figure(f"{hop} downtime", downtime if downtime is not None else "none", "ms", low=0,
               high=migrate_ms, basis="the job record, within its migrate phase"),
        measured(f"{hop} seconds", seconds, "s"),
        equal(f"{vm} runs {where}", "yes" if vm in vms and vm not in left else "no", "yes",
              f"and not on {source.name}"),
        equal(f"IOThread mappings {where}", json.dumps(after.mappings, sort_keys=True),
              json.dumps(before.mappings, sort_keys=True), "as read back before the hops"),
        equal(f"throttle groups {where}", json.dumps(after.limits, sort_keys=True),
              json.dumps(before.limits, sort_keys=True), "as set before the hops"),
        equal(f"thin monitoring {where}", json.dumps(after.thin, sort_keys=True),
              json.dumps(before.thin, sort_keys=True), "armed again"),
    ]


def _tool(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            timeout=TOOL_TIMEOUT_S)
    if result.returncode != 0:
        raise TourFailure(f"{argv[0]} {argv[1]} failed: "
                          f"{(result.stderr or result.stdout).strip()[-400:]}")
    return result.stdout
