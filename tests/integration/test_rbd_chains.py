"""Chains and jobs on rbd disks, on the one-node cluster: RBD snapshots listed by ``snapshot
list`` and ``chain``; a running VM's local disk copied into Ceph with a pivot and back out; full
and incremental backups restored and compared with the snapshot they were taken from; and what
cannot work on an rbd disk refused with a code before anything is made.

Data is written through QEMU itself (HMP ``qemu-io`` on the disk's device), so every byte
compared went the way a guest's would.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from blockplane.xml.disk import parse_disks
from tests.ceph_support import ceph_cluster, requires_ceph
from tests.faults.consistency import wait_for
from tests.harness import AgentUnderTest
from tests.rbd_support import RadosPool, create_rbd_pool, module_rados_pool

__all__ = ["ceph_cluster", "module_rados_pool"]

pytestmark = [pytest.mark.integration, requires_ceph]

VM = "rbdchain"
MIB = 1024**2


@pytest.fixture(scope="module")
def setup(agent: AgentUnderTest, module_rados_pool: RadosPool) -> dict[str, str]:
    create_rbd_pool(agent, "ceph", module_rados_pool)
    agent.ok("pool", "create", "local", "--type", "dir")
    agent.json("vm", "create", VM, "--vcpus", "2", "--memory", "128M", "--start")
    return {"rbd": "ceph", "local": "local", "backups": str(agent.home / "pools" / "local")}


def qemu_io(agent: AgentUnderTest, target: str, command: str) -> str:
    """``command`` through QEMU's own block layer on the disk's device (HMP qemu-io)."""
    device = f"/machine/peripheral/ua-bp-{target}/virtio-backend"
    line = f'qemu-io -d {device} "{command}"'
    replies = agent.qmp(VM, {"execute": "human-monitor-command",
                             "arguments": {"command-line": line}})
    output = str(replies[0])
    assert "failed" not in output.lower() and "error" not in output.lower(), output
    return output


def disk_of(agent: AgentUnderTest, target: str) -> dict[str, Any]:
    disks: list[dict[str, Any]] = agent.json("disk", "list", VM)
    return next(disk for disk in disks if disk["target"] == target)


def live_device(agent: AgentUnderTest, target: str) -> Any:
    return next(d for d in parse_disks(agent.ok("vm", "show", VM, "--xml"))
                if d.target == target)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected(size: int, writes: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(size)
    for offset, length, pattern in writes:
        data[offset:offset + length] = bytes([pattern]) * length
    return bytes(data)


def wait_done(agent: AgentUnderTest, job: dict[str, Any]) -> dict[str, Any]:
    from tests.chain_helpers import wait_phase
    return wait_phase(agent, job["id"], ("done", "failed", "aborted"))


def test_snapshots_of_an_rbd_disk_are_rbd_snapshots_listed_with_the_chain(
    agent: AgentUnderTest, setup: dict[str, str], module_rados_pool: RadosPool,
) -> None:
    attached = agent.json("disk", "attach", VM, "--pool", setup["rbd"], "--size", "16M")
    target, volume = attached["target"], attached["volume"]
    taken = agent.json("snapshot", "create", VM, "--name", "before", "--disk", target)
    assert taken["state"] == "done"
    [disk] = taken["disks"]
    assert disk["kind"] == "rbd_snapshot" and disk["status"] == "in_image"
    assert disk["path"] == f"rbd:{module_rados_pool.name}/{volume}@before"
    assert module_rados_pool.snapshots(volume) == ["before"]
    listed = {s["name"]: s for s in agent.json("snapshot", "list", VM)}
    assert listed["before"]["disks"][0]["status"] == "in_image"
    chain = agent.json("chain", VM, target)
    assert [e["path"] for e in chain["elements"]] == [attached["source"]]
    assert [s["name"] for s in chain["rbd_snapshots"]] == ["before"]
    assert chain["elements"][0]["virtual_bytes"] == 16 * MIB
    code = agent.cli("snapshot", "create", VM, "--name", "before", "--disk", target)
    assert code.returncode != 0 and "already" in code.stderr


def test_what_has_no_meaning_on_rbd_is_refused_before_anything_is_made(
    agent: AgentUnderTest, setup: dict[str, str], module_rados_pool: RadosPool,
) -> None:
    rbd = agent.json("disk", "attach", VM, "--pool", setup["rbd"], "--size", "8M")
    local = agent.json("disk", "attach", VM, "--pool", setup["local"], "--size", "8M",
                       "--io-threads", "1")
    agent.json("snapshot", "create", VM, "--name", "overlay", "--disk", local["target"])
    images = module_rados_pool.images()
    for command, code in (
        (("commit", VM, rbd["target"]), "chain.rbd_no_backing"),
        (("pull", VM, rbd["target"]), "chain.rbd_no_backing"),
        (("snapshot", "create", VM, "--disk", rbd["target"], "--disk", local["target"]),
         "snapshot.mixed_storage"),
        (("backup", VM, "--dest", f"{setup['backups']}/mixed", "--disk", rbd["target"],
          "--disk", local["target"]), "backup.mixed_storage"),
        (("copy", VM, local["target"], "--pool", setup["rbd"], "--shallow"),
         "job.invalid_request"),
    ):
        result = agent.cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert f"[{code}]" in result.stderr, (command, result.stderr)
    assert module_rados_pool.images() == images
    assert not Path(setup["backups"], "mixed").exists()
    assert agent.json("job", "list", VM) == [] or all(
        job["kind"] != "backup" for job in agent.json("job", "list", VM))


def test_a_pivot_into_rbd_is_refused_for_a_disk_mapped_over_several_iothreads(
    agent: AgentUnderTest, setup: dict[str, str], module_rados_pool: RadosPool,
) -> None:
    """QEMU 10.0.2 lacks the rbd multiqueue fix: an rbd image must not serve several
    IOThreads, so a disk mapped over two may be copied into Ceph, not switched onto it."""
    agent.json("vm", "create", "rbdmapped", "--vcpus", "2", "--memory", "128M", "--start")
    mapped = agent.json("disk", "attach", "rbdmapped", "--pool", setup["local"], "--size",
                        "8M", "--queues", "2", "--io-threads", "2")
    assert len(mapped["plan"]["mapping"]) == 2, mapped["plan"]
    images = module_rados_pool.images()
    result = agent.cli("copy", "rbdmapped", mapped["target"], "--pool", setup["rbd"], "--pivot")
    assert result.returncode == 2 and "[copy.rbd_multiqueue_unsafe]" in result.stderr
    assert module_rados_pool.images() == images
    agent.ok("vm", "destroy", "rbdmapped")
    agent.json("vm", "delete", "rbdmapped")


def test_copy_moves_a_running_disk_into_ceph_with_a_pivot_and_back_out(
    agent: AgentUnderTest, setup: dict[str, str], module_rados_pool: RadosPool, tmp_path: Path,
) -> None:
    local = agent.json("disk", "attach", VM, "--pool", setup["local"], "--size", "8M",
                       "--format", "raw", "--io-threads", "1")
    target = local["target"]
    writes = [(0, MIB, 0x11), (3 * MIB, 2 * MIB, 0x22)]
    for offset, length, pattern in writes:
        qemu_io(agent, target, f"write -P {pattern:#x} {offset} {length}")
    job = agent.json("copy", VM, target, "--pool", setup["rbd"], "--pivot")
    ended = wait_done(agent, job)
    assert ended["phase"] == "done", ended
    moved = disk_of(agent, target)
    assert moved["pool"] == setup["rbd"] and moved["source"].startswith("rbd:")
    device = live_device(agent, target)
    assert device.network is not None and device.network.protocol == "rbd"
    # The local volume goes once libvirt's persistent definition no longer names it either.
    wait_for(lambda: not Path(local["source"]).exists(), "the local volume to be deleted", 60)
    image = moved["source"].split("/", 1)[1]
    exported = module_rados_pool.export(image, tmp_path / "in-ceph.raw")
    assert exported.read_bytes() == expected(8 * MIB, writes)

    qemu_io(agent, target, f"write -P 0x33 {5 * MIB} {MIB}")  # now written into Ceph
    writes.append((5 * MIB, MIB, 0x33))
    back = wait_done(agent, agent.json("copy", VM, target, "--pool", setup["local"],
                                       "--pivot"))
    assert back["phase"] == "done", back
    returned = disk_of(agent, target)
    assert returned["pool"] == setup["local"] and not returned["source"].startswith("rbd:")
    wait_for(lambda: image not in module_rados_pool.images(), "the rbd image to be removed", 60)
    flat = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", returned["source"], str(flat)],
                   check=True, timeout=60)
    assert flat.read_bytes() == expected(8 * MIB, writes)


def test_full_and_incremental_backups_of_an_rbd_disk_restore_to_their_snapshots(
    agent: AgentUnderTest, setup: dict[str, str], module_rados_pool: RadosPool, tmp_path: Path,
) -> None:
    attached = agent.json("disk", "attach", VM, "--pool", setup["rbd"], "--size", "8M")
    target, volume = attached["target"], attached["volume"]
    qemu_io(agent, target, f"write -P 0x44 0 {2 * MIB}")
    full_dir = Path(setup["backups"], "rbd-full")
    full = agent.json("backup", VM, "--dest", str(full_dir), "--disk", target)
    assert full["phase"] == "done", full
    first = full["spec"]["checkpoint"]
    assert first in module_rados_pool.snapshots(volume)
    manifest = json.loads((full_dir / f"{target}.json").read_text())
    assert manifest["kind"] == "full" and manifest["format"] == "qcow2"

    qemu_io(agent, target, f"write -P 0x55 {4 * MIB} {MIB}")
    inc_dir = Path(setup["backups"], "rbd-inc")
    inc = agent.json("backup", VM, "--dest", str(inc_dir), "--disk", target,
                     "--incremental", first)
    assert inc["phase"] == "done", inc
    second = inc["spec"]["checkpoint"]
    diff = inc_dir / f"{target}.rbd-diff"
    assert diff.stat().st_size < 2 * MIB  # only what changed since the full backup

    # Restore: the full backup into a new image, the incremental onto it.
    cluster = module_rados_pool.cluster
    raw = tmp_path / "full.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(full_dir / f"{target}.qcow2"),
                    str(raw)], check=True, timeout=60)
    restored = f"{module_rados_pool.name}/restored-{volume}"
    cluster.run("rbd", "import", "--no-progress", str(raw), restored, timeout_s=120)
    cluster.run("rbd", "snap", "create", f"{restored}@{first}")
    cluster.run("rbd", "import-diff", "--no-progress", str(diff), restored, timeout_s=120)
    got = module_rados_pool.export(f"restored-{volume}", tmp_path / "restored.raw")
    truth = tmp_path / "truth.raw"
    cluster.run("rbd", "export", "--no-progress", f"{module_rados_pool.name}/{volume}@{second}",
                str(truth), timeout_s=120)
    assert digest(got) == digest(truth)
    assert got.read_bytes() == expected(8 * MIB, [(0, 2 * MIB, 0x44), (4 * MIB, MIB, 0x55)])
    assert raw.read_bytes() == expected(8 * MIB, [(0, 2 * MIB, 0x44)])

    missing = agent.cli("backup", VM, "--dest", str(Path(setup["backups"], "rbd-x")),
                        "--disk", target, "--incremental", "bp-000000000000")
    assert missing.returncode == 2 and "[checkpoint.not_found]" in missing.stderr
