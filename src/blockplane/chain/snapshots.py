"""``SnapshotService``: external, disk-only, atomic snapshots onto overlays in each disk's pool.

Why NO_METADATA: libvirt's external-snapshot metadata goes stale as soon as a commit or pull
rewrites the chain, and a domain with such metadata needs extra flags to undefine. blockplane
keeps its own record per snapshot (``chain_snapshots``), written before the overlays are made,
and ``snapshot list`` shows whether each overlay is still in its chain or was merged away.

Sequence: validate (VM, disks, name, no job on the disks, guest agent for ``--quiesce``), record
the snapshot as ``creating``, create one qcow2 overlay volume per disk that records its backing
and backing format (a thin volume on block pools when the disk's top is thin), take the snapshot
with REUSE_EXT; then point each disk record at its overlay and hand it to the thin monitor. On
failure every overlay is deleted and the record removed. ``reconcile`` finishes or undoes a
snapshot the agent died in. Disks on rbd pools get RBD snapshots inside their images instead
(``rbd_snapshots``, which says why); a request mixing them with local disks is refused. Must not
run block jobs.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from blockplane.chain.jobs.spec import VolumeRef
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.rbd_snapshots import KIND as RBD_SNAPSHOT
from blockplane.chain.rbd_snapshots import RbdSnapshots, is_rbd_snapshot
from blockplane.chain.service import ChainService
from blockplane.chain.views import SnapshotCreated, SnapshotDiskView, SnapshotView
from blockplane.chain.volumes import ChainVolumes
from blockplane.errors import (
    BlockplaneError,
    Conflict,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    OperationFailed,
    outcome_unknown,
)
from blockplane.failpoints import failpoint
from blockplane.hypervisor.domain import DomainHandle
from blockplane.model.view import view_fields
from blockplane.storage.images import is_block_device, virtual_size
from blockplane.storage.names import validate_name, validate_volume_name
from blockplane.store.chain_records import ChainRecords, SnapshotRecord
from blockplane.store.events import EventPublisher
from blockplane.store.records import DiskRecord, Records
from blockplane.vms.foreign import AdoptedDisks, NothingAdopted
from blockplane.vms.locks import VMLocks
from blockplane.xml.backing_chain import parse_chain
from blockplane.xml.chain import ImageTarget, snapshot_xml
from blockplane.xml.disk import parse_disks

log = logging.getLogger(__name__)


class SnapshotService:
    def __init__(
        self,
        chains: ChainService,
        locks: VMLocks,
        records: Records,
        chain_records: ChainRecords,
        volumes: ChainVolumes,
        jobs: JobStore,
        events: EventPublisher,
        foreign: AdoptedDisks | None = None,
        rbd: RbdSnapshots | None = None,
    ) -> None:
        self._foreign = foreign or NothingAdopted()
        self._rbd = rbd
        self._chains = chains
        self._locks = locks
        self._records = records
        self._chain = chain_records
        self._volumes = volumes
        self._jobs = jobs
        self._events = events

    def create(
        self, vm: str, targets: list[str], *, quiesce: bool, name: str | None
    ) -> SnapshotCreated:
        domain = self._chains.domain(vm)
        name = validate_name("snapshot", name or time.strftime("snap-%Y%m%d-%H%M%S"))
        managed = {disk.target: disk for disk in self._records.disks(vm)}
        chosen = list(dict.fromkeys(targets)) or sorted(managed)
        if not chosen:
            raise InvalidInput(f"VM {vm} has no disks managed by blockplane to snapshot",
                               code="snapshot.invalid")
        for target in chosen:
            self._foreign.refuse(vm, target, "a snapshot")
            if target not in managed:
                raise NotFound(f"VM {vm} has no disk {target} managed by blockplane",
                               code="disk.not_found")
        with self._locks.lock_for(vm):
            live = domain.is_active()
            if quiesce:
                _require_guest_agent(domain, vm, live)
            if self._chain.snapshot(vm, name) is not None:
                raise Conflict(f"VM {vm} already has a snapshot named {name}",
                               code="snapshot.exists")
            for target in chosen:
                holder = self._jobs.holding(vm, target)
                if holder is not None:
                    raise Conflict(
                        f"{vm}/{target} is busy with {holder.state.kind.value} job "
                        f"{holder.id}; snapshot it once that job ends",
                        code="job.busy", job=holder.id)
            on_rbd = self._on_rbd(vm, [managed[target] for target in chosen])
            if on_rbd:
                started = time.monotonic()
                assert self._rbd is not None
                record = self._rbd.create(domain, vm, name, on_rbd, quiesce=quiesce, live=live)
                seconds = round(time.monotonic() - started, 3)
                self._events.publish("snapshot.created", vm, name=name, disks=chosen,
                                     quiesced=quiesce, seconds=seconds, kind="rbd")
                return SnapshotCreated(**view_fields(self._describe(record)), seconds=seconds)
            xml = domain.xml(inactive=not live)
            plans = [self._plan(vm, name, xml, target, managed[target].pool)
                     for target in chosen]
            record = SnapshotRecord(vm, name, "creating", quiesce, plans, time.time())
            self._chain.save_snapshot(record)
            made: list[VolumeRef] = []
            try:
                overlays = []
                for plan in plans:
                    volume = self._volumes.create(
                        vm, plan["target"], plan["pool"], plan["volume"], plan["virtual_bytes"],
                        thin=plan["thin"], backing=plan["backing_path"],
                        backing_format=plan["backing_format"], origin="snapshot")
                    made.append(VolumeRef(volume.pool, volume.name, volume.path))
                    plan["path"] = volume.path
                    overlays.append(ImageTarget(
                        plan["target"], "block" if is_block_device(volume.path) else "file",
                        volume.path))
                self._chain.save_snapshot(record)
                failpoint("snapshot.after_overlays")
                others = [d.target for d in parse_disks(xml) if d.target not in chosen]
                started = time.monotonic()
                domain.snapshot_disks(snapshot_xml(name, overlays, others), quiesce=quiesce)
                failpoint("snapshot.after_snapshot")
            except BaseException as error:
                if outcome_unknown(error):
                    raise  # libvirt may still put the overlays on top: the reconcile settles it
                for ref in made:
                    self._volumes.discard(ref)
                self._chain.delete_snapshot(vm, name)
                raise
            seconds = round(time.monotonic() - started, 3)
            for plan, ref in zip(plans, made, strict=True):
                self._volumes.placed_on_top(vm, plan["target"], ref)
            self._chain.set_snapshot_state(vm, name, "done")
        self._events.publish("snapshot.created", vm, name=name, disks=chosen, quiesced=quiesce,
                             seconds=seconds)
        described = self._describe(self._chain.snapshot(vm, name) or record)
        return SnapshotCreated(**view_fields(described), seconds=seconds)

    def _on_rbd(self, vm: str, disks: list[DiskRecord]) -> list[DiskRecord]:
        """The disks on rbd pools (snapshotted as RBD snapshots); a mix with local disks is
        refused, since the two kinds cannot be taken as one atomic snapshot."""
        if self._rbd is None:
            return []
        on_rbd, local = self._rbd.split(disks)
        if on_rbd and local:
            raise InvalidInput(
                f"VM {vm}: {', '.join(d.target for d in on_rbd)} on rbd and "
                f"{', '.join(d.target for d in local)} on local pools cannot be snapshotted "
                "together (RBD snapshots and qcow2 overlays are not one atomic operation); "
                "snapshot them with --disk, one kind at a time",
                code="snapshot.mixed_storage")
        return on_rbd

    def _plan(self, vm: str, name: str, xml: str, target: str, pool: str) -> dict[str, Any]:
        top = parse_chain(xml, target).top
        disk = self._records.disk(vm, target)
        current = self._records.volume(disk.pool, disk.volume) if disk else None
        volume = validate_volume_name(f"{vm}-{target}-{name}")
        if self._records.volume(pool, volume) is not None:
            raise Conflict(f"volume {volume} already exists in pool {pool}",
                           code="volume.exists")
        return {
            "target": target, "pool": pool, "volume": volume, "path": None,
            "backing_path": top.path, "backing_format": top.format or "qcow2",
            "virtual_bytes": virtual_size(top.path),
            "thin": bool(current is not None and current.thin),
        }

    def list(self, vm: str) -> list[SnapshotView]:
        self._chains.domain(vm)  # the VM must exist
        return [self._describe(record) for record in self._chain.snapshots(vm)]

    def _describe(self, record: SnapshotRecord) -> SnapshotView:
        try:
            paths: set[str] | None = self._chains.disk_paths(record.vm)
        except BlockplaneError:
            paths = None
        disks = []
        for disk in record.disks:
            status = "unknown"
            if disk.get("kind") == RBD_SNAPSHOT and self._rbd is not None:
                disks.append(SnapshotDiskView(
                    target=disk["target"], pool=disk.get("pool"), volume=disk.get("volume"),
                    path=disk.get("path"), backing_path=None, backing_format=None,
                    status=self._rbd.describe(disk), image=disk.get("image"),
                    kind=RBD_SNAPSHOT))
                continue
            if paths is not None and disk.get("path"):
                status = "in_chain" if os.path.normpath(disk["path"]) in {
                    os.path.normpath(p) for p in paths} else "merged"
            disks.append(SnapshotDiskView(
                target=disk["target"], pool=disk.get("pool"), volume=disk.get("volume"),
                path=disk.get("path"), backing_path=disk.get("backing_path"),
                backing_format=disk.get("backing_format"), status=status))
        return SnapshotView(vm=record.vm, name=record.name, state=record.state,
                            quiesced=record.quiesced, disks=tuple(disks),
                            created_at=record.created_at)

    def reconcile(self) -> None:
        """Finish (overlay on top) or undo (overlay absent) snapshots a dead agent left
        ``creating``. A snapshot being taken now holds its VM's lock, and is skipped: its
        overlays are not on top yet, and undoing it would delete them under libvirt."""
        for vm in {record.vm for record in self._chain.snapshots(state="creating")}:
            lock = self._locks.lock_for(vm)
            if not lock.acquire(blocking=False):
                continue
            try:
                for record in self._chain.snapshots(vm, state="creating"):
                    self._settle(record)
            finally:
                lock.release()

    def _settle(self, record: SnapshotRecord) -> None:
        try:
            domain = self._chains.domain(record.vm)
            if domain.unresponsive:
                return  # the snapshot call may still be under way in libvirt
            xml = domain.xml(inactive=not domain.is_active())
        except BlockplaneError:
            return
        if is_rbd_snapshot(record) and self._rbd is not None:
            try:
                self._rbd.settle(record, domain)
            except BlockplaneError:
                log.exception("settling RBD snapshot %s of %s failed; retried later",
                              record.name, record.vm)
            return
        taken = all(disk.get("path") and parse_chain(xml, disk["target"]).top.path
                    == disk["path"] for disk in record.disks)
        for disk in record.disks:
            if not disk.get("path"):
                continue
            ref = VolumeRef(disk["pool"], disk["volume"], disk["path"])
            if taken:
                self._volumes.placed_on_top(record.vm, disk["target"], ref)
            else:
                self._volumes.discard(ref)
        if taken:
            self._chain.set_snapshot_state(record.vm, record.name, "done")
        else:
            self._chain.delete_snapshot(record.vm, record.name)


def _require_guest_agent(domain: DomainHandle, vm: str, live: bool) -> None:
    if not live:
        raise InvalidInput(f"--quiesce needs VM {vm} running with a guest agent",
                           code="snapshot.quiesce_unavailable")
    try:
        domain.agent_command({"execute": "guest-ping"}, timeout_s=5)
    except DeadlineExceeded as error:
        raise DeadlineExceeded(
            f"--quiesce needs the guest agent of {vm} to freeze its filesystems, and it did not"
            f" answer ({error.message}); nothing was changed. Retry once it answers, or snapshot"
            " without --quiesce",
            code=error.code,
            vm=vm,
        ) from error
    except OperationFailed as error:
        raise Conflict(
            f"--quiesce needs the guest agent of {vm} to freeze its filesystems, and it does not"
            f" answer ({error.message}); snapshot without --quiesce, or start qemu-guest-agent"
            " in the guest",
            code="snapshot.quiesce_unavailable",
        ) from error
