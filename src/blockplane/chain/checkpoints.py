"""``CheckpointService``: ``checkpoint list|delete``, the libvirt checkpoints (persistent dirty
bitmaps) that every backup creates as the base of the next incremental.

Deleting goes through libvirt, which merges the checkpoint's bitmaps into its parent's, so the
incrementals against the checkpoints that remain stay exact. A checkpoint is not deleted while a
job of its VM could be using it (``checkpoint_user``): a live backup that starts from it or is
creating it, or a live block job on a disk it tracks (the bitmaps move with a commit or pull).
A checkpoint whose bitmap on some disk is missing or inconsistent (``checkpoint_health``) is
listed ``broken``; deleting it drops only libvirt's metadata, since there is no bitmap left to
merge. Must not create checkpoints (backups do) or edit chains.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable

from blockplane.chain.checkpoint_health import (
    DiskHealth,
    checkpoint_state,
    health_from_image,
    health_from_sizes,
)
from blockplane.chain.jobs.state import JobKind
from blockplane.chain.jobs.store import JobStore, StoredJob, busy_error
from blockplane.chain.service import ChainService
from blockplane.chain.views import CheckpointDeleteResult, CheckpointDiskView, CheckpointView
from blockplane.deadlines import BoundedLock
from blockplane.errors import BlockplaneError, Conflict, HypervisorError, NotFound
from blockplane.storage.images import image_bitmaps
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.vms.foreign import AdoptedDisks, NothingAdopted
from blockplane.xml.chain import CheckpointDocument, parse_checkpoint

VMLock = Callable[[str], BoundedLock]
#: Told ``(vm, name)`` of each checkpoint deleted (the backup package's keeper forgets it).
DeletedHook = Callable[[str, str], None]


def checkpoint_user(checkpoint: CheckpointDocument, vm: str,
                    jobs: Iterable[StoredJob]) -> StoredJob | None:
    """The live job of ``vm`` that keeps ``checkpoint`` from being deleted, if any."""
    tracked = {disk.target for disk in checkpoint.disks if disk.bitmap is not None}
    for job in jobs:
        if job.state.vm != vm or job.state.phase.ended:
            continue
        if job.state.kind is JobKind.BACKUP:
            if checkpoint.name in (job.spec.incremental, job.spec.checkpoint):
                return job
        elif tracked & set(job.spec.targets):
            return job
    return None


def checkpoint_view(checkpoint: CheckpointDocument, vm: str, jobs: Iterable[StoredJob],
                    health: dict[str, DiskHealth] | None = None) -> CheckpointView:
    """``health``: each tracked disk's verdict (``state`` is "unknown" without it)."""
    user = checkpoint_user(checkpoint, vm, jobs)
    health = health or {}
    return CheckpointView(
        vm=vm,
        name=checkpoint.name,
        parent=checkpoint.parent,
        created_at=checkpoint.created_at,
        state=checkpoint_state(health),
        disks=tuple(CheckpointDiskView(disk.target, disk.bitmap, disk.dirty_bytes,
                                       health.get(disk.target, DiskHealth.UNKNOWN).value)
                    for disk in checkpoint.disks),
        used_by_job=user.id if user is not None else None,
    )


