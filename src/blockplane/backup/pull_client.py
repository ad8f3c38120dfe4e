"""``scripts/nbd-pull-backup``: a reference pull client, reading a pull backup the way backup
software does, into the documented layout (``backup.layout``).

    blockplane backup web --pull --json > answer.json
    scripts/nbd-pull-backup --answer answer.json --out /backups/web/full
    blockplane backup stop JOB

For each exported disk:
- full: ``qemu-img create -f qcow2 DIR/vda.qcow2 SIZE``, then ``nbdcopy --destination-is-zero
  URL -- [ qemu-nbd -f qcow2 DIR/vda.qcow2 ]`` (nbdcopy reads the data extents only, from
  ``base:allocation``, so holes stay holes);
- incremental: ``nbdinfo --map=qemu:dirty-bitmap:backup-vda --json URL`` lists the changed
  extents; exactly those are read from the export and written, at the same offsets, into a
  fresh qcow2 served by ``qemu-nbd``, so it holds only the changed clusters.
Then ``manifest.json``. It prints what it read (bytes per disk) as JSON. It never stops the
backup: that is the caller's ``backup stop``. Must not talk to the agent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blockplane.backup.layout import BackupDisk, BackupManifest, write_manifest
from blockplane.backup.nbd_client import NbdAddress, NbdClient

DIRTY = 1
COPY_STEP = 8 << 20
SOCKET_WAIT_S = 30.0


def extents(url: str, context: str) -> list[tuple[int, int, int]]:
    """``nbdinfo --map=CONTEXT``: (offset, length, type) of every extent of the export."""
    result = subprocess.run(["nbdinfo", f"--map={context}", "--json", url],
                            capture_output=True, text=True, check=True, timeout=600)
    return [(int(e["offset"]), int(e["length"]), int(e["type"]))
            for e in json.loads(result.stdout)]


def changed_extents(url: str, context: str) -> list[tuple[int, int]]:
    """The dirty extents of the bitmap ``context``, adjacent ones merged."""
    merged: list[tuple[int, int]] = []
    for offset, length, kind in extents(url, context):
        if not kind & DIRTY:
            continue
        if merged and merged[-1][0] + merged[-1][1] == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((offset, length))
    return merged


def copy_full(url: str, size: int, destination: Path) -> int:
    """The whole export into a fresh qcow2; the bytes of its data extents (what nbdcopy reads)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(destination), str(size)],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(["nbdcopy", "--destination-is-zero", url, "--", "[", "qemu-nbd", "-f",
                    "qcow2", str(destination), "]"], check=True, capture_output=True)
    return sum(length for _, length, kind in extents(url, "base:allocation") if not kind & 1)


def copy_changed(url: str, context: str, size: int, destination: Path) -> tuple[int, int]:
    """Only the changed extents into a fresh qcow2; (bytes read over NBD, extents)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(destination), str(size)],
                   check=True, capture_output=True, timeout=120)
    changed = changed_extents(url, context)
    with tempfile.TemporaryDirectory(prefix="nbd-pull-") as scratch:
        socket = os.path.join(scratch, "dest.sock")
        server = subprocess.Popen(["qemu-nbd", "-f", "qcow2", "-k", socket,
                                   str(destination)], stderr=subprocess.PIPE)
        try:
            wait_for_socket(socket, server)
            with NbdClient(NbdAddress.parse(url)) as source, \
                    NbdClient(NbdAddress("", socket=socket)) as target:
                for offset, length in changed:
                    end = offset + length
                    while offset < end:
                        step = min(COPY_STEP, end - offset)
                        target.write(offset, source.read(offset, step))
                        offset += step
                target.flush()
                read = source.bytes_read
        finally:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return read, len(changed)


def pull(answer: dict[str, Any], out: Path, disks: Sequence[str] = ()) -> dict[str, Any]:
    """Read every disk of a pull backup's ``answer`` into ``out`` and write its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    report: dict[str, Any] = {}
    for disk in answer["disks"]:
        if disks and disk["target"] not in disks:
            continue
        file = f"{disk['target']}.qcow2"
        started = time.monotonic()
        if disk["mode"] == "incremental" and disk.get("bitmap"):
            read, count = copy_changed(disk["url"], disk["bitmap"], int(disk["size"]),
                                       out / file)
        else:
            read, count = copy_full(disk["url"], int(disk["size"]), out / file), 0
        entries.append(BackupDisk(disk["target"], file, int(disk["size"]), disk["mode"]))
        report[disk["target"]] = {"file": str(out / file), "mode": disk["mode"],
                                  "bytes_read": read, "extents": count,
                                  "seconds": round(time.monotonic() - started, 3)}
    write_manifest(out, BackupManifest(
        vm=answer.get("vm"), checkpoint=answer.get("checkpoint"),
        incremental=answer.get("incremental"), disks=tuple(entries), created_at=time.time()))
    return {"dir": str(out), "job": answer.get("job"), "disks": report}


def wait_for_socket(socket: str, server: subprocess.Popen[bytes]) -> None:
    """Return once ``server`` (a ``qemu-nbd``) listens on ``socket``; raise if it exits or
    does not listen within ``SOCKET_WAIT_S``."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not os.path.exists(socket):
        if server.poll() is not None:
            errors = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"qemu-nbd exited: {errors.strip()}")
        if time.monotonic() > deadline:
            raise RuntimeError("qemu-nbd did not listen")
        time.sleep(0.02)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbd-pull-backup", description=__doc__.split("\n")[0])
    parser.add_argument("--answer", required=True,
                        help="the JSON of `blockplane backup VM --pull --json` (- for stdin)")
    parser.add_argument("--out", required=True, type=Path, help="the backup's directory")
    parser.add_argument("--disk", action="append", default=[], help="only this disk")
    options = parser.parse_args(argv)
    text = sys.stdin.read() if options.answer == "-" else Path(options.answer).read_text()
    print(json.dumps(pull(json.loads(text), options.out, options.disk), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
