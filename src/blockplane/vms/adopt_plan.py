"""Judging a domain for adoption: which disks become volumes, which stay foreign, what refuses.

Pure: from what ``vms.adopt`` observed (the domain's inventory, each image's location in the
pools, its chain and sizes, the block jobs) and what blockplane already holds (``Claims``), it
returns an ``AdoptionPlan`` or raises ``AdoptionRefused`` with one reason per item. Nothing here
reads files, calls libvirt or writes the store.

The rules:
- a disk whose every chain element lies outside the pools is *foreign*: recorded, shown, never
  written (so are cdroms, network, empty and read-only drives);
- a disk whose top is a pool volume is *managed*; its chain elements in pools are recorded as
  volumes of its chain, those outside as foreign paths (a commit into one is refused);
- a thin (monitored) volume is a qcow2 top on a loop or lvm pool's block device;
- refused: a name already managed; a domain UUID already recorded; an image claimed by another
  managed VM; a chain element missing on disk; a path matched to a pool it is not a volume of; a
  managed top blockplane cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockplane.errors import Conflict
from blockplane.model.inventory import ChainLink, DiskInventory, DomainInventory
from blockplane.storage.volume_paths import Location

BLOCK_POOL_TYPES = ("loop", "lvm")


@dataclass(frozen=True)
class ImageInfo:
    """One image as measured: ``error`` when qemu-img or the pool could not read it."""

    exists: bool
    virtual_bytes: int | None = None
    physical_bytes: int | None = None
    is_block: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ChainRead:
    """A managed disk's chain, top first; ``missing``: the first element not on disk."""

    links: tuple[ChainLink, ...]
    missing: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observed:
    inventory: DomainInventory
    running: bool
    chains: Mapping[str, ChainRead]
    locations: Mapping[str, Location]
    images: Mapping[str, ImageInfo]
    pool_types: Mapping[str, str]
    block_jobs: Mapping[str, int] = field(default_factory=dict)
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claims:
    """What blockplane already manages: VM names and UUIDs, and who uses each volume."""

    vm_names: frozenset[str]
    vm_uuids: frozenset[str]
    volume_users: Mapping[tuple[str, str], str]
    recorded_volumes: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class AdoptedImage:
    pool: str
    volume: str
    path: str
    format: str
    virtual_bytes: int
    physical_bytes: int
    #: The volume has a row already (a standalone volume of its pool); only the chain is new.
    recorded: bool

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "volume": self.volume, "path": self.path,
                "format": self.format}


@dataclass(frozen=True)
class AdoptedDisk:
    disk: DiskInventory
    images: tuple[AdoptedImage, ...]
    foreign_paths: tuple[str, ...]
    thin: bool
    block_job: int | None = None

    @property
    def top(self) -> AdoptedImage:
        return self.images[0]

    def plan_json(self) -> dict[str, Any]:
        """The disk record's plan: its mapping as it was found (``iothreads`` compares it)."""
        disk = self.disk
        mode = "mapped" if disk.queue_mapping else "single" if disk.iothread else "none"
        mapping = [[i, list(q)] for i, q in disk.queue_mapping]
        if disk.iothread is not None and not mapping:
            mapping = [[disk.iothread, list(range(disk.queues or 1))]]
        return {
            "adopted": True,
            "mode": mode,
            "bus": disk.bus,
            "queues": disk.queues or 1,
            "mapping": mapping,
            "iothreads_added": [],
            "io_threads_requested": None,
            "reason": "adopted as the domain had it",
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.disk.to_json(),
            "pool": self.top.pool,
            "volume": self.top.volume,
            "thin": self.thin,
            "chain_volumes": [image.to_json() for image in self.images],
            "foreign_chain": list(self.foreign_paths),
            "block_job": self.block_job,
        }


@dataclass(frozen=True)
class ForeignDisk:
    disk: DiskInventory
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {**self.disk.to_json(), "network": self.disk.network, "reason": self.reason}


@dataclass(frozen=True)
class AdoptionPlan:
    inventory: DomainInventory
    running: bool
    disks: tuple[AdoptedDisk, ...]
    foreign: tuple[ForeignDisk, ...]
    checkpoints: tuple[str, ...]

    @property
    def reserved_iothreads(self) -> tuple[int, ...]:
        return self.inventory.iothread_ids

    @property
    def foreign_paths(self) -> tuple[str, ...]:
        """Every image path blockplane must never write: foreign disks and chain elements."""
        paths = [link.path for item in self.foreign for link in item.disk.chain]
        paths += [item.disk.path for item in self.foreign if item.disk.path]
        paths += [path for disk in self.disks for path in disk.foreign_paths]
        return tuple(dict.fromkeys(paths))

    def report_json(self) -> dict[str, Any]:
        inventory = self.inventory
        return {
            "iothreads": list(inventory.iothread_ids),
            "throttle_groups": [group.to_json() for group in inventory.throttle_groups],
            "iotune": {
                disk.target: disk.iotune.to_dict(nonzero_only=True)
                for disk in inventory.disks if disk.iotune is not None
            },
            "checkpoints": list(self.checkpoints),
            "block_jobs": {d.disk.target: d.block_job for d in self.disks if d.block_job},
        }


