"""How QEMU serves an attached disk: decided by the disk service, written as given by xml/."""

from __future__ import annotations

from blockplane.model.disk import DiskDevice, SourceKind
from blockplane.vms.disk_plan import with_io_policy
from blockplane.xml.disk import disk_element


def _device(source_kind: SourceKind) -> DiskDevice:
    return DiskDevice(target="vdb", bus="virtio", source="/x", source_kind=source_kind,
                      format="qcow2")


def test_block_volumes_use_native_aio_without_the_page_cache() -> None:
    driver = disk_element(with_io_policy(_device("block"))).find("driver")
    assert driver is not None
    assert (driver.get("cache"), driver.get("discard"), driver.get("io")) == (
        "none", "unmap", "native")


def test_file_volumes_use_the_thread_pool() -> None:
    driver = disk_element(with_io_policy(_device("file"))).find("driver")
    assert driver is not None
    assert (driver.get("cache"), driver.get("discard"), driver.get("io")) == (
        "none", "unmap", "threads")


def test_xml_adds_no_driver_options_of_its_own() -> None:
    driver = disk_element(_device("block")).find("driver")
    assert driver is not None
    assert {"cache", "discard", "io"}.isdisjoint(driver.attrib)
