"""Domain XML from a ``DomainDefinition``, and the few domain-level fields we read back.

Builds and parses; decides nothing (which emulator, which virt type and how many IOThreads
were all settled before we get here).
"""

from __future__ import annotations

from lxml import etree

from blockplane.model.vm import DomainDefinition
from blockplane.xml.build import el
from blockplane.xml.parser import parse_xml

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def build_domain_xml(definition: DomainDefinition) -> str:
    spec = definition.spec
    os_element = el("os", el("type", "hvm", arch="x86_64", machine="pc"))
    if definition.boot is not None:
        os_element.append(el("kernel", definition.boot.kernel))
        os_element.append(el("initrd", definition.boot.initrd))
        os_element.append(el("cmdline", definition.boot.cmdline))
    else:
        os_element.append(el("boot", dev="hd"))

    devices = el(
        "devices",
        el("emulator", definition.emulator),
        el(
            "serial", el("source", path=definition.console_log), el("target", port="0"), type="file"
        ),
        el("controller", type="usb", model="none"),
        el("memballoon", model="none"),
    )
    if definition.boot is not None:
        devices.append(
            el("channel", el("target", type="virtio", name=GUEST_AGENT_CHANNEL), type="unix")
        )

    domain = el(
        "domain",
        el("name", spec.name),
        el("memory", str(spec.memory_bytes), unit="b"),
        el("vcpu", str(spec.vcpus)),
        os_element,
        el("features", el("acpi")),
        el("on_poweroff", "destroy"),
        el("on_reboot", "restart"),
        el("on_crash", "destroy"),
        devices,
        type=definition.virt_type,
    )
    if definition.virt_type == "kvm":
        domain.insert(4, el("cpu", mode="host-passthrough"))
    if definition.iothread_ids:
        set_iothread_ids(domain, definition.iothread_ids)
    return etree.tostring(domain, pretty_print=True, encoding="unicode")


def set_iothread_ids(domain: etree._Element, iothread_ids: tuple[int, ...]) -> None:
    for old in domain.findall("iothreads") + domain.findall("iothreadids"):
        domain.remove(old)
    vcpu = domain.find("vcpu")
    position = domain.index(vcpu) + 1 if vcpu is not None else len(domain)
    if not iothread_ids:
        return
    domain.insert(position, el("iothreads", str(len(iothread_ids))))
    domain.insert(
        position + 1, el("iothreadids", *[el("iothread", id=str(i)) for i in sorted(iothread_ids)])
    )


def parse_iothread_ids(domain_xml: str) -> tuple[int, ...]:
    root = parse_xml(domain_xml)
    ids = [int(node.get("id", "0")) for node in root.findall("iothreadids/iothread")]
    if not ids:
        count = root.findtext("iothreads")
        if count:
            ids = list(range(1, int(count) + 1))
    return tuple(sorted(ids))


def parse_uuid(domain_xml: str) -> str:
    root = parse_xml(domain_xml)
    return root.findtext("uuid") or ""
