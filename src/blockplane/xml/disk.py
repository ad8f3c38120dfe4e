"""Disk (and per-disk virtio-scsi controller) XML <-> ``DiskDevice``.

Keeps the parsed element around in ``DiskDevice.extra`` only as text fields it does not
model; decides nothing: mappings, limits, cache, discard and I/O mode arrive in the device.
"""

from __future__ import annotations

from lxml import etree

from blockplane.model.disk import DiskDevice, NetworkHost, NetworkSource, QueueMapping
from blockplane.xml.build import el
from blockplane.xml.parser import parse_xml
from blockplane.xml.throttle import iotune_element, parse_iotune


def disk_element(disk: DiskDevice) -> etree._Element:
    driver = el("driver", name="qemu", type=disk.format)
    for name, value in (("cache", disk.cache), ("discard", disk.discard), ("io", disk.io)):
        if value:
            driver.set(name, value)
    if disk.error_policy:
        driver.set("error_policy", disk.error_policy)
    if disk.bus == "virtio":
        _apply_queue_mapping(driver, disk.queues, disk.iothread, disk.queue_mapping)
    children = [driver]
    if disk.network is not None:
        children += network_source_elements(disk.network)
    elif disk.source_kind == "block":
        children.append(el("source", dev=disk.source))
    else:
        children.append(el("source", file=disk.source))
    element = el(
        "disk",
        *children,
        el("target", dev=disk.target, bus=disk.bus),
        type=disk.source_kind,
        device="disk",
    )
    if disk.iotune is not None:
        element.append(iotune_element(disk.iotune, disk.iotune_group))
    if disk.throttle_groups:
        element.append(
            el("throttlefilters", *[el("throttlefilter", group=g) for g in disk.throttle_groups])
        )
    element.append(el("alias", name=disk.user_alias))
    if disk.bus == "scsi" and disk.controller_index is not None:
        element.append(
            el(
                "address",
                type="drive",
                controller=str(disk.controller_index),
                bus="0",
                target="0",
                unit="0",
            )
        )
    return element


def network_source_elements(network: NetworkSource) -> list[etree._Element]:
    """``<source protocol name><host/>...</source>`` and, with a user, ``<auth>`` naming the
    libvirt secret (type ``ceph`` for rbd) that holds the user's key."""
    source = el("source", protocol=network.protocol, name=network.name)
    for host in network.hosts:
        node = el("host", name=host.name)
        if host.port is not None:
            node.set("port", str(host.port))
        source.append(node)
    elements = [source]
    if network.auth_username is not None and network.secret_uuid is not None:
        secret = el("secret", type="ceph" if network.protocol == "rbd" else network.protocol,
                    uuid=network.secret_uuid)
        elements.append(el("auth", secret, username=network.auth_username))
    return elements


def parse_network_source(node: etree._Element) -> NetworkSource | None:
    """The network source of a ``<disk>``, ``<backingStore>`` or ``<mirror>``; None if none."""
    source = node.find("source")
    if source is None or not source.get("protocol") or not source.get("name"):
        return None
    hosts = tuple(
        NetworkHost(host.get("name", ""), _port(host.get("port")))
        for host in source.findall("host")
    )
    auth = node.find("auth")
    if auth is None:
        auth = source.find("auth")
    secret = auth.find("secret") if auth is not None else None
    return NetworkSource(
        protocol=str(source.get("protocol")),
        name=str(source.get("name")),
        hosts=hosts,
        auth_username=auth.get("username") if auth is not None else None,
        secret_uuid=secret.get("uuid") if secret is not None else None,
    )