class CheckpointService:
    def __init__(self, chains: ChainService, store: JobStore, records: Records,
                 events: EventPublisher, vm_lock: VMLock,
                 foreign: AdoptedDisks | None = None,
                 deleted: DeletedHook | None = None) -> None:
        self._chains = chains
        self._store = store
        self._records = records
        self._events = events
        self._vm_lock = vm_lock
        self._foreign = foreign or NothingAdopted()
        self._deleted = deleted

    def list(self, vm: str) -> builtins.list[CheckpointView]:
        """Every checkpoint of ``vm``, parents first; dirty sizes when the VM runs; each
        ``broken`` whose bitmap on a disk is missing or inconsistent."""
        live = self._store.live()
        documents, sizes_asked = self._read(vm, with_sizes=True)
        healths = self.health(vm, documents, sizes_asked=sizes_asked)
        return [checkpoint_view(checkpoint, vm, live, healths.get(checkpoint.name))
                for checkpoint in documents]

    def health(self, vm: str, documents: Iterable[CheckpointDocument], *, sizes_asked: bool
               ) -> dict[str, dict[str, DiskHealth]]:
        """Per checkpoint, per tracked disk: can its bitmap start an incremental?"""
        present = {disk.target for disk in self._records.disks(vm)}
        domain = self._chains.domain(vm)
        verdicts: dict[str, dict[str, DiskHealth]] = {}
        if domain.is_active():
            for checkpoint in documents:
                verdicts[checkpoint.name] = {
                    disk.target: health_from_sizes(checkpoint, disk.target, present,
                                                   sizes_asked=sizes_asked)
                    for disk in checkpoint.disks if disk.bitmap is not None}
            return verdicts
        tops: dict[str, dict[str, tuple[str, ...]] | None] = {}
        for target in present:
            try:
                tops[target] = image_bitmaps(self._chains.read(domain, target).top.path)
            except BlockplaneError:
                tops[target] = None
        for checkpoint in documents:
            verdicts[checkpoint.name] = {
                disk.target: health_from_image(checkpoint, disk.target, tops.get(disk.target))
                for disk in checkpoint.disks if disk.bitmap is not None}
        return verdicts

    def delete(self, vm: str, name: str) -> CheckpointDeleteResult:
        with self._vm_lock(vm):
            checkpoint = self._find(vm, name)
            user = checkpoint_user(checkpoint, vm, self._store.live())
            if user is not None:
                raise busy_error(vm, user)
            for disk in checkpoint.disks:
                if disk.bitmap is not None:  # libvirt merges (writes) the disk's bitmaps
                    self._foreign.refuse(vm, disk.target, f"deleting checkpoint {name}")
            domain = self._chains.domain(vm)
            if not domain.is_active():
                raise Conflict(
                    f"VM {vm} is not running; libvirt merges a checkpoint's bitmaps only in a "
                    f"running VM; start it to delete checkpoint {name}",
                    code="vm.not_running")
            merged_into = checkpoint.parent
            try:
                domain.delete_checkpoint(name)
            except HypervisorError:
                if not self._broken(vm, name):
                    raise
                domain.delete_checkpoint(name, metadata_only=True)  # no bitmap left to merge
                merged_into = None
        if self._deleted is not None:
            self._deleted(vm, name)
        self._events.publish("checkpoint.deleted", vm, checkpoint=name,
                             merged_into=merged_into)
        return CheckpointDeleteResult(vm, name, deleted=True, merged_into=merged_into)

    def _broken(self, vm: str, name: str) -> bool:
        documents, sized = self._read(vm, with_sizes=True)
        healths = self.health(vm, [d for d in documents if d.name == name], sizes_asked=sized)
        return checkpoint_state(healths.get(name, {})) == "broken"

    def _find(self, vm: str, name: str) -> CheckpointDocument:
        documents = self._documents(vm, with_sizes=False)  # a delete needs no dirty sizes
        for checkpoint in documents:
            if checkpoint.name == name:
                return checkpoint
        known = ", ".join(checkpoint.name for checkpoint in documents) or "none"
        raise NotFound(f"VM {vm} has no checkpoint {name!r} (checkpoints: {known})",
                       code="checkpoint.not_found")

    def _documents(self, vm: str, *, with_sizes: bool) -> builtins.list[CheckpointDocument]:
        return self._read(vm, with_sizes=with_sizes)[0]

    def _read(self, vm: str, *, with_sizes: bool
              ) -> tuple[builtins.list[CheckpointDocument], bool]:
        """The documents, and whether they carry sizes (``with_sizes`` and the VM runs: sizes
        need QEMU's answer)."""
        if self._records.vm(vm) is None:
            raise NotFound(f"no VM named {vm!r} is managed by blockplane", code="vm.not_found")
        domain = self._chains.domain(vm)
        sized = with_sizes and domain.is_active()
        try:
            documents = domain.checkpoint_documents(with_sizes=sized)
        except HypervisorError:
            # Sizes need QEMU's answer, which a VM stopping under us cannot give.
            documents, sized = domain.checkpoint_documents(with_sizes=False), False
        return [parse_checkpoint(document) for document in documents], sized
