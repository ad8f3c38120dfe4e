"""What the two ends of a migration tell each other: the request and the destination's plan.

``MigrationRequest`` is what the source sends (the VM, each disk with where it is and what it
needs, the migratable XML, the checkpoints); ``MigrationPlan`` is the destination's answer (per
disk: copied or shared, the volume it lands in, its IOThread plan; the XML it will run; the
libvirt URI the source's libvirt migrates to). Both are frozen and turn into JSON and back, the
form they travel in and are recorded in on each end. Must not decide anything or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CopyStorage = Literal["auto", "all", "none"]
COPY_STORAGE_MODES: tuple[CopyStorage, ...] = ("auto", "all", "none")


@dataclass(frozen=True)
class ChainElement:
    """A volume of a disk's backing chain on shared storage (it stays where it is)."""

    pool: str
    volume: str
    path: str
    origin: str

    def to_json(self) -> dict[str, str]:
        return {"pool": self.pool, "volume": self.volume, "path": self.path,
                "origin": self.origin}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChainElement:
        return cls(str(data["pool"]), str(data["volume"]), str(data["path"]),
                   str(data.get("origin", "disk")))


@dataclass(frozen=True)
class DiskMove:
    """One managed disk as the source describes it.

    ``required_bytes``: what a copy writes (``qemu-img measure`` of the whole chain, measured on
    the source). ``shared_identity``: the identity of the disk's pool when it is shared storage
    (``migration.shared_pools``), else None. ``stored_plan`` and ``qos``: the disk's records.
    ``chain``: the volumes of its chain (top first), carried over when the disk is not copied.
    """

    target: str
    bus: str
    source_pool: str
    source_volume: str
    source_path: str
    destination_pool: str
    format: str
    thin: bool
    virtual_bytes: int
    required_bytes: int
    throttled: bool
    shared_identity: str | None = None
    stored_plan: Mapping[str, Any] = field(default_factory=dict)
    qos: Mapping[str, Any] | None = None
    chain: tuple[ChainElement, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "bus": self.bus, "source_pool": self.source_pool,
            "source_volume": self.source_volume, "source_path": self.source_path,
            "destination_pool": self.destination_pool, "format": self.format,
            "thin": self.thin, "virtual_bytes": self.virtual_bytes,
            "required_bytes": self.required_bytes, "throttled": self.throttled,
            "shared_identity": self.shared_identity, "stored_plan": dict(self.stored_plan),
            "qos": dict(self.qos) if self.qos is not None else None,
            "chain": [element.to_json() for element in self.chain],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiskMove:
        qos = data.get("qos")
        return cls(
            target=str(data["target"]), bus=str(data["bus"]),
            source_pool=str(data["source_pool"]), source_volume=str(data["source_volume"]),
            source_path=str(data["source_path"]),
            destination_pool=str(data["destination_pool"]), format=str(data["format"]),
            thin=bool(data["thin"]), virtual_bytes=int(data["virtual_bytes"]),
            required_bytes=int(data["required_bytes"]), throttled=bool(data["throttled"]),
            shared_identity=data.get("shared_identity"),
            stored_plan=dict(data.get("stored_plan") or {}),
            qos=dict(qos) if isinstance(qos, Mapping) else None,
            chain=tuple(ChainElement.from_json(e) for e in data.get("chain") or ()),
        )  # fmt: skip


@dataclass(frozen=True)
class VMDescription:
    """The source's VM record."""

    name: str
    uuid: str
    vcpus: int
    memory_bytes: int
    guest: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uuid": self.uuid, "vcpus": self.vcpus,
                "memory_bytes": self.memory_bytes, "guest": self.guest}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VMDescription:
        return cls(str(data["name"]), str(data["uuid"]), int(data["vcpus"]),
                   int(data["memory_bytes"]), str(data["guest"]))


@dataclass(frozen=True)
class MigrationRequest:
    """Everything the destination needs to plan, prepare and finish. ``live_xml`` and
    ``persistent_xml``: the source's migratable XML (running and defined);
    ``checkpoints``: each checkpoint's XML, parents first, for redefining them there;
    ``snapshots``: the VM's finished snapshot records (``shared_snapshots``)."""

    id: str
    vm: VMDescription
    copy_storage: CopyStorage
    disks: tuple[DiskMove, ...]
    live_xml: str
    persistent_xml: str
    checkpoints: tuple[str, ...] = ()
    source_host: str = ""
    snapshots: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "vm": self.vm.to_json(), "copy_storage": self.copy_storage,
            "disks": [disk.to_json() for disk in self.disks], "live_xml": self.live_xml,
            "persistent_xml": self.persistent_xml, "checkpoints": list(self.checkpoints),
            "source_host": self.source_host,
            # only when there are some: a destination from before they travelled refuses the key
            **({"snapshots": [dict(snapshot) for snapshot in self.snapshots]}
               if self.snapshots else {}),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MigrationRequest:
        mode = data.get("copy_storage", "auto")
        return cls(
            id=str(data["id"]), vm=VMDescription.from_json(data["vm"]),
            copy_storage=mode if mode in COPY_STORAGE_MODES else "auto",
            disks=tuple(DiskMove.from_json(disk) for disk in data["disks"]),
            live_xml=str(data["live_xml"]), persistent_xml=str(data["persistent_xml"]),
            checkpoints=tuple(str(doc) for doc in data.get("checkpoints") or ()),
            source_host=str(data.get("source_host") or ""),
            snapshots=tuple(dict(s) for s in data.get("snapshots") or ()
                            if isinstance(s, Mapping)),
        )  # fmt: skip


