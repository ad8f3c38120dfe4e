"""parse_chain against live XML that libvirt 11.3 / QEMU 10.0 wrote (tests/unit/data/chain_*.xml).

The fixtures follow one VM: a 3-deep chain (top.qcow2 -> mid.qcow2 -> raw /dev/loop10), a
disk-only external snapshot, an active commit with pivot, a copy with pivot and a full pull. vdb is
a plain raw disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.model.chain import Chain, ChainElement, Mirror
from blockplane.xml.backing_chain import parse_chain

DATA = Path(__file__).parent / "data"
IMG = "/tmp/chainfix/img"


def load(name: str, target: str = "vda") -> Chain:
    return parse_chain((DATA / f"chain_{name}.xml").read_text(), target)


def rows(chain: Chain) -> list[tuple[str, int | None, str, str | None, str | None, str]]:
    return [
        (e.name, e.libvirt_index, e.path, e.format, e.backing_format, e.source_kind)
        for e in chain.elements
    ]


RUNNING = [
    ("vda", 2, f"{IMG}/top.qcow2", "qcow2", "qcow2", "file"),
    ("vda[1]", 3, f"{IMG}/mid.qcow2", "qcow2", "raw", "file"),
    ("vda[2]", 4, "/dev/loop10", "raw", None, "block"),
]
SNAPSHOT = [
    ("vda", 5, f"{IMG}/snap1.qcow2", "qcow2", "qcow2", "file"),
    ("vda[1]", 2, f"{IMG}/top.qcow2", "qcow2", "qcow2", "file"),
    ("vda[2]", 3, f"{IMG}/mid.qcow2", "qcow2", "raw", "file"),
    ("vda[3]", 4, "/dev/loop10", "raw", None, "block"),
]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("running", RUNNING),
        # The snapshot's overlay takes a fresh node index (5) on top; the rest keep theirs.
        ("snapshot", SNAPSHOT),
        ("active_commit_ready", SNAPSHOT),
        # Pivoted onto the commit base: top.qcow2 is the top again, still node 2.
        ("active_commit_pivoted", RUNNING),
        ("copy_running", RUNNING),
        ("copy_ready", RUNNING),
        # A full copy is flat; it keeps the node index its mirror had (6).
        ("copy_pivoted", [("vda", 6, f"{IMG}/copy.qcow2", "qcow2", None, "file")]),
        # snap2 got node 7 over copy.qcow2 (6); the full pull left it alone.
        ("pulled", [("vda", 7, f"{IMG}/snap2.qcow2", "qcow2", None, "file")]),
    ],
)
def test_live_chains(fixture: str, expected: list[tuple[object, ...]]) -> None:
    chain = load(fixture)
    assert rows(chain) == expected
    assert chain.complete and chain.live
    assert [e.position for e in chain.elements] == list(range(len(expected)))


def test_sizes_are_not_in_the_xml() -> None:
    chain = load("running")
    assert all(e.virtual_bytes is None and e.allocation_bytes is None for e in chain.elements)
    sized = chain.with_sizes({f"{IMG}/mid.qcow2": (64 << 20, 196608)})
    assert sized.elements[1].virtual_bytes == 64 << 20
    assert sized.elements[1].allocation_bytes == 196608
    assert sized.elements[0] == chain.elements[0]


def test_mirrors() -> None:
    assert load("running").mirror is None
    assert load("copy_running").mirror == Mirror(
        job="copy", path=f"{IMG}/copy.qcow2", format="qcow2", ready=None, libvirt_index=6
    )
    ready = load("copy_ready").mirror
    assert ready is not None and ready.is_ready
    commit = load("active_commit_ready").mirror
    assert commit == Mirror(
        job="active-commit", path=f"{IMG}/top.qcow2", format="qcow2", ready="yes", libvirt_index=2
    )
    assert load("active_commit_pivoted").mirror is None


def test_a_disk_without_backing() -> None:
    chain = load("running", "vdb")
    assert rows(chain) == [("vdb", 1, f"{IMG}/data.raw", "raw", None, "file")]
    assert chain.complete


def test_inactive_xml_is_unnumbered_and_may_be_partial() -> None:
    defined = load("defined")
    assert rows(defined) == [("vda", None, f"{IMG}/top.qcow2", "qcow2", None, "file")]
    assert not defined.complete and not defined.live
    # After a snapshot libvirt's config shows only part of the chain, unterminated.
    partial = load("snapshot_inactive")
    assert rows(partial) == [
        ("vda", None, f"{IMG}/snap1.qcow2", "qcow2", "qcow2", "file"),
        ("vda[1]", None, f"{IMG}/top.qcow2", "qcow2", None, "file"),
    ]
    assert not partial.complete


def test_to_json_shows_both_numberings() -> None:
    data = load("snapshot").to_json()
    assert data["target"] == "vda" and data["complete"] is True and data["mirror"] is None
    assert [(e["name"], e["position"], e["libvirt_index"]) for e in data["elements"]] == [
        ("vda", 0, 5), ("vda[1]", 1, 2), ("vda[2]", 2, 3), ("vda[3]", 3, 4)
    ]
    assert data["elements"][3]["source_kind"] == "block"
    assert load("copy_ready").to_json()["mirror"]["ready"] == "yes"


def test_unknown_target() -> None:
    with pytest.raises(NotFound) as caught:
        load("running", "vdz")
    assert caught.value.code == "disk.not_found"


def test_malformed_xml() -> None:
    with pytest.raises(InvalidInput):
        parse_chain("<domain><devices>", "vda")


def _disk(body: str, kind: str = "file") -> str:
    return (
        f"<domain><devices><disk type='{kind}' device='disk'>{body}"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )


def test_an_rbd_image_is_a_complete_one_element_chain_named_rbd_pool_image() -> None:
    xml = _disk(
        "<driver type='raw'/><source protocol='rbd' name='pool/image' index='1'>"
        "<host name='10.0.0.1' port='3300'/></source>", "network"
    )
    chain = parse_chain(xml, "vda")
    assert chain.paths() == ("rbd:pool/image",)
    assert chain.complete and chain.top.source_kind == "network" and chain.top.format == "raw"


def test_other_network_sources_are_refused() -> None:
    xml = _disk(
        "<driver type='raw'/><source protocol='nbd' name='export' index='1'/>", "network"
    )
    with pytest.raises(Conflict) as caught:
        parse_chain(xml, "vda")
    assert caught.value.code == "chain.unsupported_source"


def test_an_empty_drive_has_no_chain() -> None:
    with pytest.raises(Conflict) as caught:
        parse_chain(_disk("<driver type='raw'/>"), "vda")
    assert caught.value.code == "chain.no_source"


def test_block_top_and_missing_formats() -> None:
    xml = _disk(
        "<source dev='/dev/vg/top' index='3'/>"
        "<backingStore type='file' index='9'><source file='/img/base'/><backingStore/>"
        "</backingStore>",
        "block",
    )
    assert parse_chain(xml, "vda").elements == (
        ChainElement(0, 3, "vda", "/dev/vg/top", None, None, "block"),
        ChainElement(1, 9, "vda[1]", "/img/base", None, None, "file"),
    )


def test_chain_invariants() -> None:
    element = ChainElement(1, 2, "vda[1]", "/a", "qcow2", None, "file")
    with pytest.raises(ValueError):
        Chain("vda", ())
    with pytest.raises(ValueError):
        Chain("vda", (element,))
