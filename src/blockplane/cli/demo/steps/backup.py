"""Step 6, backup: a full and an incremental push backup of one disk with guest writes between,
then an incremental pull backup over NBD read as backup software reads it, and a restore of all
three through the agent, compared with the disk itself and with the data written.

The pull export is read with the reference pull client (``blockplane.backup.pull_client``, what
``scripts/nbd-pull-backup`` runs: ``nbdinfo --map`` of the dirty bitmap, the changed extents
into a qcow2) and once whole with ``nbdcopy``, as NBD clients do; the tour only runs them. The
restore is the agent's (``POST /v1/restore``): it checks the chain, builds a thin volume in the
tour's pool and answers with the sha256 of what it restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from blockplane.cli.demo.figures import Figure, StepOutcome, at_least, equal, measured
from blockplane.cli.demo.patterns import Region, expected_checksum, guest_checksum
from blockplane.cli.demo.session import MIB, TERMINAL_PHASES, TourFailure, TourSession

DISK_MIB = 64
SPAN_MIB = 8
BEFORE_FULL = Region("d", 0, 4)
BEFORE_INCREMENTAL = Region("e", 6, 2)
BEFORE_PULL = Region("f", 2, 3)
TOOL_TIMEOUT_S = 120
STOP_WAIT_S = 60.0


def backup_step(tour: TourSession) -> StepOutcome:
    guest, pool = tour.guest(), tour.pool()
    disk = tour.attach({"size": f"{DISK_MIB}M"})
    target, device = disk["target"], f"/dev/{disk['target']}"
    figures: list[Figure] = []

    _write(tour, device, BEFORE_FULL)
    full_dir, incremental_dir = (Path(pool.path) / tour.name(what)
                                 for what in ("backup-full", "backup-inc"))
    full = _push(tour, guest.name, target, full_dir, None, figures)
    _write(tour, device, BEFORE_INCREMENTAL)
    incremental = _push(tour, guest.name, target, incremental_dir, full["spec"]["checkpoint"],
                        figures)
    _write(tour, device, BEFORE_PULL)
    written = [BEFORE_FULL, BEFORE_INCREMENTAL, BEFORE_PULL]
    expected_disk = expected_checksum(written, DISK_MIB)
    pulled = _pull(tour, guest.name, target, incremental["spec"]["checkpoint"],
                   Path(pool.path) / tour.name("pull-inc"), expected_disk, figures)

    sources = [str(full_dir), str(incremental_dir), pulled]
    restored = tour.post("restore", body={"sources": sources, "pool": pool.name,
                                          "name": tour.name("restored"), "disk": target})
    chain = " + ".join(step["mode"] for step in restored["chain"])
    tour.narrator.say(f"restore (agent): {chain} -> {restored['pool']}/{restored['volume']}, "
                      f"{restored['physical_bytes'] / MIB:.0f} MiB allocated"
                      f"{' (thin)' if restored['thin'] else ''}")
    identical = _compare(restored["path"], disk["source"])
    figures += [
        equal("restore chain", chain, "full + incremental + incremental",
              "push full, push incremental, pull incremental"),
        equal("restore vs the disk (qemu-img compare)", identical, "identical",
              "the running disk"),
        equal("checksum of the restore", restored["sha256"], expected_disk,
              f"the data written, all {DISK_MIB} MiB"),
        equal("checksum the guest reads", tour.sh(guest_checksum(device, SPAN_MIB)).strip(),
              expected_checksum(written, SPAN_MIB), "the data written"),
    ]
    for figure in figures[-4:]:
        tour.narrator.figure(figure)
    title = (f"{target}: full push backup (checkpoint {full['spec']['checkpoint']}), "
             f"incremental push on it, incremental pull over NBD on that, restored by the "
             f"agent from all three")
    return StepOutcome(title, f"restore {identical} to the disk", tuple(figures),
                       "restore vs the disk (qemu-img compare)")


def _write(tour: TourSession, device: str, region: Region) -> None:
    tour.sh(region.guest_write(device))
    tour.narrator.say(f"guest wrote {region.length_mib} MiB of '{region.letter}' at "
                      f"{region.offset_mib} MiB")


def _push(tour: TourSession, vm: str, target: str, destination: Path, since: str | None,
          figures: list[Figure]) -> dict[str, Any]:
    kind = "incremental" if since else "full"
    tour.ledger.record("directories", str(destination))
    started = time.monotonic()
    body: dict[str, Any] = {"dest": str(destination), "disks": [target]}
    if since:
        body["incremental"] = since
    job = tour.post("vms", vm, "backup", body=body)
    ended = tour.follow(job, f"{kind} push backup of {target}"
                        + (f" since {since}" if since else ""))
    seconds = time.monotonic() - started
    path = ended["spec"]["backup_files"][target]
    allocated = os.stat(path).st_blocks * 512
    tour.narrator.say(f"{kind} push: {path}, {allocated / MIB:.1f} MiB allocated, checkpoint "
                      f"{ended['spec']['checkpoint']}")
    figures += [measured(f"{kind} push backup allocated", allocated / MIB, "MiB"),
                measured(f"{kind} push backup seconds", seconds, "s")]
    return ended


def _pull(tour: TourSession, vm: str, target: str, since: str, out: Path, expected: str,
          figures: list[Figure]) -> str:
    """An incremental pull export since ``since``: its dirty extents, the reference client's
    copy of them into ``out``, the whole export's checksum; then the export stopped."""
    tour.ledger.record("directories", str(out))
    started = time.monotonic()
    answer = tour.post("vms", vm, "backup", "pull",
                       body={"disks": [target], "incremental": since, "timeout": 600})
    try:
        [export] = [entry for entry in answer["disks"] if entry["target"] == target]
        tour.narrator.say(f"pull backup {answer['job']}: {export['mode']} since "
                          f"{answer['incremental']}, {export['url']}")
        extents = _dirty_extents(export["url"], export["bitmap"]) if export.get("bitmap") else []
        tour.narrator.say(f"nbdinfo --map={export['bitmap']}: "
                          + ", ".join(f"{offset // MIB}+{length // MIB} MiB"
                                      for offset, length in extents))
        report = _tool([sys.executable, "-m", "blockplane.backup.pull_client", "--answer", "-",
                        "--out", str(out)], json.dumps(answer))
        read = json.loads(report)["disks"][target]
        tour.narrator.say(f"reference pull client: {read['bytes_read'] / MIB:.0f} MiB in "
                          f"{read['extents']} extents -> {read['file']}")
        export_sum = _export_checksum(export["url"], out / "export.raw")
    finally:
        _stop(tour, answer["job"])
    seconds = time.monotonic() - started
    figures += [
        equal("pull export mode", export["mode"], "incremental", f"since {since}"),
        at_least("dirty extents over NBD", len(extents), 1, basis="the guest wrote since"),
        equal("bytes the pull client read", f"{read['bytes_read'] // MIB} MiB",
              f"{sum(length for _, length in extents) // MIB} MiB", "the dirty extents"),
        equal("checksum of the NBD export (nbdcopy)", export_sum, expected,
              f"the data written, all {DISK_MIB} MiB"),
        measured("pull backup seconds", seconds, "s"),
    ]
    for figure in figures[-5:]:
        tour.narrator.figure(figure)
    return str(out)


