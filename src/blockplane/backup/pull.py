"""``PullBackupService``: ``backup VM --pull``, ``backup stop JOB``, and the export's lifetime.

Starting (``start``): refuse what cannot work before anything is made (no such VM, VM off, no
guest agent for ``--require-quiesce``, unknown disk, pool or checkpoint, a broken checkpoint
asked for by name); then, as a job of kind ``backup`` and mode ``pull`` (PREPARING, one job per
disk), create the scratch images and the socket's directory, record the export, freeze the
guest's filesystems if asked (and always thaw after, even when the freeze failed: the guest may
have frozen without answering in time), ask libvirt for the backup with its checkpoint, make the
socket 0600, and hand the thin scratch images to the thin monitor on libvirt's index of them.
A failure leaves the job FAILED and its scratch images deleted (``JobCleanup``).

Ending: ``stop`` asks libvirt to end the export (virDomainAbortJob); libvirt reports a pull
backup ended that way as completed, so the job ends ``done``, and its cleanup deletes the
scratch images. blockplane ends it itself, with its own verdict (``JobsService.end``), when its
timeout passes (``aborted``) or when a thin scratch image cannot grow because its pool is full
(``failed``: the export would stop being a point in time, or the guest's writes would fail,
before the scratch is full). The reconcile enforces timeouts, removes the socket directories
of jobs that ended, and keeps the checkpoints (``CheckpointKeeper``). Must not edit chains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Protocol

from blockplane.backup.checkpoint_keeper import CheckpointKeeper
from blockplane.backup.pull_plan import PlannedDisk, PullPlan, PullRequest, plan_pull
from blockplane.backup.records import (
    ExportedDiskRecord,
    PullExportRecord,
    PullExports,
    TcpExport,
)
from blockplane.backup.scratch import ScratchImages, SocketRoom
from blockplane.backup.views import ExportView, PullBackupView, ScratchUsage
from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.jobs.service import JobsService, scratch_usage
from blockplane.chain.jobs.spec import JobSpec, VolumeRef
from blockplane.chain.jobs.state import JobKind, JobPhase, Outcome
from blockplane.chain.jobs.store import JobStore, StoredJob
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, Conflict, InvalidInput, NotFound, OperationFailed
from blockplane.failpoints import failpoint
from blockplane.hypervisor.domain import DomainHandle
from blockplane.store.events import EventPublisher
from blockplane.store.records import EventRecord, Records
from blockplane.xml.backup import (
    NbdServer,
    PullDisk,
    parse_backup_description,
    pull_backup_xml,
    qemu_process_owner,
)
from blockplane.xml.chain import parse_checkpoint

log = logging.getLogger(__name__)

BITMAP_PREFIX = "backup-"  # libvirt's name of an incremental export's bitmap: backup-<target>


class EventStream(Protocol):
    def listen(self) -> AbstractAsyncContextManager[_Queue]: ...


class _Queue(Protocol):
    async def get(self) -> EventRecord: ...


# (job id, QEMU's uid and gid) -> where QEMU listens on TCP with TLS (``tcp_export``)
TcpEndpoint = Callable[[str, tuple[int, int] | None], TcpExport]


class PullBackupService:
    def __init__(
        self, jobs: JobsService, store: JobStore, chains: ChainService,
        checkpoints: CheckpointService, keeper: CheckpointKeeper, exports: PullExports,
        scratch: ScratchImages, sockets: SocketRoom, records: Records, events: EventPublisher,
        tcp: TcpEndpoint | None = None,
    ) -> None:
        self._jobs = jobs
        self._store = store
        self._chains = chains
        self._checkpoints = checkpoints
        self._keeper = keeper
        self._exports = exports
        self._scratch = scratch
        self._sockets = sockets
        self._records = records
        self._events = events
        self._tcp = tcp

    # starting
    def start(self, request: PullRequest) -> PullBackupView:
        record = self._records.vm(request.vm)
        if record is None:
            raise NotFound(f"no VM named {request.vm!r} is managed by blockplane",
                           code="vm.not_found")
        domain = self._chains.domain(request.vm)
        if not domain.is_active():
            raise Conflict(f"VM {request.vm} is not running; back up a running VM",
                           code="vm.not_running")
        if request.require_quiesce and record.guest != "linux":
            raise Conflict(f"VM {request.vm} has no guest agent (created with --guest "
                           f"{record.guest}): --require-quiesce cannot freeze its filesystems",
                           code="guest.no_agent")
        if request.tcp and self._tcp is None:
            raise InvalidInput("exports over TCP are not set up on this agent",
                               code="backup.tcp_unavailable")
        with contextlib.suppress(BlockplaneError):  # a lost checkpoint is back before planning
            self._keeper.redefine_checkpoints(request.vm)
        job_id = uuid.uuid4().hex[:12]
        plan = self._plan(job_id, request, domain)
        spec = JobSpec(targets=plan.targets, incremental=plan.incremental,
                       checkpoint=plan.checkpoint, mode="pull")

        def act(spec: JobSpec) -> JobSpec:
            return self._begin(job_id, request, plan, domain, spec, record.guest == "linux")

        self._jobs.start(request.vm, JobKind.BACKUP, spec, act, job_id=job_id)
        return self.show(job_id)

    def _plan(self, job_id: str, request: PullRequest, domain: DomainHandle) -> PullPlan:
        documents = [parse_checkpoint(d) for d in domain.checkpoint_documents(with_sizes=True)]
        health = self._checkpoints.health(request.vm, documents, sizes_asked=True)
        pools = {pool.name: pool for pool in self._records.pools()}
        return plan_pull(job_id, request, self._records.disks(request.vm), pools, documents,
                         health)

    def _begin(self, job_id: str, request: PullRequest, plan: PullPlan, domain: DomainHandle,
               spec: JobSpec, has_agent: bool) -> JobSpec:
        disks: list[ExportedDiskRecord] = []
        created: list[VolumeRef] = []
        try:
            for planned in plan.disks:
                size = domain.block_info(planned.target)[0]
                ref, thin = self._scratch.create(request.vm, planned.target,
                                                 planned.scratch_pool, job_id, size)
                created.append(ref)
                disks.append(_exported(planned, size, ref, thin))
        finally:
            spec = replace(spec, created=tuple(created))
            self._jobs.save_spec(job_id, spec)  # recorded first: a failure deletes them
        failpoint("backup.pull.after_scratch")
        owner = qemu_process_owner(domain.xml())
        tcp = self._tcp(job_id, owner) if request.tcp and self._tcp is not None else None
        socket = None if tcp else str(self._sockets.prepare(job_id, owner))
        export = PullExportRecord(
            job_id=job_id, vm=request.vm, socket=socket,
            socket_dir=str(self._sockets.directory(job_id)), checkpoint=plan.checkpoint,
            incremental=plan.incremental, requested=request.incremental, disks=tuple(disks),
            timeout_s=request.timeout_s, deadline=time.time() + request.timeout_s,
            fallback=plan.fallback, quiesce=request.quiesce or request.require_quiesce, tcp=tcp,
        )
        self._exports.save(export)
        server = (NbdServer(host=tcp.host, port=tcp.port, tls=tcp.tls) if tcp
                  else NbdServer(socket=socket))
        backup_xml = pull_backup_xml(
            server,
            [PullDisk(d.target, "block" if d.scratch_thin else "file", d.scratch.path,
                      full=d.mode == "full") for d in disks],
            plan.skipped, plan.incremental)
        export = self._quiesced_begin(domain, export, backup_xml, plan.checkpoint_xml,
                                      has_agent=has_agent, required=request.require_quiesce)
        failpoint("backup.pull.after_begin")
        self._after_begin(domain, export)
        return spec

    def _quiesced_begin(self, domain: DomainHandle, export: PullExportRecord, backup_xml: str,
                        checkpoint_xml: str, *, has_agent: bool, required: bool
                        ) -> PullExportRecord:
        frozen, error = False, None
        if export.quiesce and not has_agent:
            error = "the VM has no guest agent"
        try:
            if export.quiesce and has_agent:
                try:
                    frozen = domain.fs_freeze() >= 0
                except BlockplaneError as failure:
                    error = failure.message
            export = replace(export, quiesced=frozen, quiesce_error=error)
            self._exports.save(export)
            if error is not None and required:
                raise OperationFailed(f"could not quiesce {export.vm}: {error}",
                                      code="backup.quiesce_failed")
            domain.backup_begin(backup_xml, checkpoint_xml, reuse_external=True)
        finally:
            if export.quiesce and has_agent:
                try:
                    domain.fs_thaw()
                except BlockplaneError as failure:
                    log.warning("thawing %s after the backup began failed: %s", export.vm,
                                failure.message)
        return export

    def _after_begin(self, domain: DomainHandle, export: PullExportRecord) -> None:
        if export.socket is not None:
            self._sockets.lock_down(export.job_id)
        description = domain.backup_description()
        disks = list(export.disks)
        if description is not None:
            described = parse_backup_description(description)
            for number, disk in enumerate(disks):
                seen = described.disk(disk.target)
                if seen is not None:
                    disks[number] = replace(disk, scratch_index=seen.index,
                                            export=seen.export or disk.export)
        export = replace(export, disks=tuple(disks))
        self._exports.save(export)
        for disk in export.disks:
            if disk.scratch_thin and disk.scratch_index is not None:
                try:
                    self._scratch.watch(export.vm, disk.target, disk.scratch, disk.scratch_index)
                except BlockplaneError:
                    log.exception("the thin monitor could not take scratch %s",
                                  disk.scratch.volume)
        with contextlib.suppress(BlockplaneError):
            self._keeper.remember(export.vm)
        self._events.publish("backup.pull.started", export.vm, job=export.job_id,
                             checkpoint=export.checkpoint, incremental=export.incremental,
                             fallback=export.fallback, quiesced=export.quiesced)

    # requests on running exports
    def show(self, job_id: str) -> PullBackupView:
        stored, export = self._pull(job_id)
        usage = None
        if not stored.state.phase.ended:
            with contextlib.suppress(BlockplaneError):
                usage = scratch_usage(self._chains.domain(stored.state.vm))
        return _view(stored, export, usage)

    def stop(self, job_id: str) -> PullBackupView:
        """End the export; its cleanup deletes the scratch images. Stopping an export that
        already ended changes nothing."""
        stored, _ = self._pull(job_id)
        if not stored.state.phase.ended:
            self._jobs.abort(job_id)
        return self.show(job_id)

    def _pull(self, job_id: str) -> tuple[StoredJob, PullExportRecord]:
        stored = self._store.get(job_id)
        if stored is None:
            raise NotFound(f"no block job {job_id}", code="job.not_found")
        export = self._exports.get(job_id)
        if stored.spec.mode != "pull" or export is None:
            raise InvalidInput(f"job {job_id} is a {stored.state.kind.value} job, not a pull "
                               "backup; use `job abort`", code="job.invalid_request")
        return stored, export

    # blockplane ends an export itself
    def fail_full_scratch(self, pool: str, volume: str) -> str | None:
        """A thin scratch image could not grow: fail its backup now, while the headroom above
        the write threshold still takes the guest's writes. The job's id, if one was ended."""
        for stored in self._live_pulls():
            export = self._exports.get(stored.id)
            if export is None:
                continue
            for disk in export.disks:
                if (disk.scratch.pool, disk.scratch.volume) == (pool, volume):
                    reason = (f"the scratch image {volume} of {disk.target} is full and pool "
                              f"{pool} cannot grow it; the export was ended so that the guest "
                              "never waits on it (give the pool room, or use --scratch-pool)")
                    self._jobs.end(stored.id, Outcome.FAILED, reason)
                    return stored.id
        return None

    async def watch_refusals(self, events: EventStream) -> None:
        """Follow the event log for the thin monitor's refusals to grow a scratch image."""
        async with events.listen() as queue:
            async for record in _records(queue):
                if record.type != "thin.extend_refused":
                    continue
                pool, volume = record.data.get("pool"), record.data.get("volume")
                if isinstance(pool, str) and isinstance(volume, str):
                    try:
                        await asyncio.to_thread(self.fail_full_scratch, pool, volume)
                    except BlockplaneError:
                        log.exception("ending the backup on a full scratch failed")

    def reconcile(self) -> None:
        now = time.time()
        live = self._live_pulls()
        for stored in live:
            export = self._exports.get(stored.id)
            if export is None:
                continue
            if stored.state.phase is JobPhase.RUNNING and _unsettled(export):
                self._settle(stored, export)
            if now < export.deadline:
                continue
            with contextlib.suppress(BlockplaneError):
                self._jobs.end(stored.id, Outcome.ABORTED,
                               f"the export's timeout ({export.timeout_s:.0f} s) passed")
        self._sockets.sweep({stored.id for stored in live})
        self._keeper.remember_new(self._store)
        self._keeper.sync()

    def _settle(self, stored: StoredJob, export: PullExportRecord) -> None:
        """An export libvirt began while the agent died before finishing its start: lock the
        socket down and let the thin monitor take the scratch images, as the start would."""
        try:
            self._after_begin(self._chains.domain(stored.state.vm), export)
        except BlockplaneError:
            log.exception("settling pull backup %s failed", stored.id)

    def _live_pulls(self) -> list[StoredJob]:
        return [stored for stored in self._store.live() if stored.spec.mode == "pull"]


