"""Parsing libvirt's domain capabilities XML into DomainCapsFlags (golden fixture + variants)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockplane.errors import InvalidInput
from blockplane.facts.capabilities import capability_matrix
from blockplane.facts.versions import Version
from blockplane.xml.domain_caps import DomainCapsFlags, parse_domain_caps

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "domcaps_qemu_x86_64_pc.xml"

EXPECTED = DomainCapsFlags(
    emulator="/usr/bin/qemu-system-x86_64",
    domain_type="qemu",
    machine="pc-i440fx-10.0",
    arch="x86_64",
    max_vcpus=255,
    iothreads=True,
    disk_supported=True,
    disk_buses=("ide", "fdc", "scsi", "virtio", "usb", "sata"),
    disk_models=("virtio", "virtio-transitional", "virtio-non-transitional"),
    backup=True,
    backing_store_input=True,
)


def test_golden_fixture() -> None:
    assert parse_domain_caps(GOLDEN.read_text()) == EXPECTED


def test_bytes_are_accepted() -> None:
    assert parse_domain_caps(GOLDEN.read_bytes()) == EXPECTED


def test_golden_to_json() -> None:
    assert parse_domain_caps(GOLDEN.read_text()).to_json() == {
        "emulator": "/usr/bin/qemu-system-x86_64",
        "domain_type": "qemu",
        "machine": "pc-i440fx-10.0",
        "arch": "x86_64",
        "max_vcpus": 255,
        "iothreads": True,
        "disk_supported": True,
        "disk_buses": ["ide", "fdc", "scsi", "virtio", "usb", "sata"],
        "disk_models": ["virtio", "virtio-transitional", "virtio-non-transitional"],
        "backup": True,
        "backing_store_input": True,
    }


def test_golden_fixture_supports_everything_with_this_hosts_versions() -> None:
    flags = parse_domain_caps(GOLDEN.read_text())
    matrix = capability_matrix(Version(10, 0, 2), Version(11, 3, 0), flags)
    # Every feature but the known defect and the rbd fix this QEMU lacks, which no domain
    # capability can lift.
    assert not matrix.pop("throttle_multi_iothread").supported
    assert not matrix.pop("rbd_multi_iothread").supported
    assert all(capability.supported for capability in matrix.values())


OLD_HOST = """\
<domainCapabilities>
  <path>/usr/libexec/qemu-kvm</path>
  <domain>kvm</domain>
  <machine>pc-q35-rhel9.4.0</machine>
  <arch>x86_64</arch>
  <iothreads supported='no'/>
  <devices>
    <disk supported='yes'>
      <enum name='bus'>
        <value>sata</value>
        <value>virtio</value>
      </enum>
    </disk>
  </devices>
  <features>
    <backup supported='no'/>
  </features>
</domainCapabilities>
"""


def test_unsupported_flags_and_missing_values() -> None:
    flags = parse_domain_caps(OLD_HOST)
    assert flags == DomainCapsFlags(
        emulator="/usr/libexec/qemu-kvm",
        domain_type="kvm",
        machine="pc-q35-rhel9.4.0",
        arch="x86_64",
        max_vcpus=None,
        iothreads=False,
        disk_supported=True,
        disk_buses=("sata", "virtio"),
        disk_models=None,
        backup=False,
        backing_store_input=None,
    )
    matrix = capability_matrix(Version(10, 0, 2), Version(11, 3, 0), flags)
    assert not matrix["iothread_vq_mapping"].supported
    assert not matrix["incremental_backup"].supported
    assert (
        "list no scsi disk bus (buses: sata, virtio)" in matrix["scsi_iothread_vq_mapping"].reason
    )
    assert matrix["throttle_groups"].supported


def test_minimal_document_reports_nothing() -> None:
    flags = parse_domain_caps("<domainCapabilities><domain>qemu</domain></domainCapabilities>")
    assert flags == DomainCapsFlags(domain_type="qemu")


def test_odd_supported_values_are_unknown() -> None:
    flags = parse_domain_caps(
        "<domainCapabilities><iothreads supported='maybe'/><vcpu max='many'/>"
        "<features><backup/></features></domainCapabilities>"
    )
    assert flags.iothreads is None
    assert flags.max_vcpus is None
    assert flags.backup is None


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "not xml at all",
        "<domainCapabilities>",
        "<capabilities><host/></capabilities>",
        "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><domainCapabilities>&e;"
        "</domainCapabilities>",
    ],
)
def test_malformed_documents_are_refused(xml: str) -> None:
    with pytest.raises(InvalidInput):
        parse_domain_caps(xml)
