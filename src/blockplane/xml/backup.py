"""The XML of pull-mode backups: the ``<domainbackup mode='pull'>`` a pull backup starts with,
and the parse of libvirt's description of a running one (``virDomainBackupGetXMLDesc``).

Builds what it is given and decides nothing: which disks are exported fully, where the scratch
images live and how the NBD server listens are the backup package's business. Must not call
libvirt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from blockplane.model.disk import SourceKind
from blockplane.xml.build import el
from blockplane.xml.parser import parse_xml


@dataclass(frozen=True)
class NbdServer:
    """Where QEMU's NBD server listens: a UNIX socket, or TCP (optionally with TLS)."""

    socket: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool = False

    def element(self) -> etree._Element:
        if self.socket is not None:
            return el("server", transport="unix", socket=self.socket)
        attributes = {"transport": "tcp", "name": self.host or "", "port": str(self.port or 0)}
        if self.tls:
            attributes["tls"] = "yes"
        return el("server", **attributes)


@dataclass(frozen=True)
class PullDisk:
    """One exported disk: its scratch image (created by blockplane) and, when ``full`` is set
    in an incremental backup, a full export of this disk alone."""

    target: str
    scratch_kind: SourceKind
    scratch_path: str
    full: bool = False


def pull_backup_xml(
    server: NbdServer, disks: Iterable[PullDisk], skipped: Iterable[str], incremental: str | None
) -> str:
    root = el("domainbackup", mode="pull")
    if incremental is not None:
        root.append(el("incremental", incremental))
    root.append(server.element())
    listed = el("disks")
    for disk in disks:
        source = (el("scratch", file=disk.scratch_path) if disk.scratch_kind == "file"
                  else el("scratch", dev=disk.scratch_path))
        attributes = {"name": disk.target, "backup": "yes", "type": disk.scratch_kind}
        if incremental is not None and disk.full:
            attributes["backupmode"] = "full"
        listed.append(el("disk", el("driver", type="qcow2"), source, **attributes))
    for target in skipped:
        listed.append(el("disk", name=target, backup="no"))
    root.append(listed)
    return etree.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class ExportedDisk:
    """A disk of a running pull backup as libvirt describes it. ``index`` is libvirt's index of
    the scratch image (``vda[index]`` takes a write threshold); ``bitmap`` is set for an
    incremental export (the NBD meta context is ``qemu:dirty-bitmap:<bitmap>``)."""

    target: str
    index: int | None
    export: str | None
    bitmap: str | None
    scratch: str
    mode: str


@dataclass(frozen=True)
class BackupDescription:
    mode: str
    incremental: str | None
    socket: str | None
    disks: tuple[ExportedDisk, ...]

    def disk(self, target: str) -> ExportedDisk | None:
        return next((disk for disk in self.disks if disk.target == target), None)


def parse_backup_description(document: str) -> BackupDescription:
    root = parse_xml(document, "backup")
    server = root.find("server")
    disks = []
    for disk in root.iterfind("disks/disk"):
        if disk.get("backup", "yes") != "yes":
            continue
        scratch = disk.find("scratch")
        if scratch is None:
            scratch = disk.find("target")
        index = disk.get("index")
        disks.append(ExportedDisk(
            target=str(disk.get("name", "")),
            index=int(index) if index is not None and index.isdigit() else None,
            export=disk.get("exportname"),
            bitmap=disk.get("exportbitmap"),
            scratch=str(scratch.get("file") or scratch.get("dev") or "") if scratch is not None
            else "",
            mode=str(disk.get("backupmode") or "full"),
        ))
    return BackupDescription(
        mode=str(root.get("mode", "push")),
        incremental=root.findtext("incremental") or None,
        socket=server.get("socket") if server is not None else None,
        disks=tuple(disks),
    )


def qemu_process_owner(domain_xml: str) -> tuple[int, int] | None:
    """The uid and gid QEMU runs as (the live XML's DAC ``<seclabel>``), None if not shown:
    whatever QEMU must create (an NBD socket) has to be in a directory it may write."""
    root = parse_xml(domain_xml)
    for seclabel in root.iterfind("seclabel"):
        if seclabel.get("model") != "dac":
            continue
        label = (seclabel.findtext("label") or "").replace("+", "")
        user, _, group = label.partition(":")
        if user.isdigit() and group.isdigit():
            return int(user), int(group)
    return None
