"""Who uses a volume: aliases (recorded path, current loop device) and the users found for them."""

from __future__ import annotations

from pathlib import Path

from blockplane.cli.client import api_path
from blockplane.storage.volume_usage import VolumeReferences, volume_aliases, volume_users
from blockplane.store.records import DiskRecord, VolumeRecord


def record(path: str) -> VolumeRecord:
    return VolumeRecord("p", "v", path, "qcow2", 1 << 20, 1 << 20, False)


def test_aliases_are_canonical_and_include_the_attached_device(tmp_path: Path) -> None:
    real = tmp_path / "v"
    real.touch()
    (tmp_path / "link").symlink_to(real)
    assert volume_aliases(record(str(tmp_path / "link")), None) == {str(real)}
    assert volume_aliases(record("/dev/loop3"), "/dev/loop7") == {"/dev/loop3", "/dev/loop7"}


def test_users_are_disks_then_references_each_named_once() -> None:
    references = VolumeReferences({
        "/dev/loop3": ["the backing chain of VM web", "copy job ab of web"],
        "/dev/loop7": ["the backing chain of VM web"],
        "/elsewhere": ["pull job cd of db"],
    })
    disks = [DiskRecord("web", "vdb", "p", "v", "virtio", {})]
    assert volume_users({"/dev/loop3", "/dev/loop7"}, disks, references) == [
        "disk web/vdb", "the backing chain of VM web", "copy job ab of web"]
    assert volume_users({"/unused"}, [], references) == []


def test_api_path_keeps_dot_segments_from_climbing_up() -> None:
    assert api_path("pools", "vf", "volumes", "..") == "/v1/pools/vf/volumes/%2E%2E"
    assert api_path("pools", "a.b", "volumes", "x/y") == "/v1/pools/a%2Eb/volumes/x%2Fy"
