"""Write a running domain's disk chains into its persistent definition.

Copies, for each named disk, the live ``<disk type>``, ``<driver type>``, ``<source>`` and the
nested ``<backingStore>`` chain over the persistent definition's, without libvirt's runtime
``index`` numbers. Builds what it is told and decides nothing: which disks are out of step is
``chain.persistent_chains``' business. Must not call libvirt.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from lxml import etree

from blockplane.xml.backing_chain import find_disk
from blockplane.xml.parser import parse_xml


def with_live_chains(persistent_xml: str, live_xml: str, targets: Iterable[str]) -> str:
    """``persistent_xml`` with the chains of ``targets`` as ``live_xml`` has them."""
    persistent, live = parse_xml(persistent_xml), parse_xml(live_xml)
    for target in targets:
        _copy_chain(find_disk(live, target), find_disk(persistent, target))
    return etree.tostring(persistent, encoding="unicode")


def _copy_chain(live: etree._Element, persistent: etree._Element) -> None:
    persistent.set("type", live.get("type", "file"))
    live_driver, persistent_driver = live.find("driver"), persistent.find("driver")
    if live_driver is not None and persistent_driver is not None:
        persistent_driver.set("type", live_driver.get("type", "raw"))
    for tag in ("source", "backingStore"):
        for old in persistent.findall(tag):
            persistent.remove(old)
    anchor = persistent.find("target")
    position = list(persistent).index(anchor) if anchor is not None else len(persistent)
    for tag in ("backingStore", "source"):  # inserted in reverse: source ends up first
        element = live.find(tag)
        if element is not None:
            persistent.insert(position, _without_indexes(element))


def _without_indexes(element: etree._Element) -> etree._Element:
    duplicate = copy.deepcopy(element)
    for node in duplicate.iter():
        if "index" in node.attrib:
            del node.attrib["index"]
    return duplicate

