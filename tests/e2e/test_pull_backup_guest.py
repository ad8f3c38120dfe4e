"""Pull backups of a Linux guest, read by the reference pull client, restored and checked.

vda: the guest writes deterministic patterns (``yes WORD``) at known offsets with O_DIRECT
between three pull backups (full, then two incrementals with ``--incremental auto``); a raw
reference gets the same bytes. The three are restored into a new volume: its content equals the
reference (``qemu-img compare``), its sha256 is the reference's, and the guest reads every
region back with the reference's sha256. vdb: an ext4 filesystem (made on the host before the
VM starts) that fio writes into while a quiesced pull backup (``--require-quiesce``: the guest
agent freezes and thaws it) is taken; once restored, ``e2fsck -fn`` finds it clean, and the
guest's filesystem was thawed (it still writes).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import Reference, same_content, wait_phase
from tests.harness import AgentUnderTest, requires_guest
from tests.pull_helpers import pull_client, raw_sha256

pytestmark = [pytest.mark.e2e, requires_guest]

MIB = 1 << 20
VM = "pg"


def pattern(word: str, length: int) -> bytes:
    line = f"{word}\n".encode()
    return (line * (length // len(line) + 1))[:length]


class Guest:
    def __init__(self, agent: AgentUnderTest, reference: Reference) -> None:
        self.agent = agent
        self.reference = reference
        self.regions: list[tuple[int, int]] = []

    def sh(self, script: str, timeout: str = "120") -> str:
        return self.agent.ok("guest", "exec", VM, "--timeout", timeout, "--", "/bin/sh", "-c",
                             script)

    def write(self, word: str, offset: int, length: int) -> None:
        self.sh(f"yes {word} | head -c {length} | dd of=/dev/vda bs=1M seek={offset // MIB} "
                "oflag=direct conv=fsync 2>/dev/null")
        with self.reference.path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(pattern(word, length))
        self.regions.append((offset, length))

    def reads_back(self) -> bool:
        script = " ; ".join(
            f"dd if=/dev/vda bs=1M skip={offset // MIB} count={length // MIB} iflag=direct "
            "2>/dev/null | sha256sum | cut -d' ' -f1" for offset, length in self.regions)
        expected = []
        with self.reference.path.open("rb") as handle:
            for offset, length in self.regions:
                handle.seek(offset)
                expected.append(hashlib.sha256(handle.read(length)).hexdigest())
        return self.sh(script).split() == expected


def pull_and_read(agent: AgentUnderTest, out: Path, *args: str) -> dict[str, Any]:
    answer: dict[str, Any] = agent.json("backup", VM, "--pull", *args)
    pull_client(answer, out)
    agent.ok("backup", "stop", answer["job"])
    assert wait_phase(agent, answer["job"], ("done", "failed", "aborted"))["phase"] == "done"
    return answer


@pytest.fixture(scope="module")
def guest(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Guest:
    scratch = tmp_path_factory.mktemp("pull-guest")
    agent.ok("pool", "create", "pgd", "--type", "dir")
    agent.ok("pool", "create", "pgl", "--type", "loop", "--chunk", "32M")
    agent.json("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux")
    agent.json("disk", "attach", VM, "--pool", "pgd", "--size", "64M")
    ext4 = agent.json("disk", "attach", VM, "--pool", "pgd", "--size", "64M")
    filesystem = scratch / "ext4.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(filesystem), "64M"], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", str(filesystem),
                    ext4["source"]], check=True, capture_output=True)
    agent.ok("vm", "start", VM)
    made = Guest(agent, Reference(scratch / "vda.raw", 64 * MIB))
    deadline = time.monotonic() + 30
    while "yes" not in made.sh("test -b /dev/vdb && echo yes || true"):
        assert time.monotonic() < deadline, "the disks never appeared in the guest"
        time.sleep(0.5)
    return made


def test_checksummed_writes_between_three_pull_backups_restore_exactly(
        agent: AgentUnderTest, guest: Guest, tmp_path: Path) -> None:
    guest.write("alpha", 0, 16 * MIB)
    full = pull_and_read(agent, tmp_path / "full", "--disk", "vda")
    guest.write("bravo", 8 * MIB, 4 * MIB)
    guest.write("charlie", 40 * MIB, 2 * MIB)
    first = pull_and_read(agent, tmp_path / "inc1", "--disk", "vda", "--incremental", "auto",
                          "--scratch-pool", "pgl")
    assert first["incremental"] == full["checkpoint"]
    guest.write("delta", 10 * MIB, 1 * MIB)
    guest.write("echo", 60 * MIB, 4 * MIB)
    second = pull_and_read(agent, tmp_path / "inc2", "--disk", "vda", "--incremental", "auto")
    assert second["incremental"] == first["checkpoint"]
    assert guest.reads_back()

    result = agent.json("restore", "--from", str(tmp_path / "full"), "--from",
                        str(tmp_path / "inc1"), "--from", str(tmp_path / "inc2"),
                        "--pool", "pgl", "--name", "pg-restored")
    assert result["sha256"] == raw_sha256(guest.reference.path)
    assert same_content(guest.reference.path, result["path"])
    inc2 = json.loads((tmp_path / "inc2" / "manifest.json").read_text())
    assert (inc2["incremental"], inc2["disks"]["vda"]["mode"]) == (first["checkpoint"],
                                                                  "incremental")


def test_a_quiesced_pull_backup_while_fio_writes_restores_a_clean_filesystem(
        agent: AgentUnderTest, guest: Guest, tmp_path: Path) -> None:
    guest.sh("mkdir -p /mnt/data && mount -t ext4 /dev/vdb /mnt/data")
    guest.sh("fio --name=busy --directory=/mnt/data --size=16M --nrfiles=4 --rw=randwrite "
             "--bs=16k --ioengine=psync --fsync=8 --time_based --runtime=120 "
             ">/dev/null 2>&1 </dev/null &")
    time.sleep(3)  # fio is writing
    answer = pull_and_read(agent, tmp_path / "fs", "--disk", "vdb", "--quiesce",
                           "--require-quiesce")
    assert answer["quiesced"] is True and answer["quiesce_error"] is None
    assert guest.sh("pidof fio >/dev/null && echo writing").strip() == "writing"
    guest.sh("touch /mnt/data/after-the-backup && sync")  # thawed: it still writes
    guest.sh("kill $(pidof fio) 2>/dev/null; sleep 1; umount /mnt/data")

    result = agent.json("restore", "--from", str(tmp_path / "fs"), "--pool", "pgd",
                        "--name", "pg-fs")
    raw = tmp_path / "fs.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", result["path"], str(raw)], check=True)
    checked = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert result["sha256"] == raw_sha256(raw)
