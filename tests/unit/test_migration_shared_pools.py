"""Is a pool the same storage on two hosts? A dir pool's marker, made once by the first host
that asks and read by any host mounting the same directory; a backend that declares itself
shared (the rbd hook); and pools that never are (loop, lvm)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from blockplane.migration.shared_pools import MARKER, pool_identity
from blockplane.storage.backends.dir import DirBackend
from blockplane.storage.backends.rbd import RbdBackend
from blockplane.storage.ceph import CephClient
from blockplane.store.records import PoolRecord


def pool(path: Path, pool_type: str = "dir") -> PoolRecord:
    return PoolRecord("p", pool_type, str(path), None, 1 << 26, 50)


class SharedBackend:
    shared = True
    shared_identity = "ceph:fsid-1/rbd"


def test_a_dir_pool_gets_one_identity_that_every_host_mounting_it_reads(tmp_path: Path) -> None:
    record = pool(tmp_path)
    backend = DirBackend(tmp_path)
    assert pool_identity(record, backend, make=False) is None  # nobody asked yet: no marker
    first = pool_identity(record, backend, make=True)
    assert first is not None and first.startswith("dir:")
    assert pool_identity(record, backend, make=True) == first
    assert pool_identity(pool(tmp_path), DirBackend(tmp_path), make=False) == first
    assert (tmp_path / MARKER).exists() and backend.list() == []  # not a volume


def test_two_directories_are_two_storages(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = pool_identity(pool(tmp_path / "a"), DirBackend(tmp_path / "a"), make=True)
    b = pool_identity(pool(tmp_path / "b"), DirBackend(tmp_path / "b"), make=True)
    assert a != b


def test_a_garbled_marker_is_no_identity(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text("something else\n")
    assert pool_identity(pool(tmp_path), DirBackend(tmp_path), make=True) is None


def test_loop_pools_are_never_shared_and_a_declared_backend_always_is(tmp_path: Path) -> None:
    assert pool_identity(pool(tmp_path, "loop"), object(), make=True) is None
    assert not (tmp_path / MARKER).exists()
    assert pool_identity(pool(tmp_path, "rbd"), SharedBackend(), make=False) == "ceph:fsid-1/rbd"


def test_an_rbd_pool_is_named_by_its_cluster_and_rados_pool(tmp_path: Path) -> None:
    client = cast(CephClient, object())  # never called: the identity is what the record holds
    record = pool(tmp_path, "rbd")
    same = pool_identity(record, RbdBackend(client, "rbd", fsid="AB-CD"), make=True)
    assert same == "ceph:ab-cd/rbd"
    assert pool_identity(record, RbdBackend(client, "other", fsid="ab-cd"), make=True) != same
    assert pool_identity(record, RbdBackend(client, "rbd", fsid="ef-01"), make=True) != same
    assert pool_identity(record, RbdBackend(client, "rbd"), make=True) is None  # fsid unknown
