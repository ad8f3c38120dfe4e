"""Pull backups while the agent watches: a host of the lab (its own libvirtd, its agent running
beside it), so that the VM can write while the agent reacts.

A no-OS VM's disk is written by QEMU itself through ``virsh qemu-monitor-command --hmp``
(``qemu-io`` on the disk's device: the same block graph, copy-before-write filter included, as
the guest's writes); ``qemu-io`` reports a failed write in QEMU's log, which is checked. Covered:
a thin scratch image that grows under a busy writer (the export keeps running, nothing waits),
a scratch image whose pool cannot grow it (the backup fails cleanly before the scratch is full:
every write lands, the VM runs on, the scratch is deleted), and checkpoint metadata dropped by
another libvirt client while the agent runs, back after the VM restarts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab_support import Lab, LabHost

pytestmark = pytest.mark.integration

MIB = 1 << 20
VM = "plab"
DEVICE = "/machine/peripheral/ua-bp-vda/virtio-backend"


def hmp_write(host: LabHost, offset: int, length: int, pattern: int) -> None:
    for command in (f"write -P {pattern} {offset} {length}", "flush"):
        host.virsh_ok("qemu-monitor-command", VM, "--hmp", f'qemu-io -d {DEVICE} "{command}"')


def qemu_log(host: LabHost) -> str:
    return (host.home_dir.parent / "log" / "qemu" / f"{VM}.log").read_text(errors="replace")


def image_holds(host: LabHost, image: str, offset: int, length: int, pattern: int) -> bool:
    result = host.run("qemu-io", "-U", "-r", "-f", "qcow2", "-c",
                      f"read -P {pattern} {offset} {length}", image)
    return result.returncode == 0 and "Pattern verification failed" not in result.stdout


def wait_phase(host: LabHost, job: str, phases: tuple[str, ...],
               timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        shown: dict[str, Any] = host.json("job", "show", job)
        if shown["phase"] in phases:
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)


def scratch_row(host: LabHost, volume: str) -> dict[str, Any] | None:
    rows = [row for row in host.json("thin", "status", VM) if row["volume"] == volume]
    return rows[0] if rows else None


@pytest.fixture(scope="module")
def host(lab: Lab) -> Iterator[LabHost]:
    host = lab.hosts[0]
    host.token  # noqa: B018 (skips the module where the lab has no agents)
    host.ok("pool", "create", "pbd", "--type", "dir")
    host.ok("vm", "create", VM, "--vcpus", "1", "--memory", "128M")
    disk = host.json("disk", "attach", VM, "--pool", "pbd", "--size", "256M")
    written = host.run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {128 * MIB}",
                       disk["source"])
    assert written.returncode == 0, written.stderr
    host.ok("vm", "start", VM)
    try:
        yield host
    finally:
        host.cli("vm", "destroy", VM)
        host.cli("vm", "delete", VM)
        for pool in ("pbd", "pbg", "pbf"):
            host.cli("pool", "delete", pool)


def test_a_thin_scratch_grows_under_a_busy_writer(host: LabHost) -> None:
    host.ok("pool", "create", "pbg", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    answer = host.json("backup", VM, "--pull", "--scratch-pool", "pbg")
    [disk] = answer["disks"]
    armed = scratch_row(host, disk["scratch_volume"])
    assert armed is not None and armed["state"] == "set" and armed["extends"] == 0
    for step in range(40):  # 40 MiB of old data to keep for the export: 2.5 chunks
        hmp_write(host, step * MIB, MIB, 0x22)
    grown = scratch_row(host, disk["scratch_volume"])
    assert grown is not None and grown["extends"] >= 2 and grown["refusals"] == 0, grown
    shown = host.json("job", "show", answer["job"])
    assert shown["phase"] == "running" and shown["scratch"]["used"] >= 40 * MIB
    read = host.run("qemu-io", "-r", "-f", "raw", "-c", f"read -P 0x11 0 {40 * MIB}",
                    disk["url"])
    assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    assert host.json("vm", "show", VM)["state"] == "running"
    host.ok("backup", "stop", answer["job"])
    assert wait_phase(host, answer["job"], ("done", "failed", "aborted"))["phase"] == "done"
    assert scratch_row(host, disk["scratch_volume"]) is None
    assert "write failed" not in qemu_log(host)


def test_a_scratch_its_pool_cannot_grow_fails_the_backup_not_the_guest(host: LabHost) -> None:
    host.ok("pool", "create", "pbf", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    host.ok("pool", "set", "pbf", "--capacity", "20M")  # the scratch's first 17 MiB, no more
    source = host.json("disk", "list", VM)[0]["source"]
    answer = host.json("backup", VM, "--pull", "--scratch-pool", "pbf")
    [disk] = answer["disks"]
    armed = scratch_row(host, disk["scratch_volume"])
    assert armed is not None and armed["threshold"] < armed["physical"], armed
    written = 0
    # Over data the export must keep (unallocated clusters cost the scratch nothing): past the
    # threshold (at 9 MiB), short of the scratch's end (17 MiB).
    for step in range(12):
        hmp_write(host, (64 + step) * MIB, MIB, 0x33)
        written += 1
        if host.json("job", "show", answer["job"])["phase"] != "running":
            break
        time.sleep(0.3)
    ended = wait_phase(host, answer["job"], ("done", "failed", "aborted"))
    assert ended["phase"] == "failed" and "full" in ended["error"], ended
    assert disk["scratch_volume"] not in [v["name"] for v in host.json("volume", "list", "pbf")]
    assert host.json("vm", "show", VM)["state"] == "running"
    assert "write failed" not in qemu_log(host)
    assert image_holds(host, source, 64 * MIB, written * MIB, 0x33)
    refused = host.json("events", "--vm", VM, "--type", "thin.extend_refused")
    assert refused and refused[-1]["volume"] == disk["scratch_volume"]


def test_checkpoints_dropped_behind_the_agent_are_back_after_a_vm_restart(
        host: LabHost) -> None:
    answer = host.json("backup", VM, "--pull", "--disk", "vda")
    host.ok("backup", "stop", answer["job"])
    wait_phase(host, answer["job"], ("done",))
    names = [c["name"] for c in host.json("checkpoint", "list", VM)]
    assert answer["checkpoint"] in names
    for name in reversed(names):  # another libvirt client forgets them, bitmaps stay
        host.virsh_ok("checkpoint-delete", VM, name, "--metadata")
    assert host.virsh_ok("checkpoint-list", VM, "--name").split() == []
    host.ok("vm", "destroy", VM)
    host.ok("vm", "start", VM)
    assert [c["name"] for c in host.json("checkpoint", "list", VM)] == names
    assert sorted(host.virsh_ok("checkpoint-list", VM, "--name").split()) == sorted(names)
    hmp_write(host, 200 * MIB, MIB, 0x44)
    incremental = host.json("backup", VM, "--pull", "--incremental", answer["checkpoint"])
    [disk] = incremental["disks"]
    listed = host.run("nbdinfo", f"--map={disk['bitmap']}", "--json", disk["url"])
    assert listed.returncode == 0, listed.stderr
    dirty = [(e["offset"], e["length"]) for e in json.loads(listed.stdout) if e["type"] & 1]
    assert dirty == [(200 * MIB, MIB)]
    host.ok("backup", "stop", incremental["job"])
    wait_phase(host, incremental["job"], ("done",))
