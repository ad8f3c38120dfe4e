"""The adoption judge: which disks become volumes, which stay foreign, and what refuses."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from blockplane.model.inventory import ChainLink, DiskInventory, DomainInventory
from blockplane.storage.volume_paths import Location
from blockplane.vms.adopt_plan import (
    AdoptionRefused,
    ChainRead,
    Claims,
    ImageInfo,
    Observed,
    judge,
)

NOBODY = Claims(frozenset(), frozenset(), {}, frozenset())


def disk(target: str, path: str | None, **fields: object) -> DiskInventory:
    values: dict[str, object] = {"bus": "virtio", "device": "disk", "source_type": "file",
                                 "format": "qcow2"}
    values.update(fields)
    return DiskInventory(target=target, path=path, **values)  # type: ignore[arg-type]


def domain(*disks: DiskInventory, name: str = "web") -> DomainInventory:
    return DomainInventory(name, "uuid-1", 2, 1 << 30, (101,), (), disks)


def observed(
    inventory: DomainInventory,
    chains: Mapping[str, ChainRead],
    locations: Mapping[str, Location],
    *,
    block: frozenset[str] = frozenset(),
    missing: frozenset[str] = frozenset(),
) -> Observed:
    images = {
        path: ImageInfo(path not in missing, 1 << 30, 1 << 20, path in block)
        for path in locations
    }
    return Observed(inventory, True, chains, locations, images,
                    {"fast": "dir", "thin": "loop"}, {"vda": 3}, ("cp1",))


def chain(*paths: str) -> ChainRead:
    return ChainRead(tuple(ChainLink(p, "qcow2", "file") for p in paths))


def test_pool_disks_are_managed_the_rest_is_foreign() -> None:
    inventory = domain(
        disk("vda", "/p/top", chain=()),
        disk("vdb", "/dev/loop3", source_type="block"),
        disk("vdc", "/srv/other.raw", format="raw"),
        disk("sda", "/isos/a.iso", device="cdrom", readonly=True),
        disk("vdd", None, source_type="network", network="rbd:rbd/x"),
    )
    plan = judge(observed(
        inventory,
        {"vda": chain("/p/top", "/p/base", "/shared/golden"), "vdb": chain("/dev/loop3")},
        {"/p/top": Location("fast", "top"), "/p/base": Location("fast", "base"),
         "/shared/golden": Location(), "/dev/loop3": Location("thin", "data"),
         "/srv/other.raw": Location(), "/isos/a.iso": Location()},
        block=frozenset({"/dev/loop3"}),
    ), NOBODY)
    managed = {d.disk.target: d for d in plan.disks}
    assert [(i.pool, i.volume) for i in managed["vda"].images] == [("fast", "top"),
                                                                   ("fast", "base")]
    assert managed["vda"].foreign_paths == ("/shared/golden",)
    assert managed["vda"].block_job == 3 and managed["vda"].thin is False
    assert managed["vdb"].thin is True  # a qcow2 on a loop pool's block device
    assert {f.disk.target: f.reason for f in plan.foreign} == {
        "vdc": "outside every pool",
        "sda": "a cdrom, not a disk",
        "vdd": "a network disk (rbd:rbd/x)",
    }
    assert set(plan.foreign_paths) == {"/srv/other.raw", "/isos/a.iso", "/shared/golden"}
    assert plan.reserved_iothreads == (101,) and plan.checkpoints == ("cp1",)
    assert managed["vda"].plan_json()["adopted"] is True


def test_a_raw_or_file_disk_of_a_loop_pool_is_not_thin() -> None:
    inventory = domain(disk("vda", "/t/data.img", format="raw"))
    plan = judge(observed(inventory, {"vda": chain("/t/data.img")},
                          {"/t/data.img": Location("thin", "data")}), NOBODY)
    assert plan.disks[0].thin is False


def refusals(error: pytest.ExceptionInfo[AdoptionRefused]) -> dict[str, str]:
    return {r.item: r.reason for r in error.value.refusals}


def test_every_reason_is_given_and_nothing_is_planned() -> None:
    inventory = domain(
        disk("vda", "/p/top"),
        disk("vdb", "/p/shared"),
        disk("vdc", "/p/weird name"),
    )
    claims = Claims(frozenset({"db"}), frozenset({"uuid-1"}),
                    {("fast", "shared"): "db"}, frozenset())
    with pytest.raises(AdoptionRefused) as raised:
        judge(observed(
            inventory,
            {"vda": chain("/p/top", "/p/gone"), "vdb": chain("/p/shared"),
             "vdc": chain("/p/weird name")},
            {"/p/top": Location("fast", "top"), "/p/gone": Location("fast", "gone"),
             "/p/shared": Location("fast", "shared"),
             "/p/weird name": Location("fast", None, "cannot name a volume")},
            missing=frozenset({"/p/gone"}),
        ), claims)
    reasons = refusals(raised)
    assert raised.value.code == "adopt.refused"
    assert reasons["web"] == "a managed VM already has the domain UUID uuid-1"
    assert reasons["vda"] == "chain element /p/gone is missing on disk"
    assert "in use by managed VM db" in reasons["vdb"]
    assert reasons["vdc"] == "cannot name a volume"


def test_a_managed_name_is_refused_alone() -> None:
    claims = Claims(frozenset({"web"}), frozenset(), {}, frozenset())
    with pytest.raises(AdoptionRefused) as raised:
        judge(observed(domain(disk("vda", "/p/top")), {"vda": chain("/p/top")},
                       {"/p/top": Location("fast", "top")}), claims)
    assert refusals(raised) == {"web": "a VM of this name is already managed"}


def test_a_backing_image_another_vm_holds_stays_foreign_to_this_one() -> None:
    claims = Claims(frozenset(), frozenset(), {("fast", "golden"): "db"}, frozenset())
    plan = judge(observed(domain(disk("vda", "/p/top")), {"vda": chain("/p/top", "/p/golden")},
                          {"/p/top": Location("fast", "top"),
                           "/p/golden": Location("fast", "golden")}), claims)
    assert plan.disks[0].foreign_paths == ("/p/golden",)
    assert [image.volume for image in plan.disks[0].images] == ["top"]


def test_a_volume_already_recorded_alone_is_taken_without_a_new_row() -> None:
    claims = Claims(frozenset(), frozenset(), {}, frozenset({("fast", "top")}))
    plan = judge(observed(domain(disk("vda", "/p/top")), {"vda": chain("/p/top")},
                          {"/p/top": Location("fast", "top")}), claims)
    assert plan.disks[0].top.recorded is True