@dataclass(frozen=True)
class Refusal:
    item: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason}


class AdoptionRefused(Conflict):
    code = "adopt.refused"

    def __init__(self, vm: str, refusals: list[Refusal]) -> None:
        reasons = "; ".join(f"{r.item}: {r.reason}" for r in refusals)
        super().__init__(f"VM {vm} cannot be adopted, nothing was recorded: {reasons}",
                         refusals=[r.to_json() for r in refusals])
        self.refusals = refusals


def judge(observed: Observed, claims: Claims) -> AdoptionPlan:
    inventory = observed.inventory
    refusals: list[Refusal] = []
    if inventory.name in claims.vm_names:
        # Its disks are then "in use by" itself: the name says all there is to say.
        raise AdoptionRefused(inventory.name, [
            Refusal(inventory.name, "a VM of this name is already managed")])
    if inventory.uuid and inventory.uuid in claims.vm_uuids:
        refusals.append(Refusal(inventory.name,
                                f"a managed VM already has the domain UUID {inventory.uuid}"))
    disks: list[AdoptedDisk] = []
    foreign: list[ForeignDisk] = []
    seen: dict[tuple[str, str], str] = {}
    for disk in inventory.disks:
        why_foreign = _foreign_by_kind(disk)
        top = observed.locations.get(disk.path) if disk.path else None
        if why_foreign is None and (top is None or top.foreign):
            why_foreign = "outside every pool"
        if why_foreign is not None:
            foreign.append(ForeignDisk(disk, why_foreign))
            continue
        adopted = _managed_disk(observed, claims, disk, refusals, seen)
        if adopted is not None:
            disks.append(adopted)
    if refusals:
        raise AdoptionRefused(inventory.name, refusals)
    return AdoptionPlan(inventory, observed.running, tuple(disks), tuple(foreign),
                        observed.checkpoints)


def _foreign_by_kind(disk: DiskInventory) -> str | None:
    if disk.device != "disk":
        return f"a {disk.device}, not a disk"
    if disk.source_type == "network":
        return f"a network disk ({disk.network})"
    if disk.source_type not in ("file", "block") or disk.path is None:
        return "no file or block device behind it" if disk.path is None else (
            f"a {disk.source_type} source")
    if disk.readonly or disk.shareable:
        return "read-only or shared with other VMs"
    return None


def _managed_disk(
    observed: Observed, claims: Claims, disk: DiskInventory, refusals: list[Refusal],
    seen: dict[tuple[str, str], str],
) -> AdoptedDisk | None:
    target = disk.target
    chain = observed.chains.get(target)
    if chain is None or chain.error:
        why = chain.error if chain is not None else "its chain was not read"
        refusals.append(Refusal(target, f"its backing chain cannot be read: {why}"))
        return None
    if chain.missing is not None:
        refusals.append(Refusal(target, f"chain element {chain.missing} is missing on disk"))
        return None
    images: list[AdoptedImage] = []
    foreign_paths: list[str] = []
    for position, link in enumerate(chain.links):
        where = observed.locations.get(link.path)
        info = observed.images.get(link.path)
        if info is None or not info.exists:
            refusals.append(Refusal(target, f"chain element {link.path} is missing on disk"))
            return None
        if where is not None and where.refusal is not None:
            refusals.append(Refusal(target, where.refusal))
            return None
        if where is None or where.pool is None or where.volume is None:
            if position == 0:
                refusals.append(Refusal(target, f"{link.path} is in no pool"))
                return None
            foreign_paths.append(link.path)
            continue
        key = (where.pool, where.volume)
        user = claims.volume_users.get(key)
        if user is not None and position == 0:
            refusals.append(Refusal(
                target, f"volume {where.volume} of pool {where.pool} ({link.path}) is in use "
                f"by managed VM {user}"))
            return None
        if key in seen and position == 0:
            refusals.append(Refusal(target, f"{link.path} is also the disk {seen[key]}"))
            return None
        if user is not None or key in seen:
            foreign_paths.append(link.path)  # a backing image shared with another disk
            continue
        if info.error is not None or info.virtual_bytes is None or info.physical_bytes is None:
            refusals.append(Refusal(target, f"{link.path} cannot be read: {info.error}"))
            return None
        seen[key] = target
        images.append(AdoptedImage(
            where.pool, where.volume, link.path, link.format or "raw", info.virtual_bytes,
            info.physical_bytes, key in claims.recorded_volumes))
    top_info = observed.images[chain.links[0].path]
    thin = (observed.pool_types.get(images[0].pool) in BLOCK_POOL_TYPES
            and top_info.is_block and images[0].format == "qcow2")
    return AdoptedDisk(disk, tuple(images), tuple(foreign_paths), thin,
                       observed.block_jobs.get(target))
