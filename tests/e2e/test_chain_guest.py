"""Data integrity across every block job, seen from a Linux guest and from the host.

The guest writes deterministic patterns (``yes WORD``) at known offsets with O_DIRECT; the host
keeps a raw reference with the same bytes. After each step the guest re-reads every region and
its sha256 must match the reference's, and ``qemu-img compare`` of the disk's chain against the
reference must agree (the guest fsyncs the block device first, so QEMU writes its cached qcow2
metadata). Steps: snapshot twice with writes between, intermediate commit, active commit with
pivot, pull, copy with pivot while the guest writes (with a SIGKILL of the agent at a random
point), then a full and an incremental backup restored and compared.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest

from tests.chain_helpers import (
    Reference,
    chain_paths,
    last_json_line,
    restore,
    same_content,
    wait_phase,
)
from tests.harness import AgentUnderTest, requires_guest

pytestmark = [pytest.mark.e2e, requires_guest]

MIB = 1 << 20
VM = "cg"


def pattern(word: str, length: int) -> bytes:
    line = f"{word}\n".encode()
    return (line * (length // len(line) + 1))[:length]


class GuestDisk:
    def __init__(self, agent: AgentUnderTest, target: str, reference: Reference) -> None:
        self.agent = agent
        self.target = target
        self.device = f"/dev/{target}"
        self.reference = reference
        self.regions: list[tuple[int, int]] = []

    def sh(self, script: str) -> str:
        return self.agent.ok("guest", "exec", VM, "--", "/bin/sh", "-c", script)

    def write(self, word: str, offset: int, length: int) -> None:
        """Write ``yes word`` bytes at ``offset`` from the guest, and into the reference."""
        self.sh(f"yes {word} | head -c {length} | dd of={self.device} bs=1M "
                f"seek={offset // MIB} oflag=direct conv=fsync 2>/dev/null")
        with self.reference.path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(pattern(word, length))
        self.regions.append((offset, length))

    def verify(self) -> None:
        """The guest reads back every region as the reference has it, and so does the host."""
        script = " ; ".join(
            f"dd if={self.device} bs=1M skip={offset // MIB} count={length // MIB}"
            " iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1"
            for offset, length in self.regions)
        seen = self.sh(script).split()
        with self.reference.path.open("rb") as handle:
            expected = []
            for offset, length in self.regions:
                handle.seek(offset)
                expected.append(hashlib.sha256(handle.read(length)).hexdigest())
        assert seen == expected
        # fsync on the device makes QEMU flush, so the host reads current qcow2 metadata.
        self.sh(f"dd if=/dev/zero of={self.device} bs=512 count=0 conv=fsync 2>/dev/null")
        top = chain_paths(self.agent, VM, self.target)[0]
        assert same_content(self.reference.path, top)


@pytest.fixture(scope="module")
def disk(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory) -> GuestDisk:
    agent.ok("pool", "create", "gcf", "--type", "dir")
    agent.ok("pool", "create", "gcb", "--type", "dir")
    agent.json("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux",
               "--start")
    attached = agent.json("disk", "attach", VM, "--pool", "gcf", "--size", "64M")
    reference = Reference(tmp_path_factory.mktemp("guest") / "ref.raw", 64 * MIB)
    guest = GuestDisk(agent, attached["target"], reference)
    deadline = time.monotonic() + 20
    while "yes" not in guest.sh(f"test -b {guest.device} && echo yes || true"):
        assert time.monotonic() < deadline, f"{guest.device} never appeared in the guest"
        time.sleep(0.5)
    return guest


def run_job(agent: AgentUnderTest, *args: str) -> dict[str, object]:
    job: dict[str, object] = last_json_line(agent.ok(*args, "--wait"))
    assert job["phase"] == "done", job
    return job


def test_snapshots_with_writes_between(agent: AgentUnderTest, disk: GuestDisk) -> None:
    disk.write("alpha", 0, 8 * MIB)
    disk.verify()
    quiesced = agent.json("snapshot", "create", VM, "--name", "s1", "--quiesce")
    assert quiesced["quiesced"] is True  # fsfreeze through the guest agent
    disk.write("bravo", 4 * MIB, 6 * MIB)
    agent.json("snapshot", "create", VM, "--name", "s2")
    disk.write("charlie", 9 * MIB, 3 * MIB)
    assert len(chain_paths(agent, VM, disk.target)) == 3
    disk.verify()


def test_commit_intermediate_then_active_with_pivot(agent: AgentUnderTest,
                                                    disk: GuestDisk) -> None:
    t = disk.target
    run_job(agent, "commit", VM, t, "--top", f"{t}[1]", "--base", f"{t}[2]")
    assert len(chain_paths(agent, VM, t)) == 2
    disk.verify()
    run_job(agent, "commit", VM, t, "--pivot")
    assert len(chain_paths(agent, VM, t)) == 1
    disk.verify()


def test_pull(agent: AgentUnderTest, disk: GuestDisk) -> None:
    agent.json("snapshot", "create", VM, "--name", "s3")
    disk.write("delta", 16 * MIB, 4 * MIB)
    run_job(agent, "pull", VM, disk.target)
    assert len(chain_paths(agent, VM, disk.target)) == 1
    disk.verify()


def test_copy_with_pivot_while_writing_and_a_sigkill(agent: AgentUnderTest,
                                                     disk: GuestDisk) -> None:
    job = agent.json("copy", VM, disk.target, "--pool", "gcf", "--bandwidth", "8M", "--pivot")
    disk.write("echo", 20 * MIB, 4 * MIB)
    time.sleep(random.uniform(0.0, 1.5))
    agent.kill_9()
    agent.ok("agent", "start")
    ended = wait_phase(agent, str(job["id"]), ("done", "failed", "aborted"), timeout=90)
    assert ended["phase"] == "done", ended
    assert chain_paths(agent, VM, disk.target) == [ended["spec"]["destination"]["path"]]
    disk.verify()


def test_backup_full_and_incremental(agent: AgentUnderTest, disk: GuestDisk,
                                     tmp_path: Path) -> None:
    root = Path(next(p["path"] for p in agent.json("pool", "list") if p["name"] == "gcb"))
    full = run_job(agent, "backup", VM, "--dest", str(root / "full"))
    spec = full["spec"]
    assert isinstance(spec, dict)
    full_file = spec["backup_files"][disk.target]
    assert same_content(disk.reference.path, full_file)
    disk.write("foxtrot", 30 * MIB, 2 * MIB)
    incremental = run_job(agent, "backup", VM, "--dest", str(root / "inc1"),
                          "--incremental", spec["checkpoint"])
    inc_spec = incremental["spec"]
    assert isinstance(inc_spec, dict)
    restored = restore(full_file, [inc_spec["backup_files"][disk.target]], tmp_path / "r")
    assert same_content(disk.reference.path, restored)
    disk.verify()
