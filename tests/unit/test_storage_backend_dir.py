"""The dir backend, the capacity rule and the command runner: real files, no devices."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from blockplane.errors import Conflict, InvalidInput, NotFound, OperationFailed, PathEscape
from blockplane.storage.backends.dir import DirBackend
from blockplane.storage.backends.factory import open_backend
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.commands import SubprocessRunner

MIB, GIB = 1 << 20, 1 << 30


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    root = tmp_path / "pool"
    root.mkdir()
    return root


def test_create_makes_a_sparse_file_of_the_size(pool: Path) -> None:
    volume = DirBackend(pool).create("vdb.qcow2", GIB)
    assert volume.path == pool.resolve() / "vdb.qcow2"
    stat = volume.path.stat()
    assert stat.st_size == GIB == volume.physical_bytes
    assert stat.st_blocks * 512 < MIB
    assert stat.st_mode & 0o777 == 0o600


def test_grow_truncates_and_keeps_data(pool: Path) -> None:
    backend = DirBackend(pool)
    volume = backend.create("vdb", MIB)
    with open(volume.path, "r+b") as handle:
        handle.write(b"hello")
    assert backend.grow("vdb", 4 * MIB) == 4 * MIB
    assert backend.physical_size("vdb") == 4 * MIB
    assert volume.path.read_bytes()[:5] == b"hello"
    assert backend.grow("vdb", 4 * MIB) == 4 * MIB
    with pytest.raises(InvalidInput, match="shrinking"):
        backend.grow("vdb", MIB)


def test_list_delete_activate(pool: Path) -> None:
    backend = DirBackend(pool)
    backend.create("b", MIB)
    backend.create("a", MIB)
    (pool / ".hidden").write_bytes(b"")
    (pool / "subdir").mkdir()
    (pool / "link").symlink_to("a")
    assert backend.list() == ["a", "b"]
    assert backend.used_bytes() == 2 * MIB
    assert backend.activate("a").path == pool.resolve() / "a"
    backend.delete("a")
    assert backend.list() == ["b"]
    for action in (lambda: backend.delete("a"), lambda: backend.physical_size("a"),
                   lambda: backend.grow("a", GIB)):
        with pytest.raises(NotFound):
            action()


def test_existing_file_is_a_conflict_and_is_left_alone(pool: Path) -> None:
    (pool / "vdb").write_bytes(b"precious")
    with pytest.raises(Conflict) as caught:
        DirBackend(pool).create("vdb", MIB)
    assert caught.value.code == "volume.exists"
    assert (pool / "vdb").read_bytes() == b"precious"


def test_planted_symlink_cannot_redirect_create_or_delete(pool: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (pool / "vdb").symlink_to(victim)
    backend = DirBackend(pool)
    for action in (lambda: backend.create("vdb", MIB), lambda: backend.delete("vdb"),
                   lambda: backend.grow("vdb", GIB)):
        with pytest.raises(PathEscape):
            action()
    assert victim.read_bytes() == b"precious"


def test_capacity_refuses_create_and_grow_past_the_limit(pool: Path) -> None:
    backend = DirBackend(pool, capacity=PoolCapacity(GIB))
    backend.create("vda", 768 * MIB)
    with pytest.raises(Conflict) as caught:
        backend.create("vdb", 512 * MIB)
    assert caught.value.code == "pool.full"
    assert caught.value.message == (
        "creating vdb with 512 MiB would use 1.25 GiB of the pool's 1 GiB limit (256 MiB free)")
    assert backend.list() == ["vda"]
    with pytest.raises(Conflict, match="extending vda by 512 MiB"):
        backend.grow("vda", 1280 * MIB)
    assert backend.physical_size("vda") == 768 * MIB
    assert backend.grow("vda", GIB) == GIB


def test_missing_pool_directory_is_reported(tmp_path: Path) -> None:
    backend = DirBackend(tmp_path / "gone")
    with pytest.raises(NotFound) as caught:
        backend.create("vdb", MIB)
    assert caught.value.code == "pool.not_found"
    with pytest.raises(NotFound):
        backend.list()


def test_capacity_arithmetic() -> None:
    capacity = PoolCapacity(GIB)
    capacity.check_capacity(GIB - MIB, MIB)
    assert capacity.free_bytes(GIB - MIB) == MIB
    assert capacity.free_bytes(2 * GIB) == 0
    assert PoolCapacity().free_bytes(5) is None
    PoolCapacity().check_capacity(1 << 60, 1 << 60)
    with pytest.raises(Conflict) as caught:
        capacity.check_capacity(GIB, 1, volume="vdc")
    assert caught.value.details["limit_bytes"] == GIB
    assert caught.value.http_status == 409 and caught.value.exit_code == 2
    with pytest.raises(ValueError):
        PoolCapacity(0)
    with pytest.raises(ValueError):
        capacity.check_capacity(0, -1)


def test_open_backend_builds_a_dir_backend(pool: Path) -> None:
    backend = open_backend("dir", pool, capacity=PoolCapacity(GIB))
    assert backend.kind == "dir" and not backend.is_block
    assert backend.capacity.limit_bytes == GIB


def test_runner_returns_output_and_raises_with_stderr() -> None:
    runner = SubprocessRunner()
    result = runner.run([sys.executable, "-c", "print('out')"])
    assert result.ok and result.stdout == "out\n"
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    assert runner.run(failing, check=False).returncode == 3
    with pytest.raises(OperationFailed) as caught:
        runner.run(failing)
    assert caught.value.code == "storage.command_failed"
    assert caught.value.message.endswith("failed with exit status 3: boom")


def test_runner_uses_the_c_locale_and_never_a_shell() -> None:
    runner = SubprocessRunner()
    result = runner.run([sys.executable, "-c", "import os; print(os.environ['LC_ALL'])"])
    assert result.stdout == "C\n"
    assert runner.run(["echo", "$HOME;", "ls"]).stdout == "$HOME; ls\n"


def test_runner_reports_missing_commands_and_timeouts() -> None:
    runner = SubprocessRunner()
    with pytest.raises(OperationFailed) as missing:
        runner.run(["blockplane-no-such-command"])
    assert missing.value.code == "storage.command_missing"
    with pytest.raises(OperationFailed) as slow:
        runner.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    assert slow.value.code == "storage.command_timeout"
