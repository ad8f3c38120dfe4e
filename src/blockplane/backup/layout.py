"""The documented layout of a backup directory, as a pull client writes it and restore reads it.

One directory per backup, holding one qcow2 per disk and ``manifest.json``::

    DIR/manifest.json
        {"format": "blockplane-backup/1",
         "vm": "web",
         "checkpoint": "bp-1a2b3c4d5e6f",     # the checkpoint this backup created
         "incremental": null | "bp-...",      # the checkpoint it starts from (null: full)
         "created_at": 1765000000.0,
         "disks": {"vda": {"file": "vda.qcow2", "size": 1073741824,
                           "mode": "full" | "incremental"}}}
    DIR/vda.qcow2

A full disk is a standalone qcow2 of the disk's content at the backup's point in time. An
incremental disk is a qcow2 of the same virtual size holding only the clusters that changed
since ``incremental``: every other cluster is unallocated, so laid over the previous backup (as
its backing) it reads as the disk at this backup's point in time. The qcow2 records no backing
file: restore names the chain when it reads it. A disk exported fully in an incremental backup
(attached after the checkpoint, or its bitmap broken) is ``"mode": "full"``.

Push backups (``backup VM --dest DIR``) write no manifest; restore takes the same facts from the
job that wrote them. Must not call qemu-img or libvirt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.errors import InvalidInput

MANIFEST = "manifest.json"
FORMAT = "blockplane-backup/1"
MODES = ("full", "incremental")


@dataclass(frozen=True)
class BackupDisk:
    target: str
    file: str
    size: int
    mode: str


@dataclass(frozen=True)
class BackupManifest:
    vm: str | None
    checkpoint: str | None
    incremental: str | None
    disks: tuple[BackupDisk, ...]
    created_at: float | None = None

    def disk(self, target: str) -> BackupDisk | None:
        return next((disk for disk in self.disks if disk.target == target), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "vm": self.vm, "checkpoint": self.checkpoint,
            "incremental": self.incremental, "created_at": self.created_at,
            "disks": {d.target: {"file": d.file, "size": d.size, "mode": d.mode}
                      for d in self.disks},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> BackupManifest:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise InvalidInput(f"{where} is not a {FORMAT} manifest", code="restore.invalid")
        disks = []
        listed = data.get("disks")
        if not isinstance(listed, Mapping) or not listed:
            raise InvalidInput(f"{where} lists no disks", code="restore.invalid")
        for target, entry in listed.items():
            if not isinstance(entry, Mapping):
                raise InvalidInput(f"{where}: disk {target!r} is not an object",
                                   code="restore.invalid")
            file, size, mode = entry.get("file"), entry.get("size"), entry.get("mode")
            if (not isinstance(file, str) or not file or os.sep in file or file in (".", "..")
                    or file != os.path.basename(file)):
                raise InvalidInput(f"{where}: disk {target!r} names no file of its directory",
                                   code="restore.invalid")
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise InvalidInput(f"{where}: disk {target!r} has no valid size",
                                   code="restore.invalid")
            if mode not in MODES:
                raise InvalidInput(f"{where}: disk {target!r} mode must be full or incremental",
                                   code="restore.invalid")
            disks.append(BackupDisk(str(target), file, size, str(mode)))
        created = data.get("created_at")
        return cls(
            vm=_text(data.get("vm")), checkpoint=_text(data.get("checkpoint")),
            incremental=_text(data.get("incremental")), disks=tuple(disks),
            created_at=float(created) if isinstance(created, int | float) else None,
        )


def read_manifest(directory: Path) -> BackupManifest | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{path} cannot be read: {error}", code="restore.invalid") from error
    return BackupManifest.from_json(data, str(path))


def write_manifest(directory: Path, manifest: BackupManifest) -> Path:
    path = directory / MANIFEST
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
