"""The capability matrix: version gates, exact reasons, and domain-capabilities overrides."""

from __future__ import annotations

import pytest

from blockplane.errors import CapabilityMissing, InvalidInput
from blockplane.facts.capabilities import (
    CAPABILITY_NAMES,
    Capability,
    capability_matrix,
    require_capability,
)
from blockplane.facts.versions import Version, parse_version
from blockplane.xml.domain_caps import DomainCapsFlags

DEBIAN_BACKPORTS = ("1:10.0.2+ds-2+deb13u1~bpo12+1", "11.3.0-2~bpo12+1")
ALL_BUSES = ("ide", "fdc", "scsi", "virtio", "usb", "sata")


def matrix_for(qemu: str | None, libvirt: str | None) -> dict[str, Capability]:
    return capability_matrix(
        parse_version(qemu) if qemu is not None else None,
        parse_version(libvirt) if libvirt is not None else None,
    )


def test_names_and_order_are_stable() -> None:
    assert CAPABILITY_NAMES == (
        "iothread_vq_mapping",
        "scsi_iothread_vq_mapping",
        "throttle_groups",
        "block_threshold",
        "incremental_backup",
        "throttle_multi_iothread",
        "rbd_multi_iothread",
    )
    assert tuple(matrix_for("10.0.2", "11.3.0")) == CAPABILITY_NAMES


def test_no_qemu_is_trusted_with_a_throttled_disk_on_several_iothreads() -> None:
    for qemu in ("9.0.0", "10.0.2", "10.2.0", "99.0.0"):
        verdict = matrix_for(qemu, "11.3.0")["throttle_multi_iothread"]
        assert not verdict.supported
        assert "deadlocks a throttled disk" in verdict.reason


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("iothread_vq_mapping", "QEMU >= 9.0, libvirt >= 10.0"),
        ("scsi_iothread_vq_mapping", "QEMU >= 10.0, libvirt >= 11.2"),
        ("throttle_groups", "QEMU >= 2.11, libvirt >= 11.2"),
        ("block_threshold", "QEMU >= 2.3, libvirt >= 3.2"),
        ("incremental_backup", "QEMU >= 6.1, libvirt >= 7.6"),
    ],
)
def test_needs_strings(name: str, needs: str) -> None:
    assert matrix_for("10.0.2", "11.3.0")[name].needs == needs


# (qemu, libvirt) -> supported per capability, in CAPABILITY_NAMES order:
# iothread_vq_mapping, scsi_iothread_vq_mapping, throttle_groups, block_threshold, incremental.
GATES = [
    # this host: Debian bookworm-backports
    (*DEBIAN_BACKPORTS, (True, True, True, True, True)),
    # bookworm's own suite: QEMU 7.2, libvirt 9.0
    ("1:7.2+dfsg-7+deb12u7", "9.0.0-4+deb12u1", (False, False, False, True, True)),
    # RHEL 9.4: QEMU 8.2, libvirt 10.0
    ("8.2.0-11.el9_4", "10.0.0-6.el9_4", (False, False, False, True, True)),
    # QEMU boundary 8.2 -> 9.0 -> 10.0 with a new libvirt
    ("8.2.0", "11.3.0", (False, False, True, True, True)),
    ("9.0.0", "11.3.0", (True, False, True, True, True)),
    ("9.2.4", "11.3.0", (True, False, True, True, True)),
    ("10.0.0", "11.3.0", (True, True, True, True, True)),
    # libvirt boundary 9.0 -> 10.0 -> 11.2 with a new QEMU
    ("10.0.2", "9.0.0", (False, False, False, True, True)),
    ("10.0.2", "9.10.0", (False, False, False, True, True)),
    ("10.0.2", "10.0.0", (True, False, False, True, True)),
    ("10.0.2", "11.1.0", (True, False, False, True, True)),
    ("10.0.2", "11.2.0", (True, True, True, True, True)),
    # RPM NVR strings
    ("qemu-kvm-9.1.0-15.el9", "libvirt-10.10.0-7.el9", (True, False, False, True, True)),
    # incremental backup boundaries: QEMU 6.0/6.1, libvirt 7.5/7.6
    ("6.0.0", "7.6.0", (False, False, False, True, False)),
    ("6.1.0", "7.5.0", (False, False, False, True, False)),
    ("6.1.0", "7.6.0", (False, False, False, True, True)),
    # block threshold boundaries: QEMU 2.2/2.3, libvirt 3.1/3.2
    ("2.2.0", "3.2.0", (False, False, False, False, False)),
    ("2.3.0", "3.1.0", (False, False, False, False, False)),
    ("2.3.0", "3.2.0", (False, False, False, True, False)),
    # throttle groups: QEMU 2.10/2.11 with libvirt 11.2
    ("2.10.0", "11.2.0", (False, False, False, True, False)),
    ("2.11.0", "11.2.0", (False, False, True, True, False)),
]


# The gates above are version minimums; throttle_multi_iothread is a known defect and
# rbd_multi_iothread a fix in given releases, both tested apart.
VERSION_GATED = tuple(name for name in CAPABILITY_NAMES
                      if name not in ("throttle_multi_iothread", "rbd_multi_iothread"))


@pytest.mark.parametrize(("qemu", "libvirt", "expected"), GATES)
def test_version_gates(qemu: str, libvirt: str, expected: tuple[bool, ...]) -> None:
    matrix = matrix_for(qemu, libvirt)
    assert tuple(matrix[name].supported for name in VERSION_GATED) == expected


