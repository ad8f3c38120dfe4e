"""Domain XML -> ``Chain``: one disk's ``<source>``, its nested ``<backingStore>`` and ``<mirror>``.

Reads what libvirt wrote and decides nothing: which element a user means, or whether a job may run,
is ``chain.addressing``'s business. The top's format comes from ``<driver type>``, every backing
element's from its own ``<format type>``; an empty ``<backingStore/>`` (or a raw element, which
has no backing) ends the chain, and a chain that stops without one (inactive XML) is marked
incomplete. Must not call libvirt or read files.
"""

from __future__ import annotations

from lxml import etree

from blockplane.errors import Conflict, NotFound
from blockplane.model.chain import Chain, ChainElement, Mirror, element_name
from blockplane.model.disk import SourceKind
from blockplane.xml.parser import parse_xml


def parse_chain(domain_xml: str, target: str) -> Chain:
    """The backing chain of the disk whose ``<target dev>`` is ``target``."""
    disk = find_disk(parse_xml(domain_xml), target)
    layers = _layers(disk, target)
    elements = tuple(
        ChainElement(
            position=position,
            libvirt_index=index,
            name=element_name(target, position),
            path=path,
            format=fmt,
            backing_format=layers[position + 1][3] if position + 1 < len(layers) else None,
            source_kind=kind,
        )
        for position, (kind, path, index, fmt) in enumerate(layers)
    )
    # A raw image has no backing file: libvirt leaves out the empty <backingStore/> where it
    # did not look (a network disk), yet the chain ends there.
    complete = _terminated(disk) or layers[-1][3] == "raw"
    return Chain(target, elements, complete=complete, mirror=_mirror(disk))


def find_disk(root: etree._Element, target: str) -> etree._Element:
    """The ``<disk>`` whose ``<target dev>`` is ``target``; NotFound ``disk.not_found``."""
    for disk in root.iterfind("devices/disk"):
        element = disk.find("target")
        if element is not None and element.get("dev") == target:
            return disk
    raise NotFound(f"the VM has no disk {target}", code="disk.not_found")


_Layer = tuple[SourceKind, str, int | None, str | None]


def _layers(disk: etree._Element, target: str) -> list[_Layer]:
    source = disk.find("source")
    if source is None:
        raise Conflict(f"disk {target} has no source (empty drive)", code="chain.no_source")
    driver = disk.find("driver")
    layers = [_layer(disk, source, driver.get("type") if driver is not None else None, target)]
    node = disk.find("backingStore")
    while node is not None and node.get("type") is not None:
        source = node.find("source")
        if source is None:
            raise Conflict(f"a backing element of {target} has no source", code="chain.no_source")
        fmt = node.find("format")
        layers.append(_layer(node, source, fmt.get("type") if fmt is not None else None, target))
        node = node.find("backingStore")
    return layers


def _layer(
    node: etree._Element, source: etree._Element, fmt: str | None, target: str
) -> _Layer:
    kind: SourceKind
    if node.get("type") == "file":
        kind, path = "file", source.get("file")
    elif node.get("type") == "block":
        kind, path = "block", source.get("dev")
    elif node.get("type") == "network" and source.get("protocol") == "rbd":
        kind, path = "network", _network_path(source)
    else:
        raise Conflict(
            f"{target} has a {node.get('type')} source in its chain; blockplane manages file,"
            " block and rbd images only",
            code="chain.unsupported_source",
        )
    if not path:
        raise Conflict(f"a {kind} element of {target} names no path", code="chain.no_source")
    index = source.get("index") if node.tag == "disk" else node.get("index")
    return (kind, path, int(index) if index is not None else None, fmt)


def _network_path(source: etree._Element) -> str | None:
    """``rbd:POOL/IMAGE``, the name blockplane gives an RBD image wherever a path goes."""
    name = source.get("name")
    return f"{source.get('protocol')}:{name}" if name else None


def _terminated(disk: etree._Element) -> bool:
    node = disk.find("backingStore")
    while node is not None:
        if node.get("type") is None:
            return True
        node = node.find("backingStore")
    return False


def _mirror(disk: etree._Element) -> Mirror | None:
    mirror = disk.find("mirror")
    if mirror is None:
        return None
    source = mirror.find("source")
    fmt = mirror.find("format")
    path = None
    index = None
    if source is not None:
        path = source.get("file") or source.get("dev")
        if source.get("protocol") == "rbd":
            path = _network_path(source)
        raw_index = source.get("index")
        index = int(raw_index) if raw_index is not None else None
    return Mirror(
        job=mirror.get("job", "copy"),
        path=path or mirror.get("file"),
        format=fmt.get("type") if fmt is not None else mirror.get("format"),
        ready=mirror.get("ready"),
        libvirt_index=index,
    )
