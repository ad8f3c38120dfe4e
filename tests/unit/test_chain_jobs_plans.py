"""Job plans, specs, the job store's one-job-per-disk rule, and the chain XML documents."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from blockplane.chain.jobs.backup_plan import plan_backup
from blockplane.chain.jobs.plans import copy_destination, plan_commit, plan_copy, plan_pull
from blockplane.chain.jobs.spec import JobSpec, VolumeRef
from blockplane.chain.jobs.state import JobKind, JobPhase, new_job
from blockplane.chain.jobs.store import JobStore
from blockplane.errors import Conflict, InvalidInput, NotFound, PathEscape
from blockplane.model.chain import Chain, ChainElement, Mirror, element_name
from blockplane.store.database import Database
from blockplane.store.records import PoolRecord
from blockplane.xml.chain import (
    ImageTarget,
    backup_xml,
    checkpoint_xml,
    copy_destination_xml,
    snapshot_xml,
)


def chain(*paths: str, mirror: Mirror | None = None) -> Chain:
    indexes = [5, 3, 1, 7][: len(paths)]
    return Chain("vda", tuple(
        ChainElement(position, index, element_name("vda", position), path, "qcow2",
                     "qcow2" if position + 1 < len(paths) else None, "file")
        for position, (index, path) in enumerate(zip(indexes, paths, strict=True))
    ), mirror=mirror)


def pool(name: str, path: Path, kind: str = "dir") -> PoolRecord:
    return PoolRecord(name, kind, str(path), None, 1 << 20, 20)


def test_intermediate_commit_uses_libvirt_indexes_and_invalidates_above_base() -> None:
    three = chain("/p/top", "/p/mid", "/p/base")
    plan = plan_commit(three, three.elements[1], three.elements[2], pivot=False, bandwidth=7)
    assert plan.kind is JobKind.COMMIT and not plan.pivot
    assert (plan.libvirt_top, plan.libvirt_base) == ("vda[3]", "vda[1]")
    assert plan.spec.invalidated == ("/p/mid",) and plan.spec.bandwidth == 7
    assert plan.spec.new_top_path is None


def test_active_commit_pivots_onto_its_base_and_pivot_needs_an_active_commit() -> None:
    three = chain("/p/top", "/p/mid", "/p/base")
    plan = plan_commit(three, None, None, pivot=True, bandwidth=0)
    assert plan.kind is JobKind.ACTIVE_COMMIT and plan.pivot
    assert plan.spec.new_top_path == "/p/base"
    assert plan.spec.invalidated == ("/p/top", "/p/mid")
    with pytest.raises(InvalidInput):
        plan_commit(three, three.elements[1], None, pivot=True, bandwidth=0)


def test_pull_and_copy_plans() -> None:
    three = chain("/p/top", "/p/mid", "/p/base")
    pull = plan_pull(three, three.elements[2], bandwidth=0)
    assert pull.libvirt_base == "vda[1]" and pull.spec.invalidated == ("/p/mid",)
    everything = plan_pull(three, None, bandwidth=0)
    assert everything.libvirt_base is None
    assert everything.spec.invalidated == ("/p/mid", "/p/base")
    shallow = plan_copy(three, shallow=True, synchronous_writes=True, pivot=True, bandwidth=0)
    assert shallow.spec.shallow and shallow.spec.base_path == "/p/mid"
    assert shallow.spec.invalidated == ("/p/top",)
    full = plan_copy(three, shallow=False, synchronous_writes=False, pivot=False, bandwidth=0)
    assert full.spec.invalidated == ("/p/top", "/p/mid", "/p/base")


def test_a_foreign_mirror_makes_the_disk_busy() -> None:
    mirrored = chain("/p/top", mirror=Mirror("copy", "/x", "qcow2", None, 9))
    with pytest.raises(Conflict) as raised:
        plan_pull(chain("/p/top", "/p/base", mirror=mirrored.mirror), None, bandwidth=0)
    assert raised.value.code == "job.busy"


def test_copy_destination_must_be_a_dir_pool_volume(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    pools = [pool("d", tmp_path / "dir"), pool("l", tmp_path / "loop", "loop")]
    assert copy_destination(pools, None, "l", "vm-vda-copy") == ("l", "vm-vda-copy")
    assert copy_destination(pools, str(tmp_path / "dir" / "new"), None, "x") == ("d", "new")
    for bad in (str(tmp_path / "elsewhere"), str(tmp_path / "dir" / "sub" / "new"),
                str(tmp_path / "loop" / "v.img")):
        with pytest.raises(PathEscape):
            copy_destination(pools, bad, None, "x")
    with pytest.raises(InvalidInput):
        copy_destination(pools, str(tmp_path / "dir" / "a"), "d", "x")
    with pytest.raises(InvalidInput):
        copy_destination(pools, "relative/path", None, "x")
    (tmp_path / "dir" / "taken").write_bytes(b"")
    with pytest.raises(Conflict):
        copy_destination(pools, str(tmp_path / "dir" / "taken"), None, "x")


def test_backup_plan_confines_the_directory_and_names_a_checkpoint(tmp_path: Path) -> None:
    pools = [pool("b", tmp_path)]
    plan = plan_backup("abc", ["vda", "vdb"], ["vda"], str(tmp_path / "full"), None, [], pools)
    assert plan.spec.targets == ("vda",) and plan.spec.checkpoint == "bp-abc"
    assert plan.spec.backup_files == {"vda": str(tmp_path / "full" / "vda.qcow2")}
    backup = etree.fromstring(plan.backup_xml)
    assert backup.get("mode") == "push" and backup.find("incremental") is None
    assert [(d.get("name"), d.get("backup")) for d in backup.iter("disk")] == [
        ("vda", "yes"), ("vdb", "no")]
    checkpoint = etree.fromstring(plan.checkpoint_xml)
    assert checkpoint.findtext("name") == "bp-abc"
    with pytest.raises(PathEscape):
        plan_backup("abc", ["vda"], [], str(tmp_path), None, [], pools)
    with pytest.raises(PathEscape):
        plan_backup("abc", ["vda"], [], "/tmp/../etc/x", None, [], pools)
    with pytest.raises(NotFound):
        plan_backup("abc", ["vda"], [], str(tmp_path / "i"), "nope", ["bp-1"], pools)
    incremental = plan_backup("abc", ["vda"], [], str(tmp_path / "i"), "bp-1", ["bp-1"], pools)
    assert etree.fromstring(incremental.backup_xml).findtext("incremental") == "bp-1"


def test_spec_round_trips_through_json() -> None:
    ref = VolumeRef("p", "v", "/dev/loop3")
    spec = JobSpec(targets=("vda",), bandwidth=5, top_path="/a", destination=ref,
                   created=(ref,), new_top_path=ref.path, invalidated=("/a",),
                   backup_files={"vda": "/b/vda.qcow2"}, checkpoint="bp-1")
    assert JobSpec.from_json(spec.to_json()) == spec
    assert spec.paths() == {"/a", "/dev/loop3"}


def test_store_allows_one_live_job_per_disk(tmp_path: Path) -> None:
    database = Database(tmp_path / "state.db")
    database.execute("INSERT INTO vms VALUES ('vm', 'u', 1, 1, 'none', 0)")
    store = JobStore(database)
    first = new_job("j1", "vm", "vda", JobKind.COPY, now=1.0)
    assert store.insert_if_free(first, JobSpec(targets=("vda",))) is None
    backup = new_job("j2", "vm", "vda,vdb", JobKind.BACKUP, now=2.0)
    holder = store.insert_if_free(backup, JobSpec(targets=("vda", "vdb")))
    assert holder is not None and holder.id == "j1"
    other = new_job("j3", "vm", "vdb", JobKind.PULL, now=3.0)
    assert store.insert_if_free(other, JobSpec(targets=("vdb",))) is None
    store.save(replace(first, phase=JobPhase.DONE))
    assert store.holding("vm", "vda") is None
    assert [job.id for job in store.live()] == ["j3"]
    assert [job.id for job in store.all("vm")] == ["j1", "j3"]


def test_snapshot_and_copy_destination_xml() -> None:
    snapshot = etree.fromstring(snapshot_xml(
        "s1", [ImageTarget("vda", "file", "/p/o"), ImageTarget("vdb", "block", "/dev/loop4")],
        ["vdc"]))
    disks = {d.get("name"): d for d in snapshot.iter("disk")}
    assert disks["vda"].find("source").get("file") == "/p/o"  # type: ignore[union-attr]
    assert disks["vdb"].get("type") == "block"
    assert disks["vdb"].find("source").get("dev") == "/dev/loop4"  # type: ignore[union-attr]
    assert disks["vdc"].get("snapshot") == "no"
    destination = etree.fromstring(copy_destination_xml(ImageTarget("vda", "block", "/dev/l")))
    assert destination.get("type") == "block"
    assert destination.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert etree.fromstring(checkpoint_xml("c", ["vda"], ["vdb"])).findtext("name") == "c"
    assert etree.fromstring(backup_xml({"vda": "/b/v"}, [], None)).get("mode") == "push"
