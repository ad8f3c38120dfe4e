"""A Linux guest keeps writing while it live-migrates between two lab hosts, and nothing is lost.

The guest writes chunks of a checksummed pattern (1 MiB chunk ``i`` is the line ``bp-<i>``
repeated, which the host can rebuild) with ``dd oflag=direct`` and an fsync, first 24 chunks,
then one more every half second in the background while the VM migrates with its thin disk
copied over NBD. After it: the guest's own sha256 of every chunk and a host-side ``qemu-img
compare`` of the destination's image with a raw reference agree; the guest logged no I/O error
and no host paused it on ENOSPC. Then a backup taken on the destination, incremental against
the checkpoint the full backup made on the source, restores to the reference.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chain_helpers import restore
from tests.harness import requires_guest
from tests.lab_support import Lab, LabHost
from tests.migration_support import (
    FAST,
    MIB,
    Reference,
    destroy_everywhere,
    disk_path,
    ensure_pools,
    migrated,
    same_content,
    unique,
    waited,
)

pytestmark = [pytest.mark.e2e, requires_guest]

DISK_MIB = 256
FIRST = 24


def chunk(index: int) -> bytes:
    line = f"bp-{index:05d}\n".encode()
    return (line * (MIB // len(line) + 1))[:MIB]


def write_chunk(index: str) -> str:
    """Guest shell: write chunk ``index`` (a shell expression) through to the disk."""
    return (f"yes bp-$(printf %05d {index}) | head -c {MIB} > /tmp/c && "
            f"dd if=/tmp/c of=/dev/vda bs=1M seek={index} count=1 oflag=direct "
            "conv=notrunc,fsync 2>/dev/null")


def sh(host: LabHost, vm: str, script: str, timeout: float = 240) -> str:
    return host.ok("guest", "exec", vm, "--timeout", str(timeout), "--", "/bin/sh", "-c",
                   script, timeout=timeout + 30)


@pytest.fixture
def guest(lab: Lab) -> Iterator[str]:
    ensure_pools(lab)
    name = unique("lin")
    one = lab.hosts[0]
    one.ok("vm", "create", name, "--vcpus", "2", "--memory", "384M", "--guest", "linux",
           "--start")
    try:
        one.ok("disk", "attach", name, "--pool", FAST, "--size", f"{DISK_MIB}M", "--thin")
        deadline = time.monotonic() + 30
        while "yes" not in sh(one, name, "test -b /dev/vda && echo yes || true"):
            assert time.monotonic() < deadline, "vda never appeared in the guest"
            time.sleep(0.3)
        yield name
    finally:
        destroy_everywhere(lab, name)


def test_a_writing_guest_migrates_and_every_write_and_backup_reads_back(
    lab: Lab, guest: str, tmp_path: Path
) -> None:
    one, two = lab.hosts[0], lab.hosts[1]
    backups = lab.shared / "pool" / f"bk-{guest}"
    sh(one, guest, f"i=0; while [ $i -lt {FIRST} ]; do {write_chunk('$i')} || exit 1; "
       "i=$((i+1)); done")
    full = waited(one, "backup", guest, "--dest", f"{backups}/full")
    assert full["phase"] == "done", full
    (checkpoint,) = [c["name"] for c in one.json("checkpoint", "list", guest)]
    assert checkpoint == f"bp-{full['id']}"

    sh(one, guest, "rm -f /tmp/stop /tmp/w.done /tmp/w.err; ( i=" + str(FIRST) + "; "
       "while [ ! -e /tmp/stop ]; do " + write_chunk("$i") + " || echo failed $i >>/tmp/w.err; "
       "echo $i > /tmp/w.last; i=$((i+1)); sleep 0.5; done; echo done > /tmp/w.done ) "
       ">/dev/null 2>&1 &")
    time.sleep(2)  # a few writes before the migration starts, and during it
    job = migrated(one, guest, two.name)
    assert job["downtime_ms"] is not None
    sh(two, guest, "touch /tmp/stop; while [ ! -e /tmp/w.done ]; do sleep 0.2; done")
    last = int(sh(two, guest, "cat /tmp/w.last").strip())
    assert last > FIRST, "the guest wrote nothing while it migrated"
    assert sh(two, guest, "cat /tmp/w.err 2>/dev/null || true").strip() == ""

    sums = sh(two, guest, f"i=0; while [ $i -le {last} ]; do dd if=/dev/vda bs=1M skip=$i "
              "count=1 iflag=direct 2>/dev/null | sha256sum; i=$((i+1)); done").split()
    expected = [hashlib.sha256(chunk(i)).hexdigest() for i in range(last + 1)]
    assert [s for s in sums if s != "-"] == expected
    reference = Reference(tmp_path / "vda.raw", DISK_MIB * MIB)
    for index in range(last + 1):
        reference.write_bytes(index * MIB, chunk(index))
    assert same_content(reference.path, disk_path(lab, two, guest, "vda"))

    assert sh(two, guest, "dmesg | grep -ci 'i/o error' || true").strip() == "0"
    for host in (one, two):
        assert host.json("events", "--vm", guest, "--type", "thin.paused") == []
    assert all(row["pauses"] == 0 for row in two.json("thin", "status", guest))

    incremental = waited(two, "backup", guest, "--dest", f"{backups}/inc1", "--incremental",
                         checkpoint)
    assert incremental["phase"] == "done", incremental
    shared = lab.shared_dir / "pool" / f"bk-{guest}"
    restored = restore(str(shared / "full" / "vda.qcow2"), [str(shared / "inc1" / "vda.qcow2")],
                       tmp_path / "restore")
    assert same_content(reference.path, Path(restored))
