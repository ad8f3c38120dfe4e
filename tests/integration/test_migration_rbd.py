"""``vm migrate`` of VMs on the lab's rbd pool ``shared`` (``lab up --ceph``: one cluster, the
same pool and secret UUID on both hosts), no-OS VMs.

A VM whose disks are all RBD images migrates there and back with no storage copy: each hop's
plan says ``shared``, the disks stay the same images (their data, and an RBD snapshot taken
before, read back with ``rbd export``), the throttle groups and the IOThread mapping (or the
rbd fallback to one IOThread) come along, ``snapshot list``, ``chain`` and ``thin status``
agree on the host that holds it, and the other keeps no record. A VM with a local thin disk and
an rbd disk copies only the local one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ceph_support import requires_ceph
from tests.lab_support import Lab, LabHost
from tests.migration_support import (
    FAST,
    MIB,
    Reference,
    api,
    assert_gone,
    assert_holds,
    destroy_everywhere,
    disk_path,
    ensure_pools,
    migrated,
    qemu_io,
    rows,
    same_content,
    unique,
)

pytestmark = [pytest.mark.integration, requires_ceph]

RBD = "shared"  # the lab's rbd pool, on every host


@pytest.fixture(scope="module")
def hosts(ceph_lab: Lab) -> tuple[LabHost, LabHost]:
    ensure_pools(ceph_lab)  # the loop pool `fast`; `shared` is the rbd pool here
    return ceph_lab.hosts[0], ceph_lab.hosts[1]


@pytest.fixture
def vm(ceph_lab: Lab) -> Iterator[str]:
    name = unique("rbdmig")
    try:
        yield name
    finally:
        destroy_everywhere(ceph_lab, name)


def rbd_export(lab: Lab, spec: str, into: Path) -> Path:
    """The image (or ``IMAGE@SNAPSHOT``) as the cluster holds it, read by the ``rbd`` tool."""
    assert lab.ceph is not None
    into.unlink(missing_ok=True)
    subprocess.run(["rbd", "--conf", lab.ceph["conf"], "export", spec, str(into)],
                   check=True, capture_output=True, timeout=120)
    return into


def same_bytes(reference: Path, exported: Path) -> bool:
    result = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(reference),
                             str(exported)], capture_output=True, text=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def image_of(host: LabHost, vm: str, target: str) -> str:
    """``POOL/IMAGE`` of the disk's volume, from the host's store."""
    (path,) = rows(host, "SELECT v.path FROM disks d JOIN volumes v ON v.pool = d.pool AND "
                   "v.name = d.volume WHERE d.vm = ? AND d.target = ?", vm, target)[0]
    assert str(path).startswith("rbd:"), path
    return str(path).removeprefix("rbd:")


def rbd_disks_agree(host: LabHost, vm: str, snapshots: list[str]) -> None:
    """``snapshot list``, ``chain`` and ``thin status`` on ``host`` describe the images."""
    listed = {s["name"]: s for s in host.json("snapshot", "list", vm)}
    assert sorted(listed) == snapshots
    for snapshot in listed.values():
        assert {d["status"] for d in snapshot["disks"]} == {"in_image"}, snapshot
    for target in ("vda", "vdb"):
        chain = host.json("chain", vm, target)
        assert [e["path"] for e in chain["elements"]] == [f"rbd:{image_of(host, vm, target)}"]
        assert [s["name"] for s in chain["rbd_snapshots"]] == snapshots
    thin = {row["target"]: row for row in host.json("thin", "status", vm)}
    assert set(thin) == {"vda", "vdb"}
    assert {row["state"] for row in thin.values()} == {"not_monitored"}


def no_records_left(host: LabHost, vm: str) -> None:
    assert rows(host, "SELECT name FROM volumes WHERE pool = ?", RBD) == []
    assert rows(host, "SELECT name FROM chain_snapshots WHERE vm = ?", vm) == []
    assert rows(host, "SELECT vm FROM chain_volumes WHERE vm = ?", vm) == []
    assert rows(host, "SELECT vm FROM disk_qos WHERE vm = ?", vm) == []


def test_a_vm_on_rbd_migrates_there_and_back_with_no_copy_keeping_its_disks_and_snapshot(
    ceph_lab: Lab, hosts: tuple[LabHost, LabHost], vm: str, tmp_path: Path
) -> None:
    one, two = hosts
    api(one, "POST", "/vms", {"name": vm, "vcpus": 2, "memory": "128M", "start": True})
    for group, iops in (("tier1", 20000), ("tier2", 10000)):
        api(one, "PUT", f"/vms/{vm}/throttle-groups/{group}", {"limits": {"total_iops_sec": iops}})
    api(one, "POST", f"/vms/{vm}/disks", {"pool": RBD, "size": "64M", "queues": 2,
                                          "throttle_groups": ["tier1", "tier2"]})
    mapped = api(one, "POST", f"/vms/{vm}/disks", {"pool": RBD, "size": "32M", "queues": 2,
                                                   "io_threads": 2})
    gate = one.json("facts")["capabilities"]["rbd_multi_iothread"]
    if not gate["supported"]:  # QEMU 10.0.2 here: one dedicated IOThread, and why
        assert mapped["plan"]["mode"] == "single"
        assert any("rbd multiqueue fix" in note for note in mapped["notes"])
    images = {t: image_of(one, vm, t) for t in ("vda", "vdb")}

    reference = Reference(tmp_path / "vda.raw", 64 * MIB)
    qemu_io(one, vm, "vda", "write -P 0x5a 1M 8M")
    reference.write(MIB, 8 * MIB, 0x5A)
    before = tmp_path / "before.raw"
    before.write_bytes(reference.path.read_bytes())
    one.json("snapshot", "create", vm, "--name", "before")
    qemu_io(one, vm, "vda", "write -P 0x33 4M 2M")
    reference.write(4 * MIB, 2 * MIB, 0x33)
    held = assert_holds(ceph_lab, one, vm)["live"]
    rbd_disks_agree(one, vm, ["before"])

    for source, destination, pattern in ((one, two, 0x77), (two, one, 0x11)):
        job = migrated(source, vm, destination.name)
        assert job["outcome"] == "succeeded" and job["error"] is None
        by_disk = {disk["target"]: disk for disk in job["spec"]["disks"]}
        assert {t: d["storage"] for t, d in by_disk.items()} == {"vda": "shared",
                                                                 "vdb": "shared"}
        assert {t: d["path"] for t, d in by_disk.items()} == {
            t: f"rbd:{image}" for t, image in images.items()}
        there = assert_holds(ceph_lab, destination, vm)["live"]
        assert there == held  # the same images, with the same IOThread mapping
        assert {t: image_of(destination, vm, t) for t in images} == images
        assert_gone(ceph_lab, source, vm, set())
        no_records_left(source, vm)
        rbd_disks_agree(destination, vm, ["before"])
        groups = {g["group"]: g for g in destination.json("throttle", "list", vm)}
        assert set(groups) == {"tier1", "tier2"}
        assert groups["tier2"]["limits"]["total_iops_sec"] == 10000
        assert same_bytes(reference.path, rbd_export(ceph_lab, images["vda"],
                                                     tmp_path / "now.raw"))
        assert same_bytes(before, rbd_export(ceph_lab, f"{images['vda']}@before",
                                             tmp_path / "snap.raw"))
        qemu_io(destination, vm, "vda", f"write -P {pattern:#x} 20M 1M")
        reference.write(20 * MIB, MIB, pattern)
        assert same_bytes(reference.path, rbd_export(ceph_lab, images["vda"],
                                                     tmp_path / "now.raw"))


def test_a_vm_with_a_local_and_an_rbd_disk_copies_only_the_local_one(
    ceph_lab: Lab, hosts: tuple[LabHost, LabHost], vm: str, tmp_path: Path
) -> None:
    one, two = hosts
    api(one, "POST", "/vms", {"name": vm, "vcpus": 1, "memory": "128M", "start": True})
    api(one, "POST", f"/vms/{vm}/disks", {"pool": FAST, "size": "128M", "thin": True})
    api(one, "POST", f"/vms/{vm}/disks", {"pool": RBD, "size": "32M"})
    local = rows(one, "SELECT volume FROM disks WHERE vm = ? AND target = 'vda'", vm)[0][0]
    image = image_of(one, vm, "vdb")
    local_ref = Reference(tmp_path / "vda.raw", 128 * MIB)
    rbd_ref = Reference(tmp_path / "vdb.raw", 32 * MIB)
    qemu_io(one, vm, "vda", "write -P 0x21 2M 6M")
    local_ref.write(2 * MIB, 6 * MIB, 0x21)
    qemu_io(one, vm, "vdb", "write -P 0x42 1M 3M")
    rbd_ref.write(MIB, 3 * MIB, 0x42)

    job = migrated(one, vm, two.name)
    storage: dict[str, Any] = {d["target"]: d["storage"] for d in job["spec"]["disks"]}
    assert storage == {"vda": "copied", "vdb": "shared"}
    assert_holds(ceph_lab, two, vm)
    assert_gone(ceph_lab, one, vm, {local})
    assert rows(one, "SELECT name FROM volumes WHERE pool = ?", RBD) == []
    assert image_of(two, vm, "vdb") == image
    assert same_content(local_ref.path, disk_path(ceph_lab, two, vm, "vda"))
    assert same_bytes(rbd_ref.path, rbd_export(ceph_lab, image, tmp_path / "vdb.out"))
