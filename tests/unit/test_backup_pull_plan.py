"""Pull-backup planning: which disks, full or incremental per disk, fallbacks, refusals."""

from __future__ import annotations

import pytest

from blockplane.backup.pull_plan import AUTO, PullPlan, PullRequest, plan_pull
from blockplane.chain.checkpoint_health import DiskHealth
from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.store.records import DiskRecord, PoolRecord
from blockplane.xml.chain import CheckpointDisk, CheckpointDocument, parse_checkpoint

POOLS = {
    "dir": PoolRecord("dir", "dir", "/p/dir", None, 1 << 26, 50),
    "loop": PoolRecord("loop", "loop", "/p/loop", None, 1 << 26, 50),
}
DISKS = [DiskRecord("vm", "vda", "dir", "vm-vda", "virtio", {}),
         DiskRecord("vm", "vdb", "loop", "vm-vdb", "virtio", {})]


def checkpoint(name: str, created: int, *targets: str) -> CheckpointDocument:
    return CheckpointDocument(name, None, created,
                              tuple(CheckpointDisk(t, name, 0) for t in targets))


C1 = checkpoint("c1", 100, "vda", "vdb")
C2 = checkpoint("c2", 200, "vda")
OK = DiskHealth.OK


def plan(request: PullRequest, checkpoints: list[CheckpointDocument] | None = None,
         health: dict[str, dict[str, DiskHealth]] | None = None) -> PullPlan:
    return plan_pull("job1", request, DISKS, POOLS, checkpoints or [], health or {})


def test_a_full_backup_exports_every_disk_with_its_scratch_in_the_disks_pool() -> None:
    planned = plan(PullRequest("vm"))
    assert [(d.target, d.mode, d.scratch_pool.name) for d in planned.disks] == [
        ("vda", "full", "dir"), ("vdb", "full", "loop")]
    assert planned.incremental is None and planned.fallback is None
    assert planned.checkpoint == "bp-job1"
    created = parse_checkpoint(planned.checkpoint_xml)
    assert [(d.target, d.bitmap) for d in created.disks] == [("vda", "bp-job1"),
                                                             ("vdb", "bp-job1")]


def test_chosen_disks_and_scratch_pool() -> None:
    planned = plan(PullRequest("vm", targets=("vdb",), scratch_pool="dir"))
    assert planned.targets == ("vdb",) and planned.skipped == ("vda",)
    assert planned.disks[0].scratch_pool.name == "dir"
    assert [(d.target, d.bitmap) for d in parse_checkpoint(planned.checkpoint_xml).disks] == [
        ("vdb", "bp-job1"), ("vda", None)]


@pytest.mark.parametrize(("request_", "error", "code"), [
    (PullRequest("vm", targets=("vdz",)), NotFound, "disk.not_found"),
    (PullRequest("vm", scratch_pool="nope"), NotFound, "pool.not_found"),
    (PullRequest("vm", incremental="nope"), NotFound, "checkpoint.not_found"),
    (PullRequest("vm", timeout_s=0), InvalidInput, "backup.invalid"),
    (PullRequest("vm", incremental=" "), InvalidInput, "backup.invalid"),
])
def test_bad_requests_are_refused(request_: PullRequest, error: type[Exception],
                                  code: str) -> None:
    with pytest.raises(error) as raised:
        plan(request_, [C1])
    assert getattr(raised.value, "code", None) == code


def test_an_incremental_by_name_and_a_disk_newer_than_the_checkpoint() -> None:
    planned = plan(PullRequest("vm", incremental="c2"), [C1, C2], {"c2": {"vda": OK}})
    assert planned.incremental == "c2"
    assert [(d.target, d.mode) for d in planned.disks] == [("vda", "incremental"),
                                                           ("vdb", "full")]
    assert "vdb has no bitmap in checkpoint c2" in (planned.fallback or "")


def test_a_broken_bitmap_asked_for_by_name_is_refused() -> None:
    with pytest.raises(Conflict) as raised:
        plan(PullRequest("vm", incremental="c1"), [C1], {"c1": {"vda": DiskHealth.BROKEN,
                                                               "vdb": OK}})
    assert raised.value.code == "checkpoint.inconsistent"


def test_auto_takes_the_newest_checkpoint_and_falls_back_per_disk() -> None:
    health = {"c1": {"vda": DiskHealth.BROKEN, "vdb": OK}}
    planned = plan(PullRequest("vm", incremental=AUTO), [C1], health)
    assert planned.incremental == "c1"
    assert [(d.target, d.mode) for d in planned.disks] == [("vda", "full"),
                                                           ("vdb", "incremental")]
    assert "missing or inconsistent" in (planned.fallback or "")
    newest = plan(PullRequest("vm", incremental=AUTO), [C2, C1], {"c2": {"vda": OK}})
    assert newest.incremental == "c2"


def test_auto_with_nothing_usable_is_a_plain_full_backup() -> None:
    assert plan(PullRequest("vm", incremental=AUTO)).fallback == (
        "the VM has no checkpoint yet: full backup")
    broken = plan(PullRequest("vm", incremental=AUTO), [C1],
                  {"c1": {"vda": DiskHealth.BROKEN, "vdb": DiskHealth.BROKEN}})
    assert broken.incremental is None
    assert {d.mode for d in broken.disks} == {"full"}
    assert "no disk's bitmap in checkpoint c1 can be used" in (broken.fallback or "")


def test_an_unknown_verdict_is_left_to_libvirt() -> None:
    planned = plan(PullRequest("vm", incremental="c1"), [C1], {})
    assert {d.mode for d in planned.disks} == {"incremental"}
