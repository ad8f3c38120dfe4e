"""The few flags blockplane reads from libvirt's domain capabilities XML.

Owns ``DomainCapsFlags`` and ``parse_domain_caps``: the string from
``virConnectGetDomainCapabilities`` (``virsh domcapabilities``) in, a small frozen value out.
It reads only what gates blockplane's disk features (IOThreads, disk buses and models, backup,
backingStoreInput) plus what identifies the emulator. It does not call libvirt; the hypervisor
layer hands the XML in. A flag libvirt did not report is ``None``, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from blockplane.errors import InvalidInput
from blockplane.xml.parser import parse_xml


@dataclass(frozen=True)
class DomainCapsFlags:
    """What libvirt says this emulator/machine/arch can do. ``None`` means "not reported"."""

    emulator: str | None = None
    domain_type: str | None = None
    machine: str | None = None
    arch: str | None = None
    max_vcpus: int | None = None
    iothreads: bool | None = None
    disk_supported: bool | None = None
    disk_buses: tuple[str, ...] | None = None
    disk_models: tuple[str, ...] | None = None
    backup: bool | None = None
    backing_store_input: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "emulator": self.emulator,
            "domain_type": self.domain_type,
            "machine": self.machine,
            "arch": self.arch,
            "max_vcpus": self.max_vcpus,
            "iothreads": self.iothreads,
            "disk_supported": self.disk_supported,
            "disk_buses": list(self.disk_buses) if self.disk_buses is not None else None,
            "disk_models": list(self.disk_models) if self.disk_models is not None else None,
            "backup": self.backup,
            "backing_store_input": self.backing_store_input,
        }


def parse_domain_caps(xml: str | bytes) -> DomainCapsFlags:
    """Parse a ``<domainCapabilities>`` document; malformed XML raises ``InvalidInput``."""
    root = parse_xml(xml, "domain capabilities")
    if root.tag != "domainCapabilities":
        raise InvalidInput(f"expected a <domainCapabilities> document, got <{root.tag}>")
    disk = root.find("devices/disk")
    return DomainCapsFlags(
        emulator=_text(root, "path"),
        domain_type=_text(root, "domain"),
        machine=_text(root, "machine"),
        arch=_text(root, "arch"),
        max_vcpus=_int_attribute(root.find("vcpu"), "max"),
        iothreads=_supported(root.find("iothreads")),
        disk_supported=_supported(disk),
        disk_buses=_enum_values(disk, "bus"),
        disk_models=_enum_values(disk, "model"),
        backup=_supported(root.find("features/backup")),
        backing_store_input=_supported(root.find("features/backingStoreInput")),
    )


def _text(root: etree._Element, path: str) -> str | None:
    node = root.find(path)
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def _supported(node: etree._Element | None) -> bool | None:
    if node is None:
        return None
    value = node.get("supported")
    if value == "yes":
        return True
    if value == "no":
        return False
    return None


def _int_attribute(node: etree._Element | None, name: str) -> int | None:
    if node is None:
        return None
    value = node.get(name)
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _enum_values(node: etree._Element | None, name: str) -> tuple[str, ...] | None:
    if node is None:
        return None
    enum = node.find(f"enum[@name='{name}']")
    if enum is None:
        return None
    return tuple(value.text.strip() for value in enum.findall("value") if value.text)
