"""Where a migrating VM lands on this host: the destination's plan, computed before anything
is made (the check) and again with the paths of the volumes it made (the prepare).

``plan_landing`` takes the source's ``MigrationRequest`` and a snapshot of this host
(``HostView``: its pools with their identities, volumes and room; its IOThread limits and
capabilities; whether its libvirt can receive a migration) and decides per disk:
- shared: the disk's pool is the same storage here (equal identities) and the copy mode allows
  it: the disk stays where it is;
- copied: a new volume in the mapped pool, named as on the source (or with the job's id when
  that name is taken), sized by the one rule for volumes filled by copying
  (``storage.fill_size``: measured allocation + one chunk) when thin, whole otherwise;
and re-plans the IOThreads (``replan``) keeping the guest-visible queues. Every refusal is
raised here, with its code, before the destination changes anything: a pool missing, too
little room, a thin disk for a pool that cannot grow, ``--copy-storage none`` on storage that
is not shared, a name taken, a capability with no fallback, a host file missing.
Pure: no I/O beyond what ``HostView`` already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blockplane.errors import CapabilityMissing, Conflict, InvalidInput, NotFound
from blockplane.facts.capabilities import Capability
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.iothreads.state import vm_iothreads
from blockplane.migration.plan import DiskLanding, DiskMove, MigrationPlan, MigrationRequest
from blockplane.migration.replan import DiskRequest, Replanned, replan
from blockplane.storage.fill_size import fill_size
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.storage.sizes import format_size
from blockplane.store.records import PoolRecord
from blockplane.xml.disk import parse_disks
from blockplane.xml.relocate import DiskHome, relocate

BLOCK_POOLS = ("loop", "lvm")


@dataclass(frozen=True)
class PoolRoom:
    """One pool here: its identity when shared (``migration.shared_pools``), the volume names
    it holds, the physical bytes its volumes count against its capacity, and the bytes free on
    the filesystem under it (None where that does not apply)."""

    record: PoolRecord
    identity: str | None
    volumes: frozenset[str]
    used_bytes: int
    free_bytes: int | None


@dataclass(frozen=True)
class HostView:
    pools: Mapping[str, PoolRoom]
    limits: HostIOThreadLimits
    throttle_groups: Capability
    block_threshold: Capability
    libvirt_uri: str | None
    migration_uri: str | None
    vm_exists: bool
    missing_files: tuple[str, ...] = ()


def _new_name(move: DiskMove, room: PoolRoom, job_id: str) -> str:
    if move.source_volume not in room.volumes:
        return move.source_volume
    return f"{move.source_volume}-{job_id[:6]}"


def _physical(move: DiskMove, pool: PoolRecord) -> int:
    """How big the copy's volume starts: the fill rule when thin, else the whole image."""
    if move.format == "raw" or pool.type not in BLOCK_POOLS:
        return move.virtual_bytes
    ceiling = qcow2_max_physical(move.virtual_bytes)
    if move.thin:
        return fill_size(move.required_bytes, chunk_bytes=pool.chunk_bytes, ceiling_bytes=ceiling)
    return ceiling


def _shared(move: DiskMove, room: PoolRoom, request: MigrationRequest) -> bool:
    same = move.shared_identity is not None and move.shared_identity == room.identity
    if request.copy_storage == "none" and not same:
        raise InvalidInput(
            f"{move.target}: pool {move.source_pool} is not shared storage with pool "
            f"{room.record.name} here, and --copy-storage none copies nothing; use auto",
            code="migration.not_shared", target=move.target)
    if same and request.copy_storage != "all" and move.source_volume not in room.volumes:
        raise Conflict(
            f"{move.target}: pool {room.record.name} is the same storage, but its volume "
            f"{move.source_volume} is not there", code="migration.not_shared",
            target=move.target)
    return same and request.copy_storage != "all"


def _check_room(moves: list[tuple[DiskMove, PoolRoom, int]]) -> None:
    """Refuse (``pool.full``) when the copies would pass a pool's capacity or its filesystem."""
    by_pool: dict[str, tuple[PoolRoom, int, int]] = {}
    for move, room, physical in moves:
        _, counted, data = by_pool.get(room.record.name, (room, 0, 0))
        by_pool[room.record.name] = (room, counted + physical, data + move.required_bytes)
    for name, (room, counted, data) in by_pool.items():
        limit = room.record.capacity_bytes
        if limit is not None and room.used_bytes + counted > limit:
            raise Conflict(
                f"pool {name} here has {format_size(max(limit - room.used_bytes, 0))} left of "
                f"its {format_size(limit)} capacity; the copies need {format_size(counted)}",
                code="pool.full", pool=name, needed_bytes=counted)
        if room.free_bytes is not None and data > room.free_bytes:
            raise Conflict(
                f"the filesystem under pool {name} here has {format_size(room.free_bytes)} "
                f"free; the copies write {format_size(data)}",
                code="pool.full", pool=name, needed_bytes=data)