@pytest.mark.parametrize(
    ("qemu", "libvirt", "name", "reason"),
    [
        ("10.0.2", "11.3.0", "iothread_vq_mapping", "QEMU 10.0.2 and libvirt 11.3.0 support it"),
        ("8.2.0", "11.3.0", "iothread_vq_mapping", "needs QEMU >= 9.0, host has 8.2.0"),
        ("10.0.2", "9.0.0", "iothread_vq_mapping", "needs libvirt >= 10.0, host has 9.0.0"),
        (
            "8.2.0-11.el9_4",
            "9.0.0",
            "iothread_vq_mapping",
            "needs QEMU >= 9.0 and libvirt >= 10.0, host has QEMU 8.2.0 and libvirt 9.0.0",
        ),
        ("9.2.0", "11.3.0", "scsi_iothread_vq_mapping", "needs QEMU >= 10.0, host has 9.2.0"),
        ("10.0.2", "11.1.0", "scsi_iothread_vq_mapping", "needs libvirt >= 11.2, host has 11.1.0"),
        ("10.0.2", "11.0.0", "throttle_groups", "needs libvirt >= 11.2, host has 11.0.0"),
        ("6.0.0", "11.3.0", "incremental_backup", "needs QEMU >= 6.1, host has 6.0.0"),
        (None, "11.3.0", "block_threshold", "needs QEMU >= 2.3, host QEMU version unknown"),
        ("10.0.2", None, "block_threshold", "needs libvirt >= 3.2, host libvirt version unknown"),
        (
            None,
            None,
            "throttle_groups",
            "needs QEMU >= 2.11 and libvirt >= 11.2, "
            "host has an unknown QEMU version and an unknown libvirt version",
        ),
    ],
)
def test_reasons_are_exact(qemu: str | None, libvirt: str | None, name: str, reason: str) -> None:
    assert matrix_for(qemu, libvirt)[name].reason == reason


def test_to_json() -> None:
    capability = matrix_for("8.2.0", "11.3.0")["iothread_vq_mapping"]
    assert capability.to_json() == {
        "supported": False,
        "reason": "needs QEMU >= 9.0, host has 8.2.0",
        "needs": "QEMU >= 9.0, libvirt >= 10.0",
    }


NEW = (Version(10, 0, 2), Version(11, 3, 0))


def test_domain_caps_that_agree_change_nothing() -> None:
    flags = DomainCapsFlags(iothreads=True, disk_buses=ALL_BUSES, backup=True)
    assert capability_matrix(*NEW, flags) == capability_matrix(*NEW)


def test_iothreads_unsupported_in_domain_caps_wins_over_versions() -> None:
    matrix = capability_matrix(*NEW, DomainCapsFlags(iothreads=False, disk_buses=ALL_BUSES))
    for name in ("iothread_vq_mapping", "scsi_iothread_vq_mapping"):
        assert matrix[name] == Capability(
            False,
            "libvirt's domain capabilities report <iothreads supported='no'/>",
            matrix[name].needs,
        )
    assert matrix["throttle_groups"].supported


def test_missing_scsi_bus_blocks_only_scsi_mapping() -> None:
    flags = DomainCapsFlags(iothreads=True, disk_buses=("virtio", "sata"))
    matrix = capability_matrix(*NEW, flags)
    assert matrix["iothread_vq_mapping"].supported
    assert not matrix["scsi_iothread_vq_mapping"].supported
    assert matrix["scsi_iothread_vq_mapping"].reason == (
        "libvirt's domain capabilities list no scsi disk bus (buses: virtio, sata)"
    )


def test_disk_unsupported_blocks_mapping() -> None:
    matrix = capability_matrix(*NEW, DomainCapsFlags(disk_supported=False))
    assert matrix["iothread_vq_mapping"].reason == (
        "libvirt's domain capabilities report <disk supported='no'/>"
    )


def test_backup_unsupported_in_domain_caps_wins_over_versions() -> None:
    matrix = capability_matrix(*NEW, DomainCapsFlags(backup=False))
    assert matrix["incremental_backup"] == Capability(
        False,
        "libvirt's domain capabilities report <backup supported='no'/>",
        "QEMU >= 6.1, libvirt >= 7.6",
    )


def test_backup_supported_in_domain_caps_covers_vendor_backports() -> None:
    matrix = capability_matrix(Version(6, 0), Version(7, 0), DomainCapsFlags(backup=True))
    assert matrix["incremental_backup"] == Capability(
        True,
        "libvirt's domain capabilities report <backup supported='yes'/> (the version check "
        "alone would fail: needs QEMU >= 6.1 and libvirt >= 7.6, host has QEMU 6.0.0 and "
        "libvirt 7.0.0)",
        "QEMU >= 6.1, libvirt >= 7.6",
    )


def test_version_gap_and_domain_caps_refusal_are_both_reported() -> None:
    matrix = capability_matrix(Version(8, 2), Version(11, 3), DomainCapsFlags(iothreads=False))
    assert matrix["iothread_vq_mapping"].reason == (
        "needs QEMU >= 9.0, host has 8.2.0; "
        "libvirt's domain capabilities report <iothreads supported='no'/>"
    )


def test_unreported_flags_fall_back_to_versions() -> None:
    assert capability_matrix(*NEW, DomainCapsFlags()) == capability_matrix(*NEW)


def test_require_capability() -> None:
    matrix = matrix_for("8.2.0", "11.3.0")
    assert require_capability(matrix, "throttle_groups").supported
    with pytest.raises(CapabilityMissing) as caught:
        require_capability(matrix, "iothread_vq_mapping")
    assert caught.value.code == "capability.missing"
    assert str(caught.value) == (
        "iothread_vq_mapping is not available on this host: needs QEMU >= 9.0, host has 8.2.0"
    )
    assert caught.value.details == {
        "capability": "iothread_vq_mapping",
        "needs": "QEMU >= 9.0, libvirt >= 10.0",
    }
    with pytest.raises(InvalidInput):
        require_capability(matrix, "warp_drive")
