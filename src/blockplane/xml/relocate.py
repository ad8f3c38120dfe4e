"""A domain XML rewritten for the host a VM migrates to: its disks' new homes and IOThreads.

Takes the source's migratable XML and, per disk, the path and kind (file or block) it has
there and the IOThreads that serve its queues; returns the XML the destination runs. Everything
else (throttle groups and filters, devices, the guest-visible queue counts) is left as it was.
Decides nothing: the paths and the plan arrive decided (``migration.destination``). Also reads
the host files a definition needs (emulator, kernel, initrd), for the destination to check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lxml import etree

from blockplane.errors import InvalidInput
from blockplane.model.disk import QueueMapping
from blockplane.xml.build import el
from blockplane.xml.domain import set_iothread_ids
from blockplane.xml.parser import parse_xml


@dataclass(frozen=True)
class DiskHome:
    """Where a disk lives on the destination and which IOThreads serve it there.

    ``path`` None: the source stays as it is (shared storage). ``iothread``: one IOThread for
    every queue (``single``); ``mapping``: queues over several (``mapped``); neither: none.
    """

    path: str | None
    kind: str
    iothread: int | None
    mapping: QueueMapping


def relocate(domain_xml: str, homes: Mapping[str, DiskHome],
             iothread_ids: Sequence[int]) -> str:
    """``domain_xml`` with each disk of ``homes`` moved and re-mapped, and the domain's
    IOThreads set to ``iothread_ids``."""
    root = parse_xml(domain_xml)
    controllers = {node.get("index"): node
                   for node in root.findall("devices/controller[@type='scsi']")}
    for disk in root.findall("devices/disk[@device='disk']"):
        target = disk.find("target")
        name = target.get("dev", "") if target is not None else ""
        home = homes.get(name)
        if home is None:
            continue
        if home.path is not None:
            _move(disk, home.path, home.kind)
        driver = _mapping_driver(disk, controllers)
        if driver is not None:
            _set_mapping(driver, home.iothread, home.mapping)
    set_iothread_ids(root, tuple(iothread_ids))
    return etree.tostring(root, encoding="unicode")


def _move(disk: etree._Element, path: str, kind: str) -> None:
    """Point ``disk`` at ``path``: a fresh image with no backing chain of its own."""
    if kind not in ("file", "block"):
        raise InvalidInput(f"a disk is a file or a block device, not {kind!r}",
                           code="xml.invalid")
    disk.set("type", kind)
    for old in disk.findall("source") + disk.findall("backingStore"):
        disk.remove(old)
    source = el("source", dev=path) if kind == "block" else el("source", file=path)
    driver = disk.find("driver")
    position = disk.index(driver) + 1 if driver is not None else 0
    disk.insert(position, source)
    if driver is not None and driver.get("io") in ("native", "threads"):
        # The rule every attach follows (vms.disks.with_io_policy): native AIO on devices.
        driver.set("io", "native" if kind == "block" else "threads")


def _mapping_driver(
    disk: etree._Element, controllers: Mapping[str | None, etree._Element]
) -> etree._Element | None:
    """The ``<driver>`` that carries the disk's IOThreads: its own (virtio-blk), or its
    controller's (virtio-scsi)."""
    target = disk.find("target")
    if target is not None and target.get("bus") == "scsi":
        address = disk.find("address[@type='drive']")
        controller = controllers.get(address.get("controller", "0") if address is not None
                                     else None)
        if controller is None:
            return None
        driver = controller.find("driver")
        if driver is None:
            driver = el("driver")
            controller.insert(0, driver)
        return driver
    return disk.find("driver")


def _set_mapping(driver: etree._Element, iothread: int | None, mapping: QueueMapping) -> None:
    for old in driver.findall("iothreads"):
        driver.remove(old)
    if iothread is not None:
        driver.set("iothread", str(iothread))
    elif "iothread" in driver.attrib:
        del driver.attrib["iothread"]
    if mapping:
        iothreads = el("iothreads")
        for iothread_id, queues in mapping:
            node = el("iothread", id=str(iothread_id))
            for queue in queues:
                node.append(el("queue", id=str(queue)))
            iothreads.append(node)
        driver.append(iothreads)


def host_files(domain_xml: str) -> list[str]:
    """The host files a definition opens by path: its emulator, kernel and initrd."""
    root = parse_xml(domain_xml)
    paths = [root.findtext("devices/emulator"), root.findtext("os/kernel"),
             root.findtext("os/initrd")]
    return [path.strip() for path in paths if path and path.strip()]


def serial_log_paths(domain_xml: str) -> list[str]:
    """Files the domain's serial consoles log into (their directory must exist there)."""
    root = parse_xml(domain_xml)
    return [source.get("path", "") for source in root.findall("devices/serial[@type='file']/source")
            if source.get("path")]
