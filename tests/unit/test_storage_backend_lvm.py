"""The LVM backend against a fake command runner that behaves like a small volume group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blockplane.errors import Conflict, InvalidInput, NotFound, OperationFailed, PathEscape
from blockplane.storage.backends.factory import open_backend
from blockplane.storage.backends.lvm import LvmBackend
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.commands import CommandResult, check_result

MIB, GIB = 1 << 20, 1 << 30
EXTENT = 4 * MIB


@dataclass
class FakeVolumeGroup:
    """Answers lvs/lvcreate/lvextend/lvchange/lvremove like LVM would, for one VG."""

    name: str = "vg0"
    size: int = 10 * GIB
    volumes: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)

    def run(self, args: Sequence[str], *, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        argv = list(args)
        self.calls.append(argv)
        code, out, err = getattr(self, "_" + argv[0])(argv[1:])
        result = CommandResult(tuple(argv), code, out, err)
        return check_result(result) if check else result

    def _free(self) -> int:
        return self.size - sum(size for size, _ in self.volumes.values())

    def _lv(self, target: str) -> str | None:
        group, _, lv = target.partition("/")
        return lv if group == self.name else None

    def _lvs(self, args: list[str]) -> tuple[int, str, str]:
        target = args[-1]
        assert args[:-1] == ["--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
                             "-o", "lv_name,lv_size,lv_tags"]
        if "/" not in target:
            if target != self.name:
                return 5, "", f'  Volume group "{target}" not found\n'
            names = sorted(self.volumes)
        else:
            lv = self._lv(target)
            if lv not in self.volumes:
                return 5, "", f'  Failed to find logical volume "{target}"\n'
            names = [lv]
        rows = [f"  {n}|{self.volumes[n][0]}|{','.join(self.volumes[n][1])}\n" for n in names]
        return 0, "".join(rows), ""

    def _lvcreate(self, args: list[str]) -> tuple[int, str, str]:
        opts = dict(zip(args[1:-1:2], args[2:-1:2], strict=True))
        assert args[0] == "--yes" and args[-1] == self.name
        name, size = opts["-n"], _extents(int(opts["-L"].removesuffix("b")))
        if name in self.volumes:
            return 5, "", f'  Logical Volume "{name}" already exists in volume group\n'
        if size > self._free():
            return 5, "", f'  Volume group "{self.name}" has insufficient free space\n'
        self.volumes[name] = (size, [opts["--addtag"]])
        self.active.add(name)
        return 0, f'  Logical volume "{name}" created.\n', ""

    def _lvextend(self, args: list[str]) -> tuple[int, str, str]:
        assert args[0] == "-L"
        lv = self._lv(args[2])
        assert lv in self.volumes
        size, tags = self.volumes[lv]
        new = _extents(int(args[1].removesuffix("b")))
        if new - size > self._free():
            return 5, "", "  Insufficient free space: 64 extents needed, but only 2 available\n"
        self.volumes[lv] = (new, tags)
        return 0, "", ""

    def _lvchange(self, args: list[str]) -> tuple[int, str, str]:
        lv = self._lv(args[1])
        if lv not in self.volumes:
            return 5, "", f'  Failed to find logical volume "{args[1]}"\n'
        if args[0] == "-ay":
            self.active.add(lv)
        return 0, "", ""

    def _lvremove(self, args: list[str]) -> tuple[int, str, str]:
        assert args[0] == "-y"
        lv = self._lv(args[1])
        if lv in {"busy"}:
            return 5, "", f'  Logical volume {args[1]} in use.\n'
        assert lv is not None
        del self.volumes[lv]
        return 0, "", ""


def _extents(size: int) -> int:
    return -(-size // EXTENT) * EXTENT


@pytest.fixture
def group() -> FakeVolumeGroup:
    return FakeVolumeGroup()


@pytest.fixture
def backend(group: FakeVolumeGroup) -> LvmBackend:
    return LvmBackend("vg0", runner=group)


def test_create_makes_a_tagged_lv_and_reports_its_device(backend: LvmBackend,
                                                         group: FakeVolumeGroup) -> None:
    volume = backend.create("vdb", 256 * MIB)
    assert volume.path == Path("/dev/vg0/vdb")
    assert volume.physical_bytes == 256 * MIB
    assert ["lvcreate", "--yes", "-n", "vdb", "-L", f"{256 * MIB}b", "--addtag", "blockplane",
            "vg0"] in group.calls
    assert backend.list() == ["vdb"]
    assert backend.is_block and backend.kind == "lvm"


def test_sizes_are_read_back_after_lvm_rounds_to_extents(backend: LvmBackend) -> None:
    assert backend.create("vdb", 100 * MIB + 1).physical_bytes == 104 * MIB
    assert backend.grow("vdb", 200 * MIB + 1) == 204 * MIB
    assert backend.physical_size("vdb") == 204 * MIB


def test_grow_extends_then_refreshes(backend: LvmBackend, group: FakeVolumeGroup) -> None:
    backend.create("vdb", 256 * MIB)
    assert backend.grow("vdb", 512 * MIB) == 512 * MIB
    changes = [call for call in group.calls if call[0] != "lvs"]
    assert changes[-2:] == [["lvextend", "-L", f"{512 * MIB}b", "vg0/vdb"],
                            ["lvchange", "--refresh", "vg0/vdb"]]


def test_grow_to_the_same_size_changes_nothing(backend: LvmBackend,
                                               group: FakeVolumeGroup) -> None:
    backend.create("vdb", 256 * MIB)
    calls = len(group.calls)
    assert backend.grow("vdb", 256 * MIB) == 256 * MIB
    assert all(call[0] == "lvs" for call in group.calls[calls:])


def test_shrink_is_refused(backend: LvmBackend) -> None:
    backend.create("vdb", 256 * MIB)
    with pytest.raises(InvalidInput) as caught:
        backend.grow("vdb", 128 * MIB)
    assert caught.value.code == "volume.shrink_refused"
    assert backend.physical_size("vdb") == 256 * MIB


def test_pool_capacity_refuses_overcommit(group: FakeVolumeGroup) -> None:
    backend = LvmBackend("vg0", runner=group, capacity=PoolCapacity(GIB))
    backend.create("vda", 768 * MIB)
    backend.create("vdb", 256 * MIB - 8 * MIB)
    with pytest.raises(Conflict) as caught:
        backend.grow("vdb", 512 * MIB)
    assert caught.value.code == "pool.full"
    assert "extending vdb by 264 MiB would use 1.25 GiB of the pool's 1 GiB limit" in str(
        caught.value)
    with pytest.raises(Conflict, match="creating vdc with 16 MiB"):
        backend.create("vdc", 16 * MIB)
    assert backend.physical_size("vdb") == 248 * MIB
    assert backend.list() == ["vda", "vdb"]


def test_volume_group_without_room_is_reported_as_pool_full(group: FakeVolumeGroup) -> None:
    group.size = GIB
    backend = LvmBackend("vg0", runner=group)
    backend.create("vda", 768 * MIB)
    with pytest.raises(Conflict) as caught:
        backend.create("vdb", 512 * MIB)
    assert caught.value.code == "pool.full"
    assert "insufficient free space" in caught.value.message
    with pytest.raises(Conflict, match="Insufficient free space"):
        backend.grow("vda", 2 * GIB)


def test_existing_volume_is_a_conflict(backend: LvmBackend) -> None:
    backend.create("vdb", 256 * MIB)
    with pytest.raises(Conflict) as caught:
        backend.create("vdb", 256 * MIB)
    assert caught.value.code == "volume.exists"


def test_foreign_lvs_are_never_listed_grown_or_removed(backend: LvmBackend,
                                                       group: FakeVolumeGroup) -> None:
    group.volumes["root"] = (8 * GIB, [])
    group.volumes["other"] = (GIB, ["backup"])
    backend.create("vdb", 256 * MIB)
    assert backend.list() == ["vdb"]
    assert backend.used_bytes() == 256 * MIB
    for action in (lambda: backend.grow("root", 9 * GIB), lambda: backend.delete("root"),
                   lambda: backend.physical_size("other"), lambda: backend.activate("root")):
        with pytest.raises(Conflict) as caught:
            action()
        assert caught.value.code == "volume.not_managed"
    with pytest.raises(Conflict):
        backend.create("root", MIB)
    assert group.volumes["root"] == (8 * GIB, [])
    assert not any(call[0] in {"lvremove", "lvextend"} for call in group.calls)


def test_missing_volume_is_not_found(backend: LvmBackend) -> None:
    for action in (lambda: backend.grow("nope", GIB), lambda: backend.delete("nope"),
                   lambda: backend.physical_size("nope"), lambda: backend.activate("nope")):
        with pytest.raises(NotFound) as caught:
            action()
        assert caught.value.code == "volume.not_found"


def test_missing_volume_group_is_not_found(group: FakeVolumeGroup) -> None:
    with pytest.raises(NotFound) as caught:
        LvmBackend("vg9", runner=group).list()
    assert caught.value.code == "pool.not_found"


def test_delete_removes_the_lv(backend: LvmBackend, group: FakeVolumeGroup) -> None:
    backend.create("vdb", 256 * MIB)
    backend.delete("vdb")
    assert backend.list() == []
    assert ["lvremove", "-y", "vg0/vdb"] in group.calls


def test_delete_of_a_busy_lv_fails_with_lvm_stderr(backend: LvmBackend) -> None:
    backend.create("busy", 256 * MIB)
    with pytest.raises(OperationFailed) as caught:
        backend.delete("busy")
    assert caught.value.code == "storage.command_failed"
    assert caught.value.message \
        == "lvremove -y vg0/busy failed with exit status 5: Logical volume vg0/busy in use."
    assert backend.list() == ["busy"]


def test_activate_turns_the_lv_on(backend: LvmBackend, group: FakeVolumeGroup) -> None:
    backend.create("vdb", 256 * MIB)
    group.active.clear()
    volume = backend.activate("vdb")
    assert volume.path == Path("/dev/vg0/vdb") and volume.physical_bytes == 256 * MIB
    assert group.active == {"vdb"}


@pytest.mark.parametrize("name", ["../root", "a/b", "-x", "x" * 129])
def test_bad_names_never_reach_lvm(backend: LvmBackend, group: FakeVolumeGroup,
                                   name: str) -> None:
    with pytest.raises(PathEscape):
        backend.create(name, MIB)
    assert group.calls == []


@pytest.mark.parametrize("name", ["snapshot", "pvmove", "x_tmeta", "data_rimage_0"])
def test_names_lvm_reserves_are_refused(backend: LvmBackend, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        backend.create(name, MIB)
    assert caught.value.code == "volume.name_invalid"


@pytest.mark.parametrize("group_name", ["", "-vg", "a/b", "..", "vg 0"])
def test_bad_volume_group_names_are_refused(group_name: str) -> None:
    with pytest.raises(InvalidInput):
        LvmBackend(group_name)


def test_size_must_be_positive(backend: LvmBackend) -> None:
    with pytest.raises(InvalidInput):
        backend.create("vdb", 0)


def test_open_backend_accepts_a_dev_path_for_the_volume_group(group: FakeVolumeGroup) -> None:
    backend = open_backend("lvm", "/dev/vg0", runner=group)
    assert isinstance(backend, LvmBackend) and backend.volume_group == "vg0"
    with pytest.raises(InvalidInput) as caught:
        open_backend("zfs", "/tank")
    assert caught.value.code == "pool.type_invalid"
