"""What a block job was asked to do, frozen when it is created: paths, names, options.

``JobState`` (``state``) says where a job is; ``JobSpec`` says what it acts on, so that a restarted
agent can judge the live chain (``effects``) and clean up without the request that started it.
Paths are recorded as libvirt reported them. Must not call libvirt, persist or decide anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VolumeRef:
    """A volume in a pool, by name, with the path QEMU opens."""

    pool: str
    volume: str
    path: str

    def to_json(self) -> dict[str, str]:
        return {"pool": self.pool, "volume": self.volume, "path": self.path}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VolumeRef:
        return cls(str(data["pool"]), str(data["volume"]), str(data["path"]))


@dataclass(frozen=True)
class JobSpec:
    """``targets``: the disks the job occupies (one, or several for a backup).

    Commit: ``top_path``/``base_path``. Pull: ``top_path`` and optional ``base_path``. Copy:
    ``top_path`` (the source top) and ``destination``. Mirror jobs end with ``new_top_path`` on
    top. ``invalidated``: the images a success drops from the chain. ``created``: volumes this job
    made, deleted if it does not succeed. Backup: ``backup_dir``, ``backup_files``,
    ``incremental`` (the checkpoint it starts from) and ``checkpoint`` (the one it creates);
    ``mode`` "pull" for a pull backup, whose scratch images (``created``) go whatever the
    outcome (its export's details are the backup package's own record).
    """

    targets: tuple[str, ...]
    bandwidth: int = 0
    top_name: str | None = None
    base_name: str | None = None
    top_path: str | None = None
    base_path: str | None = None
    new_top_path: str | None = None
    invalidated: tuple[str, ...] = ()
    destination: VolumeRef | None = None
    created: tuple[VolumeRef, ...] = ()
    shallow: bool = False
    synchronous_writes: bool = False
    backup_dir: str | None = None
    backup_files: Mapping[str, str] = field(default_factory=dict)
    incremental: str | None = None
    checkpoint: str | None = None
    mode: str = "push"

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "bandwidth": self.bandwidth,
            "top_name": self.top_name,
            "base_name": self.base_name,
            "top_path": self.top_path,
            "base_path": self.base_path,
            "new_top_path": self.new_top_path,
            "invalidated": list(self.invalidated),
            "destination": self.destination.to_json() if self.destination else None,
            "created": [ref.to_json() for ref in self.created],
            "shallow": self.shallow,
            "synchronous_writes": self.synchronous_writes,
            "backup_dir": self.backup_dir,
            "backup_files": dict(self.backup_files),
            "incremental": self.incremental,
            "checkpoint": self.checkpoint,
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        destination = data.get("destination")
        return cls(
            targets=tuple(data["targets"]),
            bandwidth=int(data.get("bandwidth", 0)),
            top_name=data.get("top_name"),
            base_name=data.get("base_name"),
            top_path=data.get("top_path"),
            base_path=data.get("base_path"),
            new_top_path=data.get("new_top_path"),
            invalidated=tuple(data.get("invalidated", ())),
            destination=VolumeRef.from_json(destination) if destination else None,
            created=tuple(VolumeRef.from_json(ref) for ref in data.get("created", ())),
            shallow=bool(data.get("shallow", False)),
            synchronous_writes=bool(data.get("synchronous_writes", False)),
            backup_dir=data.get("backup_dir"),
            backup_files=dict(data.get("backup_files", {})),
            incremental=data.get("incremental"),
            checkpoint=data.get("checkpoint"),
            mode=str(data.get("mode") or "push"),
        )

    def paths(self) -> set[str]:
        """Every image path this job may still be using or producing."""
        found = {self.top_path, self.base_path, self.new_top_path, *self.invalidated}
        if self.destination is not None:
            found.add(self.destination.path)
        found.update(ref.path for ref in self.created)
        return {path for path in found if path}