@dataclass(frozen=True)
class DiskLanding:
    """Where one disk lands. ``copy``: copied over NBD into a volume made here (else it stays
    on shared storage at ``path``). ``mapping``: ``((iothread, (queue, ...)), ...)``."""

    target: str
    copy: bool
    pool: str
    volume: str
    path: str
    kind: str  # "block" or "file"
    physical_bytes: int
    thin: bool
    format: str
    virtual_bytes: int
    mode: str
    queues: int
    mapping: tuple[tuple[int, tuple[int, ...]], ...]
    iothreads_reason: str
    storage_reason: str

    @property
    def plan_json(self) -> dict[str, Any]:
        """The disk record's plan, as ``disk attach`` records one."""
        return {
            "mode": self.mode, "queues": self.queues,
            "mapping": [[iothread, list(queues)] for iothread, queues in self.mapping],
            "reason": self.iothreads_reason,
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "copy": self.copy, "pool": self.pool, "volume": self.volume,
            "path": self.path, "kind": self.kind, "physical_bytes": self.physical_bytes,
            "thin": self.thin, "format": self.format, "virtual_bytes": self.virtual_bytes,
            "mode": self.mode, "queues": self.queues,
            "mapping": [[iothread, list(queues)] for iothread, queues in self.mapping],
            "iothreads_reason": self.iothreads_reason, "storage_reason": self.storage_reason,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiskLanding:
        return cls(
            target=str(data["target"]), copy=bool(data["copy"]), pool=str(data["pool"]),
            volume=str(data["volume"]), path=str(data["path"]), kind=str(data["kind"]),
            physical_bytes=int(data["physical_bytes"]), thin=bool(data["thin"]),
            format=str(data["format"]), virtual_bytes=int(data["virtual_bytes"]),
            mode=str(data["mode"]), queues=int(data["queues"]),
            mapping=tuple((int(i), tuple(int(q) for q in qs)) for i, qs in data["mapping"]),
            iothreads_reason=str(data["iothreads_reason"]),
            storage_reason=str(data["storage_reason"]),
        )  # fmt: skip


@dataclass(frozen=True)
class MigrationPlan:
    """The destination's answer. ``libvirt_uri``: where the source's libvirt migrates to;
    ``migration_uri``: the address of the data stream, when the destination names one."""

    disks: tuple[DiskLanding, ...]
    iothread_ids: tuple[int, ...]
    live_xml: str
    persistent_xml: str
    libvirt_uri: str
    migration_uri: str | None = None
    notes: tuple[str, ...] = ()
    #: ``vm migrate-check``'s gaps, against this host's live facts.
    gaps: tuple[Mapping[str, str], ...] = ()

    @property
    def copied(self) -> tuple[str, ...]:
        return tuple(disk.target for disk in self.disks if disk.copy)

    def disk(self, target: str) -> DiskLanding | None:
        return next((disk for disk in self.disks if disk.target == target), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "disks": [disk.to_json() for disk in self.disks],
            "iothread_ids": list(self.iothread_ids), "live_xml": self.live_xml,
            "persistent_xml": self.persistent_xml, "libvirt_uri": self.libvirt_uri,
            "migration_uri": self.migration_uri, "notes": list(self.notes),
            "gaps": [dict(gap) for gap in self.gaps],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MigrationPlan:
        return cls(
            disks=tuple(DiskLanding.from_json(disk) for disk in data["disks"]),
            iothread_ids=tuple(int(i) for i in data["iothread_ids"]),
            live_xml=str(data["live_xml"]), persistent_xml=str(data["persistent_xml"]),
            libvirt_uri=str(data["libvirt_uri"]), migration_uri=data.get("migration_uri"),
            notes=tuple(str(note) for note in data.get("notes") or ()),
            gaps=tuple({str(k): str(v) for k, v in gap.items()}
                       for gap in data.get("gaps") or () if isinstance(gap, Mapping)),
        )  # fmt: skip

    def summary(self) -> list[dict[str, Any]]:
        """Per disk what it gets there, for ``vm migrate`` and ``job show`` (no XML)."""
        return [
            {
                "target": disk.target, "storage": "copied" if disk.copy else "shared",
                "pool": disk.pool, "volume": disk.volume, "path": disk.path,
                "physical_bytes": disk.physical_bytes, "thin": disk.thin,
                "iothreads": disk.plan_json["mapping"], "mode": disk.mode,
                "queues": disk.queues, "why": f"{disk.storage_reason}; {disk.iothreads_reason}",
            }
            for disk in self.disks
        ]
