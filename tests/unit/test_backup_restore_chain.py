"""The restore chain rule and the documented manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockplane.backup.layout import BackupDisk, BackupManifest, read_manifest, write_manifest
from blockplane.backup.restore import chain_spec
from blockplane.backup.restore_chain import pick_target, verify_chain
from blockplane.errors import InvalidInput

MIB = 1 << 20


def manifest(checkpoint: str, incremental: str | None, mode: str | None = None,
             size: int = 64 * MIB) -> BackupManifest:
    chosen = mode or ("incremental" if incremental else "full")
    return BackupManifest("vm", checkpoint, incremental,
                          (BackupDisk("vda", "vda.qcow2", size, chosen),))


FULL = ("/b/full", manifest("c1", None))
INC1 = ("/b/inc1", manifest("c2", "c1"))
INC2 = ("/b/inc2", manifest("c3", "c2"))


def test_a_full_and_its_incrementals_in_order() -> None:
    steps = verify_chain("vda", [FULL, INC1, INC2])
    assert [(s.directory, s.mode) for s in steps] == [
        ("/b/full", "full"), ("/b/inc1", "incremental"), ("/b/inc2", "incremental")]


@pytest.mark.parametrize("chain", [
    [INC1, INC2],  # no full first
    [FULL, INC2],  # one missing
    [FULL, INC2, INC1],  # out of order
    [FULL, INC1, ("/b/full2", manifest("c3", None))],  # a full later on
    [FULL, ("/b/big", manifest("c2", "c1", size=128 * MIB))],  # another size
    [FULL, ("/b/other", BackupManifest("vm", "c2", "c1",
                                       (BackupDisk("vdb", "vdb.qcow2", 64 * MIB, "full"),)))],
])
def test_broken_chains_are_refused(chain: list[tuple[str, BackupManifest]]) -> None:
    with pytest.raises(InvalidInput) as raised:
        verify_chain("vda", chain)
    assert raised.value.code == "restore.chain_broken"


def test_the_disk_is_named_when_there_are_several() -> None:
    two = BackupManifest("vm", "c1", None, (BackupDisk("vda", "vda.qcow2", MIB, "full"),
                                            BackupDisk("vdb", "vdb.qcow2", MIB, "full")))
    with pytest.raises(InvalidInput):
        pick_target([("/b", two)], None)
    assert pick_target([("/b", two)], "vdb") == "vdb"
    assert pick_target([FULL], None) == "vda"


def test_the_manifest_round_trips_and_refuses_escapes(tmp_path: Path) -> None:
    written = manifest("c2", "c1")
    write_manifest(tmp_path, written)
    assert read_manifest(tmp_path) == written
    assert read_manifest(tmp_path / "none") is None
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format"] == "blockplane-backup/1"
    for bad_file in ("../etc/passwd", "/abs.qcow2", "", ".."):
        data["disks"]["vda"]["file"] = bad_file
        (tmp_path / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(InvalidInput):
            read_manifest(tmp_path)


def test_the_chain_is_named_at_open_without_touching_the_files() -> None:
    spec = json.loads(chain_spec(["/b/full.qcow2", "/b/inc1.qcow2"]).removeprefix("json:"))
    assert spec["file"]["filename"] == "/b/inc1.qcow2"
    assert spec["backing"]["file"]["filename"] == "/b/full.qcow2"
    assert spec["backing"]["backing"] is None
    assert spec["read-only"] is True
