"""Loop and LVM pools on real block devices: create, write, grow, read back, delete.

Every loop device whose backing file lies under the test's tmp dir is detached afterwards, even
when a test fails; nothing else on the host is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockplane.errors import Conflict, NotFound, PathEscape
from blockplane.storage.backends import loop as backend_loop
from blockplane.storage.backends import loop_devices
from blockplane.storage.backends.loop import LoopBackend
from blockplane.storage.backends.lvm import LvmBackend
from blockplane.storage.capacity import PoolCapacity

pytestmark = pytest.mark.integration

MIB = 1 << 20


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _loops_under(directory: Path) -> list[tuple[Path, str]]:
    listing = json.loads(_run("losetup", "--list", "--json") or '{"loopdevices": []}')
    prefix = f"{os.path.realpath(directory)}/"
    return [(Path(entry["name"]), entry["back-file"]) for entry in listing["loopdevices"]
            if (entry.get("back-file") or "").startswith(prefix)]


def _size(device: Path) -> int:
    return int(_run("blockdev", "--getsize64", str(device)))


def _write(device: Path, offset: int, data: bytes) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(device: Path, offset: int, length: int) -> bytes:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("loop devices need root and /dev/loop-control")
    for tool in ("losetup", "blockdev"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    (tmp_path / "pool").mkdir()
    try:
        yield tmp_path
    finally:
        for device, _ in _loops_under(tmp_path):
            subprocess.run(["losetup", "-d", str(device)], check=False)


@pytest.fixture
def backend(scratch: Path) -> LoopBackend:
    return LoopBackend(scratch / "pool")


def test_create_write_grow_read_delete(backend: LoopBackend, scratch: Path) -> None:
    volume = backend.create("vdb", 64 * MIB)
    assert str(volume.path).startswith("/dev/loop")
    assert volume.physical_bytes == 64 * MIB == _size(volume.path)
    backing = scratch / "pool" / "vdb.img"
    assert backing.stat().st_size == 64 * MIB
    assert backing.stat().st_blocks * 512 < MIB

    pattern = os.urandom(MIB)
    _write(volume.path, 63 * MIB, pattern)

    assert backend.grow("vdb", 128 * MIB) == 128 * MIB
    assert _size(volume.path) == 128 * MIB
    assert backend.physical_size("vdb") == 128 * MIB
    assert _read(volume.path, 63 * MIB, MIB) == pattern
    _write(volume.path, 127 * MIB, pattern)
    assert _read(volume.path, 127 * MIB, MIB) == pattern
    assert backend.list() == ["vdb"]

    backend.delete("vdb")
    assert not backing.exists()
    assert _loops_under(scratch) == []
    assert backend.list() == []
    with pytest.raises(NotFound):
        backend.delete("vdb")


def test_capacity_refusal_changes_nothing(scratch: Path) -> None:
    backend = LoopBackend(scratch / "pool", capacity=PoolCapacity(96 * MIB))
    volume = backend.create("vdb", 64 * MIB)
    with pytest.raises(Conflict) as grow:
        backend.grow("vdb", 128 * MIB)
    assert grow.value.code == "pool.full"
    assert grow.value.message == ("extending vdb by 64 MiB would use 128 MiB of the pool's "
                                  "96 MiB limit (32 MiB free)")
    assert _size(volume.path) == 64 * MIB
    with pytest.raises(Conflict, match="creating vdc with 64 MiB"):
        backend.create("vdc", 64 * MIB)
    assert backend.list() == ["vdb"]
    assert len(_loops_under(scratch)) == 1
    assert backend.grow("vdb", 96 * MIB) == 96 * MIB


def test_activate_reattaches_after_the_loop_is_gone(backend: LoopBackend,
                                                    scratch: Path) -> None:
    volume = backend.create("vdb", 64 * MIB)
    _write(volume.path, 0, b"survives a reboot")
    _run("losetup", "-d", str(volume.path))
    assert backend.device_of("vdb") is None
    assert backend.physical_size("vdb") == 64 * MIB

    again = backend.activate("vdb")
    assert _read(again.path, 0, 17) == b"survives a reboot"
    assert backend.activate("vdb") == again
    assert len(_loops_under(scratch)) == 1


def test_activate_finishes_a_grow_cut_short(backend: LoopBackend, scratch: Path) -> None:
    volume = backend.create("vdb", 64 * MIB)
    os.truncate(scratch / "pool" / "vdb.img", 96 * MIB)
    assert _size(volume.path) == 64 * MIB
    assert backend.activate("vdb").physical_bytes == 96 * MIB
    assert _size(volume.path) == 96 * MIB


def test_foreign_loop_devices_are_never_detached(backend: LoopBackend, scratch: Path) -> None:
    foreign = scratch / "foreign.img"
    foreign.write_bytes(b"\0" * MIB)
    foreign_device = Path(_run("losetup", "--find", "--show", str(foreign)).strip())
    (scratch / "pool" / "evil.img").symlink_to(foreign)

    backend.create("vdb", 64 * MIB)
    backend.delete("vdb")
    with pytest.raises(PathEscape):
        backend.delete("evil")
    with pytest.raises(PathEscape):
        backend.grow("evil", 64 * MIB)
    assert backend.list() == []
    assert [device for device, _ in _loops_under(scratch)] == [foreign_device]
    assert foreign.stat().st_size == MIB


def test_a_reused_device_number_is_not_mistaken_for_the_volume(backend: LoopBackend,
                                                               scratch: Path) -> None:
    volume = backend.create("vdb", 64 * MIB)
    _run("losetup", "-d", str(volume.path))
    foreign = scratch / "foreign.img"
    foreign.touch()
    os.truncate(foreign, 32 * MIB)
    foreign_device = Path(_run("losetup", "--find", "--show", str(foreign)).strip())

    assert backend.grow("vdb", 96 * MIB) == 96 * MIB
    assert _size(foreign_device) == 32 * MIB
    assert backend.device_of("vdb") is None
    assert backend.activate("vdb").path != foreign_device


def test_a_restarted_agent_finds_every_device_in_one_sysfs_pass(
    backend: LoopBackend, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = {name: backend.create(name, 8 * MIB).path for name in ("a", "b", "c", "d")}
    passes: list[int] = []
    real = loop_devices.loop_devices_by_backing_file

    def counted() -> dict[str, list[Path]] | None:
        passes.append(1)
        return real()

    monkeypatch.setattr(backend_loop, "loop_devices_by_backing_file", counted)
    restarted = LoopBackend(scratch / "pool")  # an empty device cache, as after a restart
    assert {name: restarted.device_of(name) for name in created} == created
    assert restarted.grow("c", 16 * MIB) == 16 * MIB == _size(created["c"])
    assert len(passes) == 1

    _run("losetup", "-d", str(created["b"]))
    assert restarted.device_of("b") is None
    assert restarted.device_of("a") == created["a"]
    assert len(passes) == 2


def test_direct_io_option_reaches_the_device(scratch: Path) -> None:
    volume = LoopBackend(scratch / "pool", direct_io=True).create("vdb", 64 * MIB)
    flag = Path("/sys/block") / volume.path.name / "loop" / "dio"
    assert flag.read_text().strip() == "1"


@pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
                    reason="qemu-img or qemu-io is not installed")
def test_qcow2_on_a_loop_volume_runs_out_then_grows(backend: LoopBackend) -> None:
    volume = backend.create("thin", 16 * MIB)
    device = str(volume.path)
    _run("qemu-img", "create", "-q", "-f", "qcow2", device, "256M")
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 8M", device)
    full = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 8M 32M", device],
                          capture_output=True, text=True, check=False)
    assert "No space left on device" in full.stdout + full.stderr

    backend.grow("thin", 64 * MIB)
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 8M 32M", device)
    checked = _run("qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 8M", "-c",
                   "read -P 0xcd 8M 32M", device)
    assert "Pattern verification failed" not in checked
    subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", device], check=False)


def test_grow_latency(backend: LoopBackend) -> None:
    backend.create("vdb", 64 * MIB)
    size, took = 64 * MIB, []
    for _ in range(30):
        size += 4 * MIB
        started = time.perf_counter()
        assert backend.grow("vdb", size) == size
        took.append(time.perf_counter() - started)
    took.sort()
    p50, p99 = statistics.median(took), took[-1]
    print(f"loop grow (truncate + LOOP_SET_CAPACITY + BLKGETSIZE64): p50 {p50 * 1e3:.2f} ms, "
          f"max {p99 * 1e3:.2f} ms over {len(took)}")
    assert p99 < 0.25


def _device_mapper_available() -> bool:
    if Path("/sys/module/dm_mod").exists():
        return True
    if shutil.which("dmsetup") is None:
        return False
    return subprocess.run(["dmsetup", "targets"], capture_output=True, check=False).returncode == 0


@pytest.fixture
def volume_group(scratch: Path) -> Iterator[str]:
    if not _device_mapper_available():
        pytest.skip("device-mapper is not available on this kernel: LVM cannot run here")
    if shutil.which("vgcreate") is None:
        pytest.skip("lvm2 is not installed")
    backing = scratch / "pv.img"
    backing.touch()
    os.truncate(backing, 512 * MIB)
    device = _run("losetup", "--find", "--show", str(backing)).strip()
    group = f"bptest{uuid.uuid4().hex[:8]}"
    try:
        _run("pvcreate", "-q", device)
        _run("vgcreate", "-q", group, device)
        yield group
    finally:
        subprocess.run(["vgremove", "-f", "-y", group], capture_output=True, check=False)
        subprocess.run(["pvremove", "-y", device], capture_output=True, check=False)


def test_lvm_volume_lifecycle(volume_group: str) -> None:
    backend = LvmBackend(volume_group, capacity=PoolCapacity(256 * MIB))
    volume = backend.create("vdb", 64 * MIB)
    assert volume.path == Path("/dev") / volume_group / "vdb"
    assert _size(volume.path) == 64 * MIB
    _write(volume.path, 63 * MIB, b"kept")
    assert backend.grow("vdb", 128 * MIB) == 128 * MIB == _size(volume.path)
    assert _read(volume.path, 63 * MIB, 4) == b"kept"
    with pytest.raises(Conflict):
        backend.grow("vdb", 512 * MIB)
    assert backend.activate("vdb").physical_bytes == 128 * MIB
    backend.delete("vdb")
    assert backend.list() == []