def _port(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def scsi_controller_element(disk: DiskDevice) -> etree._Element:
    """The virtio-scsi controller a scsi disk gets to itself; it carries the mapping."""
    driver = el("driver")
    _apply_queue_mapping(driver, disk.queues, disk.iothread, disk.queue_mapping)
    controller = el(
        "controller", type="scsi", index=str(disk.controller_index), model="virtio-scsi"
    )
    if driver.attrib or len(driver):
        controller.append(driver)
    controller.append(el("alias", name=f"ua-bp-scsi{disk.controller_index}"))
    return controller


def to_xml(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode")


def scsi_controller_xml(index: int) -> str:
    """A bare virtio-scsi controller ``index``: what libvirt needs to find it to detach it."""
    return to_xml(el("controller", type="scsi", index=str(index), model="virtio-scsi"))


def scsi_controller_indexes(domain_xml: str) -> set[int]:
    """The indexes of the domain's virtio-scsi controllers."""
    controllers = parse_xml(domain_xml).findall("devices/controller[@type='scsi']")
    return {int(node.get("index", "0")) for node in controllers}


def _apply_queue_mapping(
    driver: etree._Element, queues: int | None, iothread: int | None, mapping: QueueMapping
) -> None:
    if queues:
        driver.set("queues", str(queues))
    if iothread is not None:
        driver.set("iothread", str(iothread))
    if mapping:
        iothreads = el("iothreads")
        for iothread_id, queue_ids in mapping:
            node = el("iothread", id=str(iothread_id))
            for queue_id in queue_ids:
                node.append(el("queue", id=str(queue_id)))
            iothreads.append(node)
        driver.append(iothreads)


def parse_disks(domain_xml: str) -> list[DiskDevice]:
    root = parse_xml(domain_xml)
    controllers = {
        node.get("index"): node for node in root.findall("devices/controller[@type='scsi']")
    }
    disks = []
    for node in root.findall("devices/disk[@device='disk']"):
        disks.append(_parse_disk(node, controllers))
    return disks


def _parse_disk(node: etree._Element, controllers: dict[str | None, etree._Element]) -> DiskDevice:
    target = node.find("target")
    driver = node.find("driver")
    source = node.find("source")
    bus = target.get("bus", "virtio") if target is not None else "virtio"
    source_kind = node.get("type", "file")
    path = ""
    network = parse_network_source(node) if source_kind == "network" else None
    if network is not None:
        path = network.path
    elif source is not None:
        path = source.get("dev") or source.get("file") or ""
    controller_index: int | None = None
    mapping_driver = driver
    address = node.find("address[@type='drive']")
    if bus == "scsi" and address is not None:
        controller_index = int(address.get("controller", "0"))
        controller = controllers.get(str(controller_index))
        mapping_driver = controller.find("driver") if controller is not None else None
    queues, iothread, mapping = _parse_queue_mapping(mapping_driver)
    alias = node.find("alias")
    iotune = parse_iotune(node)
    return DiskDevice(
        target=target.get("dev", "") if target is not None else "",
        bus="scsi" if bus == "scsi" else "virtio",
        source=path,
        source_kind="network" if network is not None else (
            "block" if source_kind == "block" else "file"),
        format="raw" if driver is not None and driver.get("type") == "raw" else "qcow2",
        queues=queues,
        iothread=iothread,
        queue_mapping=mapping,
        throttle_groups=tuple(
            f.get("group", "") for f in node.findall("throttlefilters/throttlefilter")
        ),
        iotune=iotune[0] if iotune else None,
        iotune_group=iotune[1] if iotune else None,
        error_policy=driver.get("error_policy") if driver is not None else None,
        cache=driver.get("cache") if driver is not None else None,
        discard=driver.get("discard") if driver is not None else None,
        io=driver.get("io") if driver is not None else None,
        controller_index=controller_index,
        alias=alias.get("name") if alias is not None else None,
        network=network,
    )


def _parse_queue_mapping(
    driver: etree._Element | None,
) -> tuple[int | None, int | None, QueueMapping]:
    if driver is None:
        return None, None, ()
    queues = int(driver.get("queues", "0")) or None
    iothread_attr = driver.get("iothread")
    iothread = int(iothread_attr) if iothread_attr else None
    mapping = tuple(
        (
            int(node.get("id", "0")),
            tuple(int(queue.get("id", "0")) for queue in node.findall("queue")),
        )
        for node in driver.findall("iothreads/iothread")
    )
    return queues, iothread, mapping
