"""capabilities_from_facts_json: another host's facts --json, round trip and malformed files."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from blockplane.errors import InvalidInput
from blockplane.facts.accel import KvmProbe
from blockplane.facts.capabilities import capabilities_from_facts_json, capability_matrix
from blockplane.facts.host import HostFacts, LibvirtRuntime, QemuFacts, build_host_facts
from blockplane.facts.host import libvirt_facts as make_libvirt_facts
from blockplane.facts.versions import Version, parse_version


def facts_for(qemu: str, libvirt: str) -> HostFacts:
    return build_host_facts(
        qemu=QemuFacts(parse_version(qemu), qemu, "/usr/libexec/qemu-kvm"),
        libvirt=make_libvirt_facts(LibvirtRuntime(libvirt, libvirt, "qemu:///system"), libvirt),
        kvm=KvmProbe(True, "a test vCPU ran guest code"),
        cpus=8,
        memory_bytes=64 << 30,
    )


@pytest.mark.parametrize(
    ("qemu", "libvirt"),
    [
        ("1:10.0.2+ds-2+deb13u1~bpo12+1", "11.3.0-2~bpo12+1"),
        ("8.2.0-11.el9_4", "10.0.0-6.el9_4"),
        ("9.0.0", "10.0.0"),
        ("7.2.0", "9.0.0"),
    ],
)
def test_round_trip(qemu: str, libvirt: str) -> None:
    facts = facts_for(qemu, libvirt)
    document = json.loads(json.dumps(facts.to_json()))
    assert capabilities_from_facts_json(document) == facts.capabilities


def test_minimal_hand_written_document() -> None:
    document = {"qemu": {"version": "9.0.0"}, "libvirt": {"version": "10.0.0"}}
    matrix = capabilities_from_facts_json(document)
    assert matrix == capability_matrix(Version(9, 0), Version(10, 0))
    assert matrix["iothread_vq_mapping"].supported
    assert not matrix["throttle_groups"].supported


def test_null_versions_mean_unknown() -> None:
    matrix = capabilities_from_facts_json({"qemu": {"version": None}, "libvirt": {"version": None}})
    assert not any(capability.supported for capability in matrix.values())


def test_only_versions_are_read() -> None:
    document: dict[str, Any] = facts_for("10.0.2", "11.3.0").to_json()
    document["capabilities"] = {"iothread_vq_mapping": {"supported": False}}
    document["domain_capabilities"] = {"backup": False, "iothreads": False}
    assert capabilities_from_facts_json(document)["iothread_vq_mapping"].supported


VALID: dict[str, Any] = {"qemu": {"version": "10.0.2"}, "libvirt": {"version": "11.3.0"}}


def _without(section: str, key: str | None = None) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    if key is None:
        del document[section]
    else:
        del document[section][key]
    return document


def _with(section: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    document[section] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must hold a JSON object"),
        ("10.0.2", "must hold a JSON object"),
        (None, "must hold a JSON object"),
        ({}, "no 'qemu' object"),
        (_without("qemu"), "no 'qemu' object"),
        (_without("libvirt"), "no 'libvirt' object"),
        (_without("qemu", "version"), "'qemu.version' is missing"),
        (_without("libvirt", "version"), "'libvirt.version' is missing"),
        (_with("qemu", "10.0.2"), "'qemu' must be an object"),
        (_with("libvirt", ["11.3.0"]), "'libvirt' must be an object"),
        (_with("qemu", {"version": 10}), "'qemu.version' must be a string or null"),
        (_with("libvirt", {"version": 11.3}), "'libvirt.version' must be a string or null"),
        (_with("qemu", {"version": "banana"}), "'qemu.version': not a version"),
        (_with("libvirt", {"version": ""}), "'libvirt.version': version string is empty"),
    ],
)
def test_malformed_documents_are_refused(document: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        capabilities_from_facts_json(document)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2