def _stop(tour: TourSession, job: str) -> None:
    tour.post("jobs", job, "stop")
    deadline = time.monotonic() + STOP_WAIT_S
    while (view := tour.get("pull-backups", job))["phase"] not in TERMINAL_PHASES:
        if time.monotonic() > deadline:
            raise TourFailure(f"pull backup {job} did not end within {STOP_WAIT_S:.0f} s")
        time.sleep(0.2)
    tour.narrator.say(f"pull backup {job} stopped: {view['phase']}")


def _dirty_extents(url: str, context: str) -> list[tuple[int, int]]:
    listed = json.loads(_tool(["nbdinfo", f"--map={context}", "--json", url]))
    merged: list[tuple[int, int]] = []
    for extent in listed:
        if not int(extent["type"]) & 1:
            continue
        offset, length = int(extent["offset"]), int(extent["length"])
        if merged and sum(merged[-1]) == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((offset, length))
    return merged


def _export_checksum(url: str, scratch: Path) -> str:
    _tool(["nbdcopy", url, str(scratch)])
    digest = hashlib.sha256()
    with scratch.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    scratch.unlink()
    return digest.hexdigest()


def _compare(image: str, disk: str) -> str:
    result = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", image,
                             disk],
                            capture_output=True, text=True, check=False,
                            timeout=TOOL_TIMEOUT_S)
    if result.returncode not in (0, 1):
        raise TourFailure(f"qemu-img compare failed: {result.stderr.strip()}")
    return "identical" if result.returncode == 0 else "different"


def _tool(argv: list[str], given: str | None = None) -> str:
    result = subprocess.run(argv, input=given, capture_output=True, text=True, check=False,
                            timeout=TOOL_TIMEOUT_S)
    if result.returncode != 0:
        raise TourFailure(f"{argv[0]} {' '.join(argv[1:3])} failed: "
                          f"{(result.stderr or result.stdout).strip()[-400:]}")
    return result.stdout
