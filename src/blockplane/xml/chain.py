"""The XML documents of chain operations: disk-only snapshots, copy destinations, backups and
checkpoints, and the parse of libvirt's ``<domaincheckpoint>``.

Builds what it is given and decides nothing: which disks take part, where overlays live and what
the checkpoint is called are the chain package's business. Must not call libvirt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lxml import etree

from blockplane.model.disk import NetworkSource, SourceKind
from blockplane.xml.build import el
from blockplane.xml.disk import network_source_elements
from blockplane.xml.parser import parse_xml


@dataclass(frozen=True)
class ImageTarget:
    """A new image for disk ``target``: a file, a block device or (``network``) an RBD image,
    and its format."""

    target: str
    kind: SourceKind
    path: str
    format: str = "qcow2"
    network: NetworkSource | None = None


def _source(kind: SourceKind, path: str) -> etree._Element:
    return el("source", file=path) if kind == "file" else el("source", dev=path)


def _sources(image: ImageTarget) -> list[etree._Element]:
    if image.network is not None:
        return network_source_elements(image.network)
    return [_source(image.kind, image.path)]


def _text(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode")


def snapshot_xml(name: str, overlays: Iterable[ImageTarget], skipped: Iterable[str]) -> str:
    """``<domainsnapshot>``: an external overlay per snapshotted disk, ``snapshot='no'`` else."""
    disks = el("disks")
    for overlay in overlays:
        disks.append(
            el("disk", el("driver", type=overlay.format), _source(overlay.kind, overlay.path),
               name=overlay.target, snapshot="external", type=overlay.kind)
        )
    for target in skipped:
        disks.append(el("disk", name=target, snapshot="no"))
    return _text(el("domainsnapshot", el("name", name), disks))


def copy_destination_xml(destination: ImageTarget) -> str:
    """The ``<disk>`` that ``virDomainBlockCopy`` mirrors into."""
    return _text(
        el("disk", *_sources(destination), el("driver", type=destination.format),
           type=destination.kind)
    )


def backup_xml(
    files: Mapping[str, str], skipped: Iterable[str], incremental: str | None
) -> str:
    """A push-mode ``<domainbackup>`` writing disk ``target`` to the qcow2 ``files[target]``."""
    root = el("domainbackup", mode="push")
    if incremental is not None:
        root.append(el("incremental", incremental))
    disks = el("disks")
    for target, path in files.items():
        disks.append(
            el("disk", el("target", file=path), el("driver", type="qcow2"),
               name=target, backup="yes", type="file")
        )
    for target in skipped:
        disks.append(el("disk", name=target, backup="no"))
    root.append(disks)
    return _text(root)


def checkpoint_xml(name: str, included: Iterable[str], skipped: Iterable[str]) -> str:
    """A ``<domaincheckpoint>``: a persistent dirty bitmap on each included disk."""
    disks = el("disks")
    for target in included:
        disks.append(el("disk", name=target, checkpoint="bitmap"))
    for target in skipped:
        disks.append(el("disk", name=target, checkpoint="no"))
    return _text(el("domaincheckpoint", el("name", name), disks))


@dataclass(frozen=True)
class CheckpointDisk:
    """One disk of a checkpoint: ``bitmap`` is None when the disk is not tracked
    (``checkpoint='no'``); ``dirty_bytes`` is only known when libvirt was asked for sizes."""

    target: str
    bitmap: str | None
    dirty_bytes: int | None


@dataclass(frozen=True)
class CheckpointDocument:
    name: str
    parent: str | None
    created_at: int | None
    disks: tuple[CheckpointDisk, ...]


def parse_checkpoint(document: str) -> CheckpointDocument:
    """A ``<domaincheckpoint>`` as libvirt describes it (its ``<domain>`` copy is ignored)."""
    root = parse_xml(document, "checkpoint")
    disks = tuple(
        CheckpointDisk(
            target=str(disk.get("name", "")),
            bitmap=(disk.get("bitmap") or root.findtext("name") or None)
            if disk.get("checkpoint", "bitmap") == "bitmap" else None,
            dirty_bytes=_integer(disk.get("size")),
        )
        for disk in root.iterfind("disks/disk")
    )
    return CheckpointDocument(
        name=str(root.findtext("name") or ""),
        parent=root.findtext("parent/name") or None,
        created_at=_integer(root.findtext("creationTime")),
        disks=disks,
    )


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
