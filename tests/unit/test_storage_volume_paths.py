"""Which pool volume a platform's image path is: by pool directory, loop backing file, LV path,
or ``--pool-for`` (checked by identity, never assumed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockplane.errors import InvalidInput
from blockplane.storage.volume_paths import Location, VolumeLocator, parse_pool_for
from blockplane.store.records import PoolRecord


def pool(name: str, kind: str, path: Path | str) -> PoolRecord:
    return PoolRecord(name, kind, str(path), None, 64 << 20, 20)


def test_a_file_directly_in_a_dir_pool_is_its_volume(tmp_path: Path) -> None:
    root = tmp_path / "fast"
    (root / "sub").mkdir(parents=True)
    (root / "web.qcow2").write_bytes(b"")
    (root / "sub" / "deep.qcow2").write_bytes(b"")
    locator = VolumeLocator([pool("fast", "dir", root)])
    assert locator.locate(str(root / "web.qcow2")) == Location("fast", "web.qcow2")
    assert locator.locate(str(root / "sub" / "deep.qcow2")).foreign
    assert locator.locate("/elsewhere/web.qcow2").foreign


def test_a_name_that_cannot_be_a_volume_is_refused_not_taken(tmp_path: Path) -> None:
    root = tmp_path / "fast"
    root.mkdir()
    location = VolumeLocator([pool("fast", "dir", root)]).locate(str(root / "my disk.img"))
    assert location.pool == "fast" and location.volume is None and location.refusal


def test_a_loop_device_is_the_volume_of_its_backing_file(tmp_path: Path) -> None:
    root = tmp_path / "thin"
    root.mkdir()
    device = Path("/dev/loop0")  # any block device node; its backing file is faked
    if not device.is_block_device():
        pytest.skip("no /dev/loop0 block device node here")
    backing = {str(device): str(root / "data.img")}

    def backing_of(path: Path) -> str | None:
        return backing.get(str(path))

    locator = VolumeLocator([pool("thin", "loop", root)], backing_file_of=backing_of)
    assert locator.locate(str(device)) == Location("thin", "data")
    assert locator.locate(str(root / "data.img")) == Location("thin", "data")
    assert locator.locate(str(root / "data.qcow2")).foreign
    backing[str(device)] = "/elsewhere/data.img"
    assert locator.locate(str(device)).foreign


def test_an_lv_is_a_volume_of_its_volume_group() -> None:
    locator = VolumeLocator([pool("lv", "lvm", "vg0")])
    assert locator.locate("/dev/vg0/web-root") == Location("lv", "web-root")
    assert locator.locate("/dev/vg1/web-root").foreign


def test_pool_for_takes_a_path_under_another_name_only_if_it_is_the_same_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "fast"
    root.mkdir()
    (root / "web.qcow2").write_bytes(b"x")
    elsewhere = tmp_path / "platform"
    elsewhere.mkdir()
    os.link(root / "web.qcow2", elsewhere / "web.qcow2")  # the same file, as a bind mount is
    (elsewhere / "db.qcow2").write_bytes(b"y")  # a different file under the prefix
    pools = [pool("fast", "dir", root)]
    rules = parse_pool_for([f"{elsewhere}/=fast"], pools)
    locator = VolumeLocator(pools, rules)
    assert locator.locate(str(elsewhere / "web.qcow2")) == Location("fast", "web.qcow2")
    mismatch = locator.locate(str(elsewhere / "db.qcow2"))
    assert mismatch.volume is None and "is not volume 'db.qcow2' of pool fast" in str(
        mismatch.refusal)
    # Without the rule, the platform's path is simply outside every pool.
    assert VolumeLocator(pools).locate(str(elsewhere / "web.qcow2")).foreign


@pytest.mark.parametrize(("item", "code"), [
    ("relative/=fast", "adopt.invalid"),
    ("/x/=nopool", "pool.not_found"),
    ("no-sign", "adopt.invalid"),
    ("/x/=", "adopt.invalid"),
])
def test_bad_pool_for_is_refused(item: str, code: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_pool_for([item], [pool("fast", "dir", "/p")])
    assert raised.value.code == code
