"""The backup package's own rows: each pull backup's export, and every checkpoint's definition.

``pull_exports`` holds what a pull backup answered (socket, per-disk export names, bitmap
contexts and scratch images, why a disk was exported fully, its deadline), written before
libvirt is asked to start it, so that a restarted agent can still answer for it and clean it up.
``checkpoint_definitions`` holds each checkpoint's ``<domaincheckpoint>`` as libvirt described
it (without its domain copy), so that lost libvirt metadata can be defined again. Plain data
access: no policy, no libvirt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockplane.chain.jobs.spec import VolumeRef
from blockplane.store.database import Database


@dataclass(frozen=True)
class ExportedDiskRecord:
    """One disk of a pull backup. ``mode``: "full" or "incremental"; ``reason``: why a disk of
    an incremental backup was exported fully. ``bitmap``: the NBD meta context holding the
    changed extents (``qemu:dirty-bitmap:backup-vda``), for an incremental disk only.
    ``scratch_index``: libvirt's index of the scratch image once the backup runs."""

    target: str
    export: str
    mode: str
    size: int
    scratch: VolumeRef
    scratch_thin: bool
    bitmap: str | None = None
    reason: str | None = None
    scratch_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "export": self.export, "mode": self.mode, "size": self.size,
            "scratch": self.scratch.to_json(), "scratch_thin": self.scratch_thin,
            "bitmap": self.bitmap, "reason": self.reason, "scratch_index": self.scratch_index,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportedDiskRecord:
        index = data.get("scratch_index")
        return cls(
            target=str(data["target"]), export=str(data["export"]), mode=str(data["mode"]),
            size=int(data["size"]), scratch=VolumeRef.from_json(data["scratch"]),
            scratch_thin=bool(data.get("scratch_thin", False)), bitmap=data.get("bitmap"),
            reason=data.get("reason"), scratch_index=int(index) if index is not None else None,
        )


@dataclass(frozen=True)
class TcpExport:
    host: str
    port: int
    tls: bool

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "tls": self.tls}


@dataclass(frozen=True)
class PullExportRecord:
    """``requested``: what ``--incremental`` asked for (a name, "auto", or None);
    ``incremental``: the checkpoint the export starts from (None: a full backup);
    ``checkpoint``: the one it created; ``fallback``: why it is less incremental than asked."""

    job_id: str
    vm: str
    socket: str | None
    socket_dir: str
    checkpoint: str
    incremental: str | None
    requested: str | None
    disks: tuple[ExportedDiskRecord, ...]
    timeout_s: float
    deadline: float
    fallback: str | None = None
    quiesce: bool = False
    quiesced: bool = False
    quiesce_error: str | None = None
    tcp: TcpExport | None = None
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "vm": self.vm, "socket": self.socket,
            "socket_dir": self.socket_dir, "checkpoint": self.checkpoint,
            "incremental": self.incremental, "requested": self.requested,
            "disks": [disk.to_json() for disk in self.disks], "timeout_s": self.timeout_s,
            "deadline": self.deadline, "fallback": self.fallback, "quiesce": self.quiesce,
            "quiesced": self.quiesced, "quiesce_error": self.quiesce_error,
            "tcp": self.tcp.to_json() if self.tcp else None, "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PullExportRecord:
        tcp = data.get("tcp")
        return cls(
            job_id=str(data["job_id"]), vm=str(data["vm"]), socket=data.get("socket"),
            socket_dir=str(data["socket_dir"]), checkpoint=str(data["checkpoint"]),
            incremental=data.get("incremental"), requested=data.get("requested"),
            disks=tuple(ExportedDiskRecord.from_json(d) for d in data.get("disks", ())),
            timeout_s=float(data["timeout_s"]), deadline=float(data["deadline"]),
            fallback=data.get("fallback"), quiesce=bool(data.get("quiesce", False)),
            quiesced=bool(data.get("quiesced", False)), quiesce_error=data.get("quiesce_error"),
            tcp=TcpExport(str(tcp["host"]), int(tcp["port"]), bool(tcp["tls"])) if tcp else None,
            created_at=float(data.get("created_at") or 0.0),
        )


class PullExports:
    def __init__(self, database: Database) -> None:
        self._db = database

    def save(self, record: PullExportRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO pull_exports VALUES (?, ?, ?, ?, ?)",
            (record.job_id, record.vm, json.dumps(record.to_json(), sort_keys=True),
             record.deadline, record.created_at),
        )

    def get(self, job_id: str) -> PullExportRecord | None:
        row = self._db.query_one("SELECT record_json FROM pull_exports WHERE job_id = ?",
                                 (job_id,))
        return PullExportRecord.from_json(json.loads(row["record_json"])) if row else None

    def all(self) -> list[PullExportRecord]:
        rows = self._db.query("SELECT record_json FROM pull_exports ORDER BY created_at")
        return [PullExportRecord.from_json(json.loads(row["record_json"])) for row in rows]


@dataclass(frozen=True)
class CheckpointDefinition:
    vm: str
    name: str
    parent: str | None
    xml: str
    created_at: int | None


class CheckpointDefinitions:
    def __init__(self, database: Database) -> None:
        self._db = database

    def save(self, definition: CheckpointDefinition) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoint_definitions VALUES (?, ?, ?, ?, ?, ?)",
            (definition.vm, definition.name, definition.parent, definition.xml,
             definition.created_at, time.time()),
        )

    def delete(self, vm: str, name: str) -> None:
        self._db.execute("DELETE FROM checkpoint_definitions WHERE vm = ? AND name = ?",
                         (vm, name))

    def of_vm(self, vm: str) -> list[CheckpointDefinition]:
        """Oldest first (creation time, then the order they were recorded in)."""
        rows = self._db.query(
            "SELECT * FROM checkpoint_definitions WHERE vm = ? "
            "ORDER BY COALESCE(created_at, 0), recorded_at", (vm,))
        return [CheckpointDefinition(row["vm"], row["name"], row["parent"], row["xml"],
                                     row["created_at"]) for row in rows]
