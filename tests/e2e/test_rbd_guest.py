"""A Linux guest on an rbd disk: I/O limits and data integrity as the guest sees them.

- fio (direct 4k random reads) under a 2-level throttle chain: the disk's own limit of 120 IOPS
  under the VM group ``vm-agg`` of 200 lands within 5% of 120, and within 5% of 80 once the
  group is lowered live (limits well under what the one-node cluster serves on a busy 2-core
  host, about 700-3900 IOPS in ``bench/rbd.py``, so that the limit, not the host, sets the rate);
- the guest writes known patterns (a raw reference on the host gets the same bytes); after an
  RBD snapshot, a copy out of Ceph with a pivot and a copy back in, the guest reads every region
  back with the reference's sha256, and the host reads the image (and the snapshot) as the
  reference says.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ceph_support import ceph_cluster, requires_ceph
from tests.chain_helpers import Reference, last_json_line, same_content
from tests.harness import AgentUnderTest, requires_guest
from tests.rbd_support import RadosPool, create_rbd_pool, module_rados_pool

__all__ = ["ceph_cluster", "module_rados_pool"]

pytestmark = [pytest.mark.e2e, requires_guest, requires_ceph]

VM = "rbdg"
MIB = 1 << 20
TOLERANCE = 0.05
RUNTIME_S = 8


def pattern(word: str, length: int) -> bytes:
    line = f"{word}\n".encode()
    return (line * (length // len(line) + 1))[:length]


def sh(agent: AgentUnderTest, script: str) -> str:
    return agent.ok("guest", "exec", VM, "--", "/bin/sh", "-c", script)


@pytest.fixture(scope="module")
def guest(agent: AgentUnderTest, module_rados_pool: RadosPool) -> dict[str, str]:
    create_rbd_pool(agent, "ceph", module_rados_pool)
    agent.ok("pool", "create", "gl", "--type", "dir")
    agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux",
             "--start")
    agent.ok("throttle", "set", VM, "vm-agg", "--total-iops-sec", "200")
    limited = agent.json("disk", "attach", VM, "--pool", "ceph", "--size", "256M",
                         "--total-iops-sec", "120", "--throttle-groups", "vm-agg")
    # Served by QEMU's main loop (one context), so it may be switched back onto rbd below.
    data = agent.json("disk", "attach", VM, "--pool", "ceph", "--size", "64M",
                      "--io-threads", "0")
    deadline = time.monotonic() + 30
    for target in (limited["target"], data["target"]):
        while "yes" not in sh(agent, f"test -b /dev/{target} && echo yes || true"):
            assert time.monotonic() < deadline, f"/dev/{target} never appeared in the guest"
            time.sleep(0.5)
    return {"limited": limited["target"], "data": data["target"]}


def fio_iops(agent: AgentUnderTest, target: str) -> float:
    argv = ["fio", "--direct=1", "--rw=randread", "--bs=4k", "--ioengine=libaio",
            "--iodepth=16", f"--runtime={RUNTIME_S}", "--time_based", "--ramp_time=1",
            "--output-format=json", f"--name={target}", f"--filename=/dev/{target}"]
    report: dict[str, Any] = json.loads(agent.ok("guest", "exec", VM, "--", *argv))
    return float(report["jobs"][0]["read"]["iops"])


def test_fio_under_a_two_level_chain_lands_on_the_limit(agent: AgentUnderTest,
                                                        guest: dict[str, str]) -> None:
    iops = fio_iops(agent, guest["limited"])
    print(f"rbd disk under per-disk 120 / VM group 200: {iops:.1f} IOPS")
    assert abs(iops - 120) <= TOLERANCE * 120, iops
    agent.ok("throttle", "set", VM, "vm-agg", "--total-iops-sec", "80")
    lowered = fio_iops(agent, guest["limited"])
    print(f"after the VM group went to 80 live: {lowered:.1f} IOPS")
    assert abs(lowered - 80) <= TOLERANCE * 80, lowered


class Writes:
    """What the guest wrote, mirrored into a raw reference on the host."""

    def __init__(self, agent: AgentUnderTest, target: str, reference: Reference) -> None:
        self.agent, self.target, self.reference = agent, target, reference
        self.regions: list[tuple[int, int]] = []

    def write(self, word: str, offset: int, length: int) -> None:
        sh(self.agent, f"yes {word} | head -c {length} | dd of=/dev/{self.target} bs=1M "
           f"seek={offset // MIB} oflag=direct conv=fsync 2>/dev/null")
        with self.reference.path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(pattern(word, length))
        self.regions.append((offset, length))

    def guest_verifies(self) -> None:
        script = " ; ".join(
            f"dd if=/dev/{self.target} bs=1M skip={offset // MIB} count={length // MIB}"
            " iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1"
            for offset, length in self.regions)
        with self.reference.path.open("rb") as handle:
            expected = []
            for offset, length in self.regions:
                handle.seek(offset)
                expected.append(hashlib.sha256(handle.read(length)).hexdigest())
        assert sh(self.agent, script).split() == expected


def source_of(agent: AgentUnderTest, target: str) -> str:
    return str(next(d for d in agent.json("disk", "list", VM)
                    if d["target"] == target)["source"])


def run_job(agent: AgentUnderTest, *args: str) -> None:
    job: dict[str, Any] = last_json_line(agent.ok(*args, "--wait"))
    assert job["phase"] == "done", job


def test_checksums_survive_an_rbd_snapshot_and_copies_out_of_ceph_and_back(
    agent: AgentUnderTest, guest: dict[str, str], module_rados_pool: RadosPool,
    tmp_path: Path,
) -> None:
    target = guest["data"]
    writes = Writes(agent, target, Reference(tmp_path / "ref.raw", 64 * MIB))
    writes.write("alpha", 0, 8 * MIB)
    taken = agent.json("snapshot", "create", VM, "--name", "s1", "--disk", target,
                       "--quiesce")
    assert taken["quiesced"] is True and taken["disks"][0]["kind"] == "rbd_snapshot"
    at_snapshot = tmp_path / "at-snapshot.raw"
    at_snapshot.write_bytes(writes.reference.path.read_bytes())
    writes.write("bravo", 4 * MIB, 6 * MIB)
    writes.guest_verifies()
    image = source_of(agent, target).removeprefix("rbd:").split("/", 1)[1]
    snapshot = tmp_path / "snapshot.raw"
    module_rados_pool.cluster.run("rbd", "export", "--no-progress",
                                  f"{module_rados_pool.name}/{image}@s1", str(snapshot))
    assert snapshot.read_bytes() == at_snapshot.read_bytes()

    run_job(agent, "copy", VM, target, "--pool", "gl", "--pivot")
    local = source_of(agent, target)
    assert not local.startswith("rbd:")
    writes.write("charlie", 20 * MIB, 4 * MIB)
    writes.guest_verifies()
    sh(agent, f"dd if=/dev/zero of=/dev/{target} bs=512 count=0 conv=fsync 2>/dev/null")
    assert same_content(writes.reference.path, local)

    run_job(agent, "copy", VM, target, "--pool", "ceph", "--pivot")
    back = source_of(agent, target)
    assert back.startswith("rbd:")
    writes.write("delta", 40 * MIB, 2 * MIB)
    writes.guest_verifies()
    exported = tmp_path / "back.raw"
    module_rados_pool.cluster.run("rbd", "export", "--no-progress",
                                  back.removeprefix("rbd:"), str(exported), timeout_s=120)
    completed = subprocess.run(["cmp", str(exported), str(writes.reference.path)],
                               capture_output=True, check=False)
    assert completed.returncode == 0
