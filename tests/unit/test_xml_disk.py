"""Disk and controller XML: golden files for each IOThread mode, and parse round trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from blockplane.model.disk import DiskDevice, next_free_target
from blockplane.xml.disk import disk_element, parse_disks, scsi_controller_element, to_xml

DATA = Path(__file__).parent / "data"

MAPPED = DiskDevice(
    target="vdb",
    bus="virtio",
    source="/dev/loop3",
    source_kind="block",
    format="qcow2",
    queues=4,
    queue_mapping=((101, (0, 2)), (102, (1, 3))),
    error_policy="enospace",
    cache="none",
    discard="unmap",
    io="native",
)
SINGLE = DiskDevice(
    target="vdc",
    bus="virtio",
    source="/pool/vdc.qcow2",
    source_kind="file",
    format="qcow2",
    queues=2,
    iothread=103,
    cache="none",
    discard="unmap",
    io="threads",
)
SCSI = DiskDevice(
    target="sda",
    bus="scsi",
    source="/pool/sda.raw",
    source_kind="file",
    format="raw",
    queues=4,
    queue_mapping=((101, (0, 2)), (102, (1, 3))),
    controller_index=0,
    cache="none",
    discard="unmap",
    io="threads",
)
THROTTLED = DiskDevice(
    target="vdd",
    bus="virtio",
    source="/pool/vdd.qcow2",
    source_kind="file",
    format="qcow2",
    queues=1,
    throttle_groups=("blockplane-disk-vdd", "vm-agg"),
    cache="none",
    discard="unmap",
    io="threads",
)


def canonical(xml: str) -> str:
    parser = etree.XMLParser(remove_blank_text=True)
    return etree.tostring(etree.fromstring(xml.encode(), parser), encoding="unicode")


@pytest.mark.parametrize(
    ("device", "golden"),
    [
        (MAPPED, "disk_mapped.xml"),
        (SINGLE, "disk_single.xml"),
        (SCSI, "disk_scsi.xml"),
        (THROTTLED, "disk_throttled.xml"),
    ],
)
def test_disk_golden(device: DiskDevice, golden: str) -> None:
    assert canonical(to_xml(disk_element(device))) == canonical((DATA / golden).read_text())


def test_scsi_controller_carries_the_mapping() -> None:
    expected = (DATA / "controller_scsi.xml").read_text()
    assert canonical(to_xml(scsi_controller_element(SCSI))) == canonical(expected)


@pytest.mark.parametrize("device", [MAPPED, SINGLE, THROTTLED])
def test_round_trip_through_a_domain(device: DiskDevice) -> None:
    domain = f"<domain><devices>{to_xml(disk_element(device))}</devices></domain>"
    (parsed,) = parse_disks(domain)
    assert parsed == replace(device, alias=device.user_alias)


def test_scsi_round_trip_reads_mapping_from_its_controller() -> None:
    domain = (
        f"<domain><devices>{to_xml(scsi_controller_element(SCSI))}"
        f"{to_xml(disk_element(SCSI))}</devices></domain>"
    )
    (parsed,) = parse_disks(domain)
    assert parsed == replace(SCSI, alias=SCSI.user_alias)


def test_unknown_elements_survive_parsing_untouched() -> None:
    live = (DATA / "domain_live.xml").read_text()
    targets = [disk.target for disk in parse_disks(live)]
    assert targets == ["vda", "vdb"]


@pytest.mark.parametrize(
    ("used", "expected"),
    [(set(), "vda"), ({"vda", "vdb"}, "vdc"), ({f"vd{chr(97 + i)}" for i in range(26)}, "vdaa")],
)
def test_next_free_target(used: set[str], expected: str) -> None:
    assert next_free_target("virtio", used) == expected
