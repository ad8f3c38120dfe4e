"""Throttle group and ``<iotune>`` XML: golden files captured from libvirt 11.3 with QEMU 10.0.

``throttle_live.xml`` and ``throttle_inactive.xml`` are ``virDomainGetXMLDesc`` of a running
no-OS VM after ``blockplane throttle set`` made groups covering every limit, ``disk attach``
put vda under a 2-filter chain, and a disk with a legacy ``<iotune>`` group was attached
directly through libvirt.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from blockplane.model.throttle import ThrottleGroup
from blockplane.model.throttle_limits import FIELD_NAMES, ThrottleLimits
from blockplane.xml.disk import disk_element, parse_disks, to_xml
from blockplane.xml.throttle import (
    iotune_element,
    parse_iotune,
    parse_throttle_group,
    parse_throttle_groups,
    throttle_group_element,
    throttle_groups_element,
)
from tests.unit.test_xml_disk import THROTTLED, canonical

DATA = Path(__file__).parent / "data"
FIXTURES = ["throttle_live.xml", "throttle_inactive.xml"]


def fixture(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("name", FIXTURES)
def test_groups_are_read_in_document_order(name: str) -> None:
    groups = parse_throttle_groups(fixture(name))
    assert [group.name for group in groups] == [
        "vm-agg",
        "blockplane-disk-vda",
        "all-total",
        "all-rw",
        "big",
    ]
    assert groups[0].limits == ThrottleLimits(total_iops_sec=200)
    assert groups[2].limits == ThrottleLimits(
        total_bytes_sec=10_000_000,
        total_iops_sec=1000,
        total_bytes_sec_max=20_000_000,
        total_iops_sec_max=2000,
        size_iops_sec=8192,
        total_bytes_sec_max_length=5,
        total_iops_sec_max_length=3,
    )
    assert groups[4].limits.total_bytes_sec == 10**15


def test_every_mapped_field_is_exercised_by_the_fixture() -> None:
    seen = {
        name
        for group in parse_throttle_groups(fixture("throttle_live.xml"))
        for name in group.limits.to_dict(nonzero_only=True)
    }
    assert seen == set(FIELD_NAMES)


@pytest.mark.parametrize("name", FIXTURES)
def test_each_group_writes_back_as_libvirt_wrote_it(name: str) -> None:
    root = etree.fromstring(fixture(name).encode())
    nodes = root.findall("throttlegroups/throttlegroup")
    assert nodes
    for node in nodes:
        written = to_xml(throttle_group_element(parse_throttle_group(node)))
        assert canonical(written) == canonical(etree.tostring(node, encoding="unicode"))
    whole = root.find("throttlegroups")
    assert whole is not None
    written = to_xml(throttle_groups_element(parse_throttle_groups(fixture(name))))
    assert canonical(written) == canonical(etree.tostring(whole, encoding="unicode"))


def test_disk_chain_and_legacy_iotune_are_parsed() -> None:
    disks = {disk.target: disk for disk in parse_disks(fixture("throttle_live.xml"))}
    assert disks["vda"].throttle_groups == ("blockplane-disk-vda", "vm-agg")
    assert disks["vda"].iotune is None
    assert disks["vdc"].throttle_groups == ()
    assert disks["vdc"].iotune == ThrottleLimits(
        total_iops_sec=250, total_iops_sec_max=500, total_iops_sec_max_length=4
    )
    assert disks["vdc"].iotune_group == "legacy-shared"


def test_iotune_writes_back_in_libvirts_order() -> None:
    root = etree.fromstring(fixture("throttle_live.xml").encode())
    node = root.find("devices/disk/iotune")
    assert node is not None
    disk = node.getparent()
    assert disk is not None
    parsed = parse_iotune(disk)
    assert parsed is not None
    written = to_xml(iotune_element(*parsed))
    assert canonical(written) == canonical(etree.tostring(node, encoding="unicode"))


def test_no_groups_and_no_iotune() -> None:
    assert parse_throttle_groups("<domain><devices/></domain>") == ()
    assert parse_iotune(etree.fromstring(b"<disk/>")) is None
    assert ThrottleGroup("g", ThrottleLimits(total_iops_sec=5)).to_json() == {
        "name": "g",
        "limits": {"total_iops_sec": 5},
    }


def test_disk_with_iotune_round_trips_and_keeps_libvirts_element_order() -> None:
    device = replace(
        THROTTLED,
        throttle_groups=(),
        iotune=ThrottleLimits(
            total_iops_sec=300, total_iops_sec_max=600, total_iops_sec_max_length=2
        ),
        iotune_group="shared",
    )
    element = disk_element(device)
    assert [child.tag for child in element] == ["driver", "source", "target", "iotune", "alias"]
    domain = f"<domain><devices>{to_xml(element)}</devices></domain>"
    (parsed,) = parse_disks(domain)
    assert parsed == replace(device, alias=device.user_alias)
