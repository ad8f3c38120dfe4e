"""HostFacts built from literals (no probing): the SPEC's facts --json shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockplane.cli.decode import encode
from blockplane.errors import CapabilityMissing, InvalidInput
from blockplane.facts.accel import KvmProbe
from blockplane.facts.host import (
    HostFacts,
    LibvirtRuntime,
    QemuFacts,
    build_host_facts,
    libvirt_facts,
)
from blockplane.facts.versions import Version
from blockplane.xml.domain_caps import parse_domain_caps

GOLDEN = Path(__file__).parent / "data" / "domcaps_qemu_x86_64_pc.xml"
BROKEN_KVM = KvmProbe(False, "`qemu-system-x86_64 -accel kvm -cpu host` failed: MSR 0x10a")
URI = "qemu:///embed?root=/var/lib/blockplane/libvirt"


def this_host(requested_accel: str = "auto", with_domcaps: bool = True) -> HostFacts:
    return build_host_facts(
        qemu=QemuFacts(Version(10, 0, 2), "1:10.0.2+ds-2+deb13u1~bpo12+1", "/usr/bin/qemu"),
        libvirt=libvirt_facts(LibvirtRuntime("11003000", "11.3.0", URI), "11.3.0-2~bpo12+1"),
        kvm=BROKEN_KVM,
        cpus=2,
        memory_bytes=25_000_000_000,
        domain_caps=parse_domain_caps(GOLDEN.read_text()) if with_domcaps else None,
        requested_accel=requested_accel,
    )


def test_to_json_shape() -> None:
    doc = this_host().to_json()
    assert list(doc) == [
        "qemu",
        "libvirt",
        "kvm",
        "accel",
        "cpus",
        "memory_bytes",
        "domain_capabilities",
        "capabilities",
        "rbd_driver",
    ]
    assert doc["qemu"] == {
        "version": "10.0.2",
        "package_version": "1:10.0.2+ds-2+deb13u1~bpo12+1",
        "binary": "/usr/bin/qemu",
    }
    assert doc["libvirt"] == {
        "version": "11.3.0",
        "library_version": "11.3.0",
        "daemon_version": "11.3.0",
        "package_version": "11.3.0-2~bpo12+1",
        "uri": URI,
    }
    assert doc["kvm"] == {"usable": False, "reason": BROKEN_KVM.reason}
    assert doc["accel"]["selected"] == "tcg"
    assert doc["accel"]["requested"] == "auto"
    assert doc["cpus"] == 2
    assert doc["memory_bytes"] == 25_000_000_000
    assert doc["domain_capabilities"]["backup"] is True
    assert doc["capabilities"]["iothread_vq_mapping"] == {
        "supported": True,
        "reason": "QEMU 10.0.2 and libvirt 11.3.0 support it",
        "needs": "QEMU >= 9.0, libvirt >= 10.0",
    }
    assert set(doc["capabilities"]) == {
        "iothread_vq_mapping",
        "scsi_iothread_vq_mapping",
        "throttle_groups",
        "block_threshold",
        "incremental_backup",
        "throttle_multi_iothread",
        "rbd_multi_iothread",
    }
    assert json.loads(json.dumps(doc)) == doc


def test_facts_are_frozen_values() -> None:
    facts = this_host()
    assert facts == this_host()
    with pytest.raises(AttributeError):
        facts.cpus = 4  # type: ignore[misc]


def test_daemon_version_gates_when_known() -> None:
    facts = libvirt_facts(LibvirtRuntime("11.3.0", "10.0.0", "qemu+ssh://other/system"), None)
    assert facts.version == Version(10, 0, 0)
    assert facts.library_version == Version(11, 3, 0)
    without_daemon = libvirt_facts(LibvirtRuntime("11.3.0", None, URI), None)
    assert without_daemon.version == Version(11, 3, 0)
    assert without_daemon.to_json()["daemon_version"] is None


def test_malformed_runtime_versions_are_refused() -> None:
    with pytest.raises(InvalidInput, match="library_version"):
        libvirt_facts(LibvirtRuntime("eleven", None, URI), None)
    with pytest.raises(InvalidInput, match="daemon_version"):
        libvirt_facts(LibvirtRuntime("11.3.0", "0", URI), None)


def test_unknown_qemu_version_is_null_and_unsupported() -> None:
    facts = build_host_facts(
        qemu=QemuFacts(None, None, None),
        libvirt=libvirt_facts(LibvirtRuntime("11.3.0", None, URI), None),
        kvm=BROKEN_KVM,
        cpus=1,
        memory_bytes=None,
    )
    doc = facts.to_json()
    assert doc["qemu"]["version"] is None
    assert doc["domain_capabilities"] is None
    assert doc["memory_bytes"] is None
    assert not any(entry["supported"] for entry in doc["capabilities"].values())


def test_explicit_kvm_without_kvm_raises() -> None:
    with pytest.raises(CapabilityMissing):
        this_host(requested_accel="kvm")
    assert this_host(requested_accel="tcg").accel.selected == "tcg"


@pytest.mark.parametrize("with_domcaps", [True, False])
def test_the_api_answers_the_same_document(with_domcaps: bool) -> None:
    facts = this_host(with_domcaps=with_domcaps)
    assert json.loads(json.dumps(encode(facts.view()))) == json.loads(json.dumps(facts.to_json()))
