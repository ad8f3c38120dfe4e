"""``CheckpointService``: ``checkpoint list|delete``, the libvirt checkpoints (persistent dirty
bitmaps) that every backup creates as the base of the next incremental.

Deleting goes through libvirt, which merges the checkpoint's bitmaps into its parent's, so the
incrementals against the checkpoints that remain stay exact. A checkpoint is not deleted while a
job of its VM could be using it (``checkpoint_user``): a live backup that starts from it or is
creating it, or a live block job on a disk it tracks (the bitmaps move with a commit or pull).
Must not create checkpoints (backups do) or edit chains.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable

from blockplane.chain.jobs.state import JobKind
from blockplane.chain.jobs.store import JobStore, StoredJob, busy_error
from blockplane.chain.service import ChainService
from blockplane.chain.views import CheckpointDeleteResult, CheckpointDiskView, CheckpointView
from blockplane.deadlines import BoundedLock
from blockplane.errors import Conflict, HypervisorError, NotFound
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.vms.foreign import AdoptedDisks, NothingAdopted
from blockplane.xml.chain import CheckpointDocument, parse_checkpoint

VMLock = Callable[[str], BoundedLock]


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


def checkpoint_view(checkpoint: CheckpointDocument, vm: str,
                    jobs: Iterable[StoredJob]) -> CheckpointView:
    user = checkpoint_user(checkpoint, vm, jobs)
    return CheckpointView(
        vm=vm,
        name=checkpoint.name,
        parent=checkpoint.parent,
        created_at=checkpoint.created_at,
        disks=tuple(CheckpointDiskView(disk.target, disk.bitmap, disk.dirty_bytes)
                    for disk in checkpoint.disks),
        used_by_job=user.id if user is not None else None,
    )


class CheckpointService:
    def __init__(self, chains: ChainService, store: JobStore, records: Records,
                 events: EventPublisher, vm_lock: VMLock,
                 foreign: AdoptedDisks | None = None) -> None:
        self._chains = chains
        self._store = store
        self._records = records
        self._events = events
        self._vm_lock = vm_lock
        self._foreign = foreign or NothingAdopted()

    def list(self, vm: str) -> builtins.list[CheckpointView]:
        """Every checkpoint of ``vm``, parents first; dirty sizes when the VM runs."""
        live = self._store.live()
        return [checkpoint_view(checkpoint, vm, live)
                for checkpoint in self._documents(vm, with_sizes=True)]

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
            domain.delete_checkpoint(name)
        self._events.publish("checkpoint.deleted", vm, checkpoint=name,
                             merged_into=checkpoint.parent)
        return CheckpointDeleteResult(vm, name, deleted=True, merged_into=checkpoint.parent)

    def _find(self, vm: str, name: str) -> CheckpointDocument:
        documents = self._documents(vm, with_sizes=False)  # a delete needs no dirty sizes
        for checkpoint in documents:
            if checkpoint.name == name:
                return checkpoint
        known = ", ".join(checkpoint.name for checkpoint in documents) or "none"
        raise NotFound(f"VM {vm} has no checkpoint {name!r} (checkpoints: {known})",
                       code="checkpoint.not_found")

    def _documents(self, vm: str, *, with_sizes: bool) -> builtins.list[CheckpointDocument]:
        """``with_sizes``: the dirty sizes too, if the VM runs (they need QEMU's answer)."""
        if self._records.vm(vm) is None:
            raise NotFound(f"no VM named {vm!r} is managed by blockplane", code="vm.not_found")
        domain = self._chains.domain(vm)
        try:
            documents = domain.checkpoint_documents(with_sizes=with_sizes and domain.is_active())
        except HypervisorError:
            # Sizes need QEMU's answer, which a VM stopping under us cannot give.
            documents = domain.checkpoint_documents(with_sizes=False)
        return [parse_checkpoint(document) for document in documents]