def _unsettled(export: PullExportRecord) -> bool:
    return any(disk.scratch_index is None for disk in export.disks)


async def _records(queue: _Queue) -> AsyncIterator[EventRecord]:
    while True:
        yield await queue.get()


def _exported(planned: PlannedDisk, size: int, scratch: VolumeRef, thin: bool
              ) -> ExportedDiskRecord:
    return ExportedDiskRecord(
        target=planned.target, export=planned.target, mode=planned.mode, size=size,
        scratch=scratch, scratch_thin=thin,
        bitmap=f"{BITMAP_PREFIX}{planned.target}" if planned.mode == "incremental" else None,
        reason=planned.reason,
    )


def _view(stored: StoredJob, export: PullExportRecord, usage: ScratchUsage | None
          ) -> PullBackupView:
    state = stored.state
    return PullBackupView(
        job=state.id, vm=state.vm, kind=state.kind.value, mode="pull", phase=state.phase.value,
        outcome=state.outcome.value if state.outcome else None, error=state.error,
        checkpoint=export.checkpoint, incremental=export.incremental,
        requested=export.requested, fallback=export.fallback, quiesced=export.quiesced,
        quiesce_error=export.quiesce_error, socket=export.socket, timeout_s=export.timeout_s,
        deadline=export.deadline, disks=tuple(ExportView.of(d, export) for d in export.disks),
        scratch=usage,
    )
