"""Throttle groups and I/O tune XML <-> model: ``<throttlegroups>`` and a disk's ``<iotune>``.

Owns the mapping between libvirt's elements and ``ThrottleGroup`` / ``ThrottleLimits``, field
by field, in the order libvirt 11.3 formats them. Decides nothing: which limits are valid or
which groups a disk should use is ``blockplane.throttle``'s business. Elements it does not map (a
field a later libvirt adds) are ignored when reading and never written.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from blockplane.model.throttle import ThrottleGroup
from blockplane.model.throttle_limits import FIELD_NAMES, MAX_LENGTH_FIELDS, ThrottleLimits
from blockplane.xml.build import el
from blockplane.xml.parser import parse_xml

#: libvirt's ``<iotune>`` writes ``<group_name>`` before the burst lengths; a group after them.
_IOTUNE_HEAD = tuple(name for name in FIELD_NAMES if name not in MAX_LENGTH_FIELDS)


def parse_throttle_groups(domain_xml: str) -> tuple[ThrottleGroup, ...]:
    """The domain's throttle groups, in document order."""
    root = parse_xml(domain_xml)
    return tuple(
        parse_throttle_group(node) for node in root.findall("throttlegroups/throttlegroup")
    )


def parse_throttle_group(node: etree._Element) -> ThrottleGroup:
    return ThrottleGroup(name=node.findtext("group_name", "").strip(), limits=parse_limits(node))


def parse_limits(node: etree._Element) -> ThrottleLimits:
    """The limits held by a ``<throttlegroup>`` or ``<iotune>`` element; absent fields are 0."""
    values = {}
    for name in FIELD_NAMES:
        text = node.findtext(name)
        if text is not None and text.strip():
            values[name] = int(text.strip())
    return ThrottleLimits(**values)


def throttle_group_element(group: ThrottleGroup) -> etree._Element:
    """``<throttlegroup>``: the set limits in libvirt's order, then ``<group_name>``."""
    element = el("throttlegroup", *_fields(group.limits, FIELD_NAMES))
    element.append(el("group_name", group.name))
    return element


def throttle_groups_element(groups: Iterable[ThrottleGroup]) -> etree._Element:
    return el("throttlegroups", *[throttle_group_element(group) for group in groups])


def iotune_element(limits: ThrottleLimits, group_name: str | None = None) -> etree._Element:
    """A disk's ``<iotune>``: averages, maxima and size, the group name, then burst lengths."""
    element = el("iotune", *_fields(limits, _IOTUNE_HEAD))
    if group_name:
        element.append(el("group_name", group_name))
    for child in _fields(limits, MAX_LENGTH_FIELDS):
        element.append(child)
    return element


def parse_iotune(disk: etree._Element) -> tuple[ThrottleLimits, str | None] | None:
    """A ``<disk>``'s ``<iotune>`` limits and group name; ``None`` when it has none."""
    node = disk.find("iotune")
    if node is None:
        return None
    group_name = (node.findtext("group_name") or "").strip() or None
    return parse_limits(node), group_name


def _fields(limits: ThrottleLimits, names: Iterable[str]) -> list[etree._Element]:
    values = limits.to_dict()
    return [el(name, str(values[name])) for name in names if values[name]]
