"""Step 6, backup: a full and an incremental push backup of one disk with guest writes between,
then a restore of full + incremental compared with the disk itself and with the data written.

The restore here is what an operator does with push backups today: copy the files, lay the
incremental over the full one (``qemu-img rebase -u``), and compare (``qemu-img compare``,
which reads the running disk with ``-U``). The tour does that itself, on the host; the backups
are the agent's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from blockplane.cli.demo.figures import Figure, StepOutcome, equal, measured
from blockplane.cli.demo.patterns import Region, expected_checksum, guest_checksum
from blockplane.cli.demo.session import MIB, TourFailure, TourSession

SPAN_MIB = 8
BEFORE_FULL = Region("d", 0, 4)
BEFORE_INCREMENTAL = Region("e", 6, 2)
QEMU_IMG_TIMEOUT_S = 120
#: Pull backups over NBD and the agent's own restore join this step once the agent has them.
PULL_ROUTE = "/v1/vms/{vm}/backup/pull"
RESTORE_ROUTE = "/v1/restore"


def backup_step(tour: TourSession) -> StepOutcome:
    guest, pool = tour.guest(), tour.pool()
    disk = tour.attach({"size": "64M"})
    target, device = disk["target"], f"/dev/{disk['target']}"
    figures: list[Figure] = []

    tour.sh(BEFORE_FULL.guest_write(device))
    tour.narrator.say(f"guest wrote {BEFORE_FULL.length_mib} MiB of '{BEFORE_FULL.letter}' at "
                      f"{BEFORE_FULL.offset_mib} MiB")
    full = _push(tour, guest.name, target, Path(pool.path) / tour.name("backup-full"), None,
                 figures)
    tour.sh(BEFORE_INCREMENTAL.guest_write(device))
    tour.narrator.say(f"guest wrote {BEFORE_INCREMENTAL.length_mib} MiB of "
                      f"'{BEFORE_INCREMENTAL.letter}' at {BEFORE_INCREMENTAL.offset_mib} MiB")
    incremental = _push(tour, guest.name, target, Path(pool.path) / tour.name("backup-inc"),
                        full["spec"]["checkpoint"], figures)

    expected = expected_checksum([BEFORE_FULL, BEFORE_INCREMENTAL], SPAN_MIB)
    restored = _restore_on_host(tour, Path(pool.path) / tour.name("restore"),
                                full["spec"]["backup_files"][target],
                                incremental["spec"]["backup_files"][target])
    identical = _compare(restored, disk["source"])
    figures += [
        equal("restore vs the disk (qemu-img compare)", identical, "identical",
              "the running disk"),
        equal("checksum of the restore", _raw_checksum(restored, SPAN_MIB), expected,
              "the data written"),
        equal("checksum the guest reads", tour.sh(guest_checksum(device, SPAN_MIB)).strip(),
              expected, "the data written"),
    ]
    for figure in figures[-3:]:
        tour.narrator.figure(figure)
    if not (tour.has_route("post", PULL_ROUTE) and tour.has_route("post", RESTORE_ROUTE)):
        tour.narrator.note("pull backups (NBD) and `blockplane restore` are not built on this "
                           f"agent yet (no POST {PULL_ROUTE}, {RESTORE_ROUTE}): push only")
    title = (f"{target}: full push backup (checkpoint {full['spec']['checkpoint']}), "
             f"incremental on it, restored on the host from both")
    return StepOutcome(title, f"restore {identical} to the disk", tuple(figures),
                       "restore vs the disk (qemu-img compare)")


def _push(tour: TourSession, vm: str, target: str, destination: Path, since: str | None,
          figures: list[Figure]) -> dict[str, Any]:
    kind = "incremental" if since else "full"
    tour.ledger.record("directories", str(destination))
    started = time.monotonic()
    body: dict[str, Any] = {"dest": str(destination), "disks": [target]}
    if since:
        body["incremental"] = since
    job = tour.post("vms", vm, "backup", body=body)
    ended = tour.follow(job, f"{kind} backup of {target}" + (f" since {since}" if since else ""))
    seconds = time.monotonic() - started
    path = ended["spec"]["backup_files"][target]
    allocated = os.stat(path).st_blocks * 512
    tour.narrator.say(f"{kind}: {path}, {allocated / MIB:.1f} MiB allocated, checkpoint "
                      f"{ended['spec']['checkpoint']}")
    figures += [measured(f"{kind} backup allocated", allocated / MIB, "MiB"),
                measured(f"{kind} backup seconds", seconds, "s")]
    return ended


def _restore_on_host(tour: TourSession, scratch: Path, full: str, incremental: str) -> str:
    tour.ledger.record("directories", str(scratch))
    scratch.mkdir(mode=0o700)
    base = shutil.copy(full, scratch / "full.qcow2")
    top = shutil.copy(incremental, scratch / "incremental.qcow2")
    _qemu_img("rebase", "-u", "-b", str(base), "-F", "qcow2", "-f", "qcow2", str(top))
    tour.narrator.say(f"restore: {top} over {base} (qemu-img rebase -u)")
    return str(top)


def _compare(image: str, disk: str) -> str:
    result = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", image,
                             disk], capture_output=True, text=True, check=False,
                            timeout=QEMU_IMG_TIMEOUT_S)
    if result.returncode not in (0, 1):
        raise TourFailure(f"qemu-img compare failed: {result.stderr.strip()}")
    return "identical" if result.returncode == 0 else "different"


def _raw_checksum(image: str, span_mib: int) -> str:
    raw = Path(image).with_suffix(".raw")
    _qemu_img("convert", "-U", "-O", "raw", image, str(raw))
    digest = hashlib.sha256()
    with raw.open("rb") as handle:
        digest.update(handle.read(span_mib * MIB))
    raw.unlink()
    return digest.hexdigest()


def _qemu_img(*arguments: str) -> None:
    result = subprocess.run(["qemu-img", *arguments], capture_output=True, text=True,
                            check=False, timeout=QEMU_IMG_TIMEOUT_S)
    if result.returncode != 0:
        raise TourFailure(f"qemu-img {arguments[0]} failed: {result.stderr.strip()}")
