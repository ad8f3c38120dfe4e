"""The destination's plan (``plan_landing``) for a VM with a thin throttled disk, a mapped
disk, a scsi disk behind its controller's mapping and a disk on shared storage: what each
gets, the XML the destination runs, and every refusal, made before anything is changed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from blockplane.errors import BlockplaneError
from blockplane.facts.capabilities import Capability
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.iothreads.model import MappingSupport
from blockplane.migration.landing import HostView, PoolRoom, plan_landing
from blockplane.migration.plan import (
    ChainElement,
    DiskMove,
    MigrationPlan,
    MigrationRequest,
    VMDescription,
)
from blockplane.storage.fill_size import fill_size
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.store.records import PoolRecord

XML = (Path(__file__).parent / "data" / "migration_source.xml").read_text()
MIB = 1 << 20
OK = MappingSupport(True, "supported")
YES = Capability(True, "supported", "")
FAST = PoolRecord("fast", "loop", "/var/lib/blockplane/pools/fast", None, 64 * MIB, 50)
SHARED = PoolRecord("shared", "dir", "/var/lib/blockplane-shared/pool", None, 64 * MIB, 50)
IDENTITY = "dir:7d3c"


def move(target: str, **changes: object) -> DiskMove:
    base = DiskMove(
        target=target, bus="scsi" if target.startswith("sd") else "virtio", source_pool="fast",
        source_volume=f"m1-{target}", source_path=f"/dev/loop-{target}",
        destination_pool="fast", format="qcow2", thin=False, virtual_bytes=256 * MIB,
        required_bytes=10 * MIB, throttled=False,
        stored_plan={"reason": f"{target} as attached", "io_threads_requested": 2},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


DISKS = (
    move("vda", thin=True, throttled=True),
    move("vdb"),
    move("vdc", source_pool="shared", destination_pool="shared", source_volume="m1-vdc-snap",
         source_path="/var/lib/blockplane-shared/pool/m1-vdc-snap", shared_identity=IDENTITY,
         chain=(ChainElement("shared", "m1-vdc-snap", "/p/m1-vdc-snap", "snapshot"),
                ChainElement("shared", "m1-vdc", "/p/m1-vdc", "disk"))),
    move("sda"),
)
REQUEST = MigrationRequest(
    id="0123456789ab", vm=VMDescription("m1", "a49744e9", 2, 128 * MIB, "none"),
    copy_storage="auto", disks=DISKS, live_xml=XML, persistent_xml=XML,
)


def host(**changes: object) -> HostView:
    base = HostView(
        pools={
            "fast": PoolRoom(FAST, None, frozenset(), 0, 10 * 1024 * MIB),
            "shared": PoolRoom(SHARED, IDENTITY, frozenset({"m1-vdc", "m1-vdc-snap"}), 0, None),
        },
        limits=HostIOThreadLimits(8, 16, OK, OK, OK),
        throttle_groups=YES, block_threshold=YES,
        libvirt_uri="qemu+tls://host2/system", migration_uri=None, vm_exists=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def disk_element(xml: str, target: str) -> etree._Element:
    root = etree.fromstring(xml.encode())
    found = root.find(f"devices/disk/target[@dev='{target}']/..")
    assert found is not None
    return found


def test_local_disks_are_copied_into_new_volumes_and_the_shared_one_stays() -> None:
    plan = plan_landing(REQUEST, host(), REQUEST.id)
    by = {disk.target: disk for disk in plan.disks}
    assert plan.copied == ("vda", "vdb", "sda")
    assert by["vda"].physical_bytes == fill_size(10 * MIB, chunk_bytes=64 * MIB,
                                                 ceiling_bytes=qcow2_max_physical(256 * MIB))
    assert by["vdb"].physical_bytes == qcow2_max_physical(256 * MIB)  # not thin: whole
    assert by["vda"].volume == "m1-vda" and by["vda"].kind == "block"
    assert not by["vdc"].copy and by["vdc"].path == DISKS[2].source_path
    assert "not copied" in by["vdc"].storage_reason
    # every mapping runs here as it is: kept, with the reason it was given at attach
    assert by["vdb"].mapping == ((102, (0,)), (103, (1,)))
    assert by["sda"].mapping == ((104, (0,)), (105, (1,)))
    assert by["vda"].mode == "single" and by["vda"].mapping == ((101, (0, 1)),)
    assert by["vdb"].iothreads_reason == "vdb as attached (kept: this host runs it as it is)"
    assert plan.iothread_ids == (101, 102, 103, 104, 105)
    assert MigrationPlan.from_json(plan.to_json()) == plan


def test_the_xml_points_copied_disks_at_their_new_volumes_and_keeps_everything_else() -> None:
    paths = {"vda": "/dev/loop21", "vdb": "/dev/loop22", "sda": "/dev/loop23"}
    plan = plan_landing(REQUEST, host(), REQUEST.id, paths)
    for target, path in paths.items():
        disk = disk_element(plan.live_xml, target)
        assert disk.get("type") == "block"
        assert disk.find("source").get("dev") == path  # type: ignore[union-attr]
    vdc = disk_element(plan.live_xml, "vdc")
    assert vdc.find("source").get("file") == DISKS[2].source_path  # type: ignore[union-attr]
    assert vdc.find("backingStore") is not None  # shared: its chain is untouched
    vda = disk_element(plan.live_xml, "vda")
    assert [f.get("group") for f in vda.iterfind("throttlefilters/throttlefilter")] == [
        "tier1", "tier2"]
    root = etree.fromstring(plan.live_xml.encode())
    assert [g.findtext("group_name") for g in root.iterfind("throttlegroups/throttlegroup")] == [
        "tier1", "tier2"]
    assert plan.persistent_xml == plan.live_xml  # the same definition was given for both


def test_a_host_without_the_mapping_replans_with_the_fallback_in_the_xml() -> None:
    no = MappingSupport(False, "needs QEMU >= 9.0")
    plan = plan_landing(REQUEST, host(limits=HostIOThreadLimits(8, 16, no, no, OK)),
                        REQUEST.id, {"vdb": "/dev/loop22"})
    vdb = plan.disk("vdb")
    assert vdb is not None and vdb.mode == "single" and "needs QEMU >= 9.0" in vdb.iothreads_reason
    driver = disk_element(plan.live_xml, "vdb").find("driver")
    assert driver is not None and driver.get("queues") == "2"  # the guest's queues stay
    assert driver.get("iothread") == str(vdb.mapping[0][0]) and driver.find("iothreads") is None
    controller = etree.fromstring(plan.live_xml.encode()).find(
        "devices/controller[@type='scsi']/driver")
    assert controller is not None and controller.find("iothreads") is None
    ids = {int(n.get("id", "0")) for n in etree.fromstring(plan.live_xml.encode()).iterfind(
        "iothreadids/iothread")}
    assert ids == set(plan.iothread_ids)


def test_copy_all_copies_the_shared_disk_too_under_a_free_name() -> None:
    plan = plan_landing(replace(REQUEST, copy_storage="all"), host(), REQUEST.id)
    vdc = plan.disk("vdc")
    assert vdc is not None and vdc.copy and vdc.volume == "m1-vdc-snap-012345"


@pytest.mark.parametrize(("request_changes", "host_changes", "code"), [
    ({"disks": (replace(DISKS[1], destination_pool="nope"),)}, {}, "pool.not_found"),
    ({"copy_storage": "none"}, {}, "migration.not_shared"),
    ({"disks": (replace(DISKS[0], destination_pool="shared"),)}, {},
     "migration.pool_unsuitable"),
    ({}, {"vm_exists": True}, "vm.exists"),
    ({}, {"libvirt_uri": None}, "migration.destination_unsupported"),
    ({}, {"missing_files": ("/usr/bin/qemu-system-x86_64",)}, "migration.missing_file"),
    ({}, {"throttle_groups": Capability(False, "libvirt 10.0 < 11.2", "")},
     "capability.missing"),
    ({}, {"pools": {"fast": PoolRoom(FAST, None, frozenset(), 0, 5 * MIB),
                    "shared": PoolRoom(SHARED, IDENTITY, frozenset({"m1-vdc-snap"}), 0, None)}},
     "pool.full"),
    ({}, {"pools": {"fast": PoolRoom(replace(FAST, capacity_bytes=300 * MIB), None, frozenset(),
                                     0, None),
                    "shared": PoolRoom(SHARED, IDENTITY, frozenset({"m1-vdc-snap"}), 0, None)}},
     "pool.full"),
])
def test_each_refusal_has_its_code(request_changes: dict[str, object],
                                   host_changes: dict[str, object], code: str) -> None:
    with pytest.raises(BlockplaneError) as refused:
        plan_landing(replace(REQUEST, **request_changes), host(**host_changes),  # type: ignore[arg-type]
                     REQUEST.id)
    assert refused.value.code == code


def test_a_request_survives_its_json_form() -> None:
    assert MigrationRequest.from_json(REQUEST.to_json()) == REQUEST
