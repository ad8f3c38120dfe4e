"""Persistent chains against live ones: when they are out of step (``out_of_step``), and the
persistent XML with the live chains written in (``with_live_chains``), over the libvirt 11.3
fixtures of tests/unit/data (one VM: running, snapshot, active commit, copy, pull).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from blockplane.chain.persistent_chains import out_of_step
from blockplane.errors import NotFound
from blockplane.xml.backing_chain import parse_chain
from blockplane.xml.persistent_chain import with_live_chains

DATA = Path(__file__).parent / "data"
IMG = "/tmp/chainfix/img"


def xml(name: str) -> str:
    return (DATA / f"chain_{name}.xml").read_text()


@pytest.mark.parametrize(("live", "persistent", "expected"), [
    # libvirt saved the config after the job: the same chain, or its unterminated start.
    ("running", "running", False),
    ("snapshot", "snapshot_inactive", False),
    ("running", "defined", False),
    # the config still names the chain from before the job
    ("active_commit_pivoted", "snapshot_inactive", True),
    ("copy_pivoted", "running", True),
    ("pulled", "snapshot", True),
    ("running", "snapshot", True),
    # a complete config chain longer than the live one (images merged away)
    ("pulled", "running", True),
    # a mirror not yet pivoted: libvirt keeps both on the old chain, so leave it
    ("copy_ready", "snapshot_inactive", False),
])
def test_out_of_step(live: str, persistent: str, expected: bool) -> None:
    assert out_of_step(parse_chain(xml(live), "vda"), parse_chain(xml(persistent), "vda")) \
        is expected


def test_with_live_chains_writes_the_whole_live_chain_without_runtime_numbers() -> None:
    repaired = with_live_chains(xml("snapshot_inactive"), xml("running"), ["vda"])
    chain = parse_chain(repaired, "vda")
    assert chain.paths() == (f"{IMG}/top.qcow2", f"{IMG}/mid.qcow2", "/dev/loop10")
    assert chain.complete and not chain.live
    assert [e.source_kind for e in chain.elements] == ["file", "file", "block"]
    assert [e.format for e in chain.elements] == ["qcow2", "qcow2", "raw"]
    root = etree.fromstring(repaired.encode())
    assert not any("index" in node.attrib for node in root.iter())
    # The disk keeps its own place and everything else; vdb is untouched.
    assert parse_chain(repaired, "vdb").paths() == (f"{IMG}/data.raw",)
    disk = next(disk for disk in root.iterfind("devices/disk")
                if disk.find("target[@dev='vda']") is not None)
    assert [child.tag for child in disk][:3] == ["driver", "source", "backingStore"]
    assert disk.find("address") is not None
    assert not out_of_step(parse_chain(xml("running"), "vda"), chain)


def test_with_live_chains_follows_a_copy_onto_another_kind_of_image() -> None:
    repaired = with_live_chains(xml("running"), xml("copy_pivoted"), ["vda"])
    chain = parse_chain(repaired, "vda")
    assert chain.paths() == (f"{IMG}/copy.qcow2",)
    assert chain.complete


def test_with_live_chains_needs_the_disk_in_both() -> None:
    with pytest.raises(NotFound):
        with_live_chains(xml("running"), xml("running"), ["vdz"])