def _check_host(request: MigrationRequest, host: HostView) -> None:
    if host.vm_exists:
        raise Conflict(f"a VM named {request.vm.name!r} already exists on this host",
                       code="vm.exists")
    if host.libvirt_uri is None:
        raise CapabilityMissing(
            "this host's agent uses embedded libvirt, which cannot receive a migration: run it "
            "on a libvirtd (--libvirt-uri qemu:///system) with --migration-uri",
            code="migration.destination_unsupported")
    if host.missing_files:
        raise CapabilityMissing(
            f"this host lacks files the VM runs from: {', '.join(host.missing_files)}",
            code="migration.missing_file")
    grouped = [d.target for d in parse_disks(request.live_xml) if d.throttle_groups]
    if grouped and not host.throttle_groups.supported:
        raise CapabilityMissing(
            f"{', '.join(grouped)} use throttle groups, which this host cannot run "
            f"({host.throttle_groups.reason}); no fallback keeps a multi-tier limit",
            code="capability.missing", feature="throttle_groups")


def _iothreads(
    request: MigrationRequest, host: HostView
) -> tuple[dict[str, Replanned], tuple[int, ...]]:
    requests = {
        move.target: DiskRequest(_requested(move.stored_plan.get("io_threads_requested")),
                                 move.throttled)
        for move in request.disks
    }
    result = replan(vm_iothreads(request.live_xml), requests, request.vm.vcpus, host.limits)
    return {disk.target: disk for disk in result.disks}, result.iothread_ids


def _requested(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def plan_landing(
    request: MigrationRequest, host: HostView, job_id: str,
    paths: Mapping[str, str] | None = None,
) -> MigrationPlan:
    """The plan; ``paths``: the volumes made so far (target -> path), for the prepare."""
    _check_host(request, host)
    made = paths or {}
    devices = {device.target: device for device in parse_disks(request.live_xml)}
    planned: list[tuple[DiskMove, PoolRoom, bool, str, int]] = []
    for move in request.disks:
        room = host.pools.get(move.destination_pool)
        if room is None:
            raise NotFound(
                f"{move.target}: no pool named {move.destination_pool!r} on this host; create "
                "it there, or map the disk to another pool with --pool-map SRC=DST",
                code="pool.not_found", pool=move.destination_pool)
        shared = _shared(move, room, request)
        if shared:
            planned.append((move, room, True, move.source_volume, 0))
            continue
        if move.thin and room.record.type not in BLOCK_POOLS:
            raise InvalidInput(
                f"{move.target} is a thin volume; pool {room.record.name} here is a "
                f"{room.record.type} pool, which cannot grow it (use a loop or lvm pool)",
                code="migration.pool_unsuitable", target=move.target)
        planned.append((move, room, False, _new_name(move, room, job_id),
                        _physical(move, room.record)))
    _check_room([(move, room, size) for move, room, shared, _, size in planned if not shared])
    replanned, iothread_ids = _iothreads(request, host)
    landings: list[DiskLanding] = []
    homes: dict[str, DiskHome] = {}
    notes: list[str] = []
    for move, room, shared, volume, physical in planned:
        device = devices.get(move.target)
        kind = "block" if room.record.type in BLOCK_POOLS else "file"
        if shared:
            path = move.source_path
            kind = device.source_kind if device is not None else kind
            storage = f"shared: pool {room.record.name} is the same storage here, not copied"
        else:
            path = made.get(move.target, "")
            storage = (f"copied into {volume} in pool {room.record.name} "
                       f"({format_size(physical)}"
                       + (f", thin: {format_size(move.required_bytes)} measured + one chunk)"
                          if move.thin else ")"))
        mapping = replanned[move.target]
        single = mapping.disk.mode == "single"
        reason = mapping.reason
        stored_reason = move.stored_plan.get("reason")
        if mapping.kept and isinstance(stored_reason, str) and stored_reason:
            reason = f"{stored_reason} (kept: this host runs it as it is)"
        homes[move.target] = DiskHome(
            None if shared else (path or None), kind,
            mapping.disk.mapping[0][0] if single and mapping.disk.mapping else None,
            mapping.disk.mapping if mapping.disk.mode == "mapped" else ())
        landings.append(DiskLanding(
            target=move.target, copy=not shared, pool=room.record.name, volume=volume,
            path=path, kind=kind, physical_bytes=physical, thin=move.thin, format=move.format,
            virtual_bytes=move.virtual_bytes, mode=mapping.disk.mode,
            queues=mapping.disk.queues, mapping=mapping.disk.mapping,
            iothreads_reason=reason, storage_reason=storage))
        if move.thin and not host.block_threshold.supported:
            notes.append(f"{move.target}: {host.block_threshold.reason}: the thin volume "
                         "grows here only after an ENOSPC pause")
    return MigrationPlan(
        disks=tuple(landings), iothread_ids=tuple(iothread_ids),
        live_xml=relocate(request.live_xml, homes, iothread_ids),
        persistent_xml=relocate(request.persistent_xml, homes, iothread_ids),
        libvirt_uri=host.libvirt_uri or "", migration_uri=host.migration_uri,
        notes=tuple(notes))  # fmt: skip
