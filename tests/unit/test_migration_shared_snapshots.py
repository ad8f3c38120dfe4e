"""Snapshots travel with a migrating VM only where their bytes stay: every disk of the snapshot
left on shared storage (an rbd disk's RBD snapshots live in its image). A snapshot with a disk
that was copied stays behind; one being taken never travels."""

from __future__ import annotations

from blockplane.migration.plan import DiskLanding, MigrationPlan, MigrationRequest, VMDescription
from blockplane.migration.shared_snapshots import carried, landed
from blockplane.store.chain_records import SnapshotRecord


def landing(target: str, *, copy: bool, pool: str) -> DiskLanding:
    return DiskLanding(target=target, copy=copy, pool=pool, volume=f"v-{target}", path="p",
                       kind="network", physical_bytes=0, thin=False, format="raw",
                       virtual_bytes=1 << 20, mode="single", queues=1, mapping=((1, (0,)),),
                       iothreads_reason="", storage_reason="")


def plan(*disks: DiskLanding) -> MigrationPlan:
    return MigrationPlan(disks=disks, iothread_ids=(1,), live_xml="", persistent_xml="",
                         libvirt_uri="qemu+tcp://h/system")


def snapshot(name: str, *targets: str, state: str = "done") -> SnapshotRecord:
    disks = [{"target": t, "pool": "ceph-here", "kind": "rbd_snapshot",
              "path": f"rbd:rbd/v-{t}@{name}"} for t in targets]
    return SnapshotRecord("vm1", name, state, True, disks, 12.5)


def test_snapshots_of_disks_left_in_place_land_with_the_destinations_pool_names() -> None:
    sent = carried([snapshot("both", "vda", "vdb"), snapshot("taking", "vda", state="creating")])
    assert [s["name"] for s in sent] == ["both"]  # one being taken does not travel
    there = plan(landing("vda", copy=False, pool="ceph-there"),
                 landing("vdb", copy=False, pool="ceph-there"))
    [kept] = landed("vm1", sent, there)
    assert (kept.vm, kept.name, kept.state, kept.quiesced, kept.created_at) == (
        "vm1", "both", "done", True, 12.5)
    assert [(d["target"], d["pool"], d["path"]) for d in kept.disks] == [
        ("vda", "ceph-there", "rbd:rbd/v-vda@both"), ("vdb", "ceph-there", "rbd:rbd/v-vdb@both")]


def test_a_snapshot_with_a_copied_disk_stays_behind() -> None:
    sent = carried([snapshot("mixed", "vda", "vdb"), snapshot("rbd-only", "vdb")])
    there = plan(landing("vda", copy=True, pool="fast"),
                 landing("vdb", copy=False, pool="ceph-there"))
    assert [s.name for s in landed("vm1", sent, there)] == ["rbd-only"]


def test_the_snapshots_survive_the_requests_trip_as_json() -> None:
    request = MigrationRequest(id="j1", vm=VMDescription("vm1", "u", 1, 1 << 27, "none"),
                               copy_storage="auto", disks=(), live_xml="<x/>",
                               persistent_xml="<x/>", snapshots=carried([snapshot("s", "vda")]))
    again = MigrationRequest.from_json(request.to_json())
    assert again.snapshots == request.snapshots and len(again.snapshots) == 1
    assert MigrationRequest.from_json({**request.to_json(), "snapshots": None}).snapshots == ()
