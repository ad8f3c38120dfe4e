"""Domain XML -> ``DomainInventory``: every disk, IOThread and throttle group a domain has.

Reads a domain some platform defined, as it is: all ``<disk>`` elements (cdroms, network and
empty drives included), their chains (``xml.backing_chain``), mappings, filters and ``<iotune>``.
Decides nothing: which disks blockplane may manage is ``vms.adopt_plan``'s business.
"""

from __future__ import annotations

from lxml import etree

from blockplane.errors import BlockplaneError
from blockplane.model.inventory import ChainLink, DiskInventory, DomainInventory
from blockplane.xml.backing_chain import parse_chain
from blockplane.xml.domain import parse_iothread_ids
from blockplane.xml.parser import parse_xml
from blockplane.xml.throttle import parse_iotune, parse_throttle_groups

_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000**2, "m": 1024**2, "mib": 1024**2,
    "gb": 1000**3, "g": 1024**3, "gib": 1024**3,
    "tb": 1000**4, "t": 1024**4, "tib": 1024**4,
}


def parse_inventory(domain_xml: str) -> DomainInventory:
    root = parse_xml(domain_xml)
    controllers = {
        node.get("index"): node for node in root.findall("devices/controller[@type='scsi']")
    }
    disks = tuple(
        _disk(domain_xml, node, controllers) for node in root.findall("devices/disk")
    )
    return DomainInventory(
        name=root.findtext("name", "").strip(),
        uuid=root.findtext("uuid", "").strip(),
        vcpus=_vcpus(root),
        memory_bytes=_memory(root),
        iothread_ids=parse_iothread_ids(domain_xml),
        throttle_groups=parse_throttle_groups(domain_xml),
        disks=disks,
    )


def _vcpus(root: etree._Element) -> int:
    node = root.find("vcpu")
    if node is None:
        return 1
    text = (node.get("current") or node.text or "1").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1


def _memory(root: etree._Element) -> int:
    node = root.find("memory")
    if node is None or not (node.text or "").strip().isdigit():
        return 0
    unit = (node.get("unit") or "KiB").lower()
    return int((node.text or "0").strip()) * _UNITS.get(unit, 1024)


def _disk(
    domain_xml: str, node: etree._Element, controllers: dict[str | None, etree._Element]
) -> DiskInventory:
    target_node = node.find("target")
    target = target_node.get("dev", "") if target_node is not None else ""
    bus = target_node.get("bus", "") if target_node is not None else ""
    source_type = node.get("type", "file")
    source = node.find("source")
    driver = node.find("driver")
    path: str | None = None
    network: str | None = None
    if source is not None:
        if source_type == "network":
            network = f"{source.get('protocol', '')}:{source.get('name', '')}"
        else:
            path = source.get("file") or source.get("dev") or None
    chain: tuple[ChainLink, ...] = ()
    complete = False
    mirror_path: str | None = None
    if path is not None and source_type in ("file", "block") and target:
        try:
            parsed = parse_chain(domain_xml, target)
        except BlockplaneError:
            chain = (ChainLink(path, driver.get("type") if driver is not None else None,
                               source_type),)
        else:
            chain = tuple(ChainLink(e.path, e.format, e.source_kind) for e in parsed.elements)
            complete = parsed.complete
            mirror_path = parsed.mirror.path if parsed.mirror is not None else None
    mapping_driver = driver
    address = node.find("address[@type='drive']")
    if bus == "scsi" and address is not None:
        controller = controllers.get(address.get("controller", "0"))
        mapping_driver = controller.find("driver") if controller is not None else None
    queues, iothread, mapping = _mapping(mapping_driver)
    iotune = parse_iotune(node)
    return DiskInventory(
        target=target,
        bus=bus,
        device=node.get("device", "disk"),
        source_type=source_type,
        path=path,
        format=driver.get("type") if driver is not None else None,
        chain=chain,
        chain_complete=complete,
        readonly=node.find("readonly") is not None,
        shareable=node.find("shareable") is not None,
        queues=queues,
        iothread=iothread,
        queue_mapping=mapping,
        throttle_groups=tuple(
            f.get("group", "") for f in node.findall("throttlefilters/throttlefilter")
        ),
        iotune=iotune[0] if iotune else None,
        iotune_group=iotune[1] if iotune else None,
        network=network,
        mirror_path=mirror_path,
    )


def _mapping(
    driver: etree._Element | None,
) -> tuple[int | None, int | None, tuple[tuple[int, tuple[int, ...]], ...]]:
    if driver is None:
        return None, None, ()
    queues_text = driver.get("queues", "")
    iothread_text = driver.get("iothread", "")
    mapping = tuple(
        (
            int(node.get("id", "0")),
            tuple(int(queue.get("id", "0")) for queue in node.findall("queue")),
        )
        for node in driver.findall("iothreads/iothread")
    )
    return (
        int(queues_text) if queues_text.isdigit() else None,
        int(iothread_text) if iothread_text.isdigit() else None,
        mapping,
    )
