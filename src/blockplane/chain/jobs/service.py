"""``JobsService``: starts commit, pull, copy and backup jobs, and serves ``job list|show|abort|
pivot|speed``.

Starting a job: validate against the live chain (nothing written yet), insert the job PREPARING
unless a live job holds one of its disks (Conflict ``job.busy``), create what it needs (a copy's
destination volume, thin in a loop or lvm pool and watched on the mirror's node: ``thin_copy``;
room in a thin commit base), call libvirt, record RUNNING. A failure records
the job FAILED and cleans up. From then on ``JobDriver`` moves it, on BLOCK_JOB_2 events
(``on_block_job``, kept in order by one worker) and on the reconcile (``jobs.reconcile``). Must
not edit chains itself or decide phases.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from blockplane.chain.jobs.backup_plan import backup_directory, plan_backup
from blockplane.chain.jobs.driver import JobDriver
from blockplane.chain.jobs.phases import (
    AbortRequested,
    EndRequested,
    JobEventObserved,
    PivotRequested,
    Started,
    StartFailed,
)
from blockplane.chain.jobs.plans import (
    BlockJobPlan,
    copy_destination,
    plan_commit,
    plan_copy,
    plan_pull,
)
from blockplane.chain.jobs.rbd_backup import run_backup as run_rbd_backup
from blockplane.chain.jobs.rbd_copies import RbdCopies, refuse_on_rbd, refuse_unsafe_mapping
from blockplane.chain.jobs.reconcile import JobReconciler, probe
from blockplane.chain.jobs.spec import JobSpec, VolumeRef
from blockplane.chain.jobs.state import (
    BlockJobStatus,
    JobKind,
    JobPhase,
    Outcome,
    Progress,
    new_job,
)
from blockplane.chain.jobs.store import JobStore, busy_error
from blockplane.chain.jobs.thin_copy import ThinCopies, destination_size, destination_xml
from blockplane.chain.jobs.views import JobView, ScratchUsage, job_view
from blockplane.chain.ports import ThinHook
from blockplane.chain.service import ChainService
from blockplane.chain.volumes import ChainVolumes
from blockplane.errors import (
    BlockplaneError,
    Conflict,
    InvalidInput,
    NotFound,
    OperationFailed,
    outcome_unknown,
)
from blockplane.failpoints import failpoint
from blockplane.hypervisor.domain import DomainHandle
from blockplane.iothreads.model import NO_KNOWN_DEFECT, MappingSupport
from blockplane.model.chain import Chain
from blockplane.storage.backends.rbd import is_rbd_path
from blockplane.storage.images import measure_commit
from blockplane.storage.pools import PoolService
from blockplane.store.records import DiskRecord, PoolRecord, Records, VolumeRecord
from blockplane.vms.foreign import AdoptedDisks, NothingAdopted
from blockplane.vms.locks import VMLocks
from blockplane.xml.chain import copy_destination_xml

log = logging.getLogger(__name__)

#: virDomainBlockJobType of a backup (``state.LIBVIRT_JOB_TYPES``).
LIBVIRT_BACKUP_JOB_TYPE = 5


class JobsService:
    def __init__(
        self, store: JobStore, chains: ChainService, driver: JobDriver,
        reconciler: JobReconciler, volumes: ChainVolumes, pools: PoolService,
        records: Records, locks: VMLocks, thin: ThinHook | None,
        thin_copies: ThinCopies, rbd_copies: RbdCopies, foreign: AdoptedDisks | None = None,
        rbd_mapping: MappingSupport = NO_KNOWN_DEFECT,
    ) -> None:
        """``rbd_copies``: copies into and backups of rbd disks; ``rbd_mapping``: whether an
        rbd disk's queues may run in several IOThreads (a pivot onto rbd is refused where a
        disk mapped over several would deadlock)."""
        self._foreign = foreign or NothingAdopted()
        self._store = store
        self._chains = chains
        self._driver = driver
        self._reconciler = reconciler
        self._volumes = volumes
        self._pools = pools
        self._records = records
        self._locks = locks
        self._thin = thin
        self._thin_copies = thin_copies
        self._rbd_copies = rbd_copies
        self._rbd_mapping = rbd_mapping

    # starting jobs
    def commit(self, vm: str, target: str, top: str | None, base: str | None, *, pivot: bool,
               bandwidth: int) -> JobView:
        domain, chain = self._live_chain(vm, target, "a commit")
        refuse_on_rbd(chain, "commit")
        plan = plan_commit(chain, self._chains.element(chain, top),
                           self._chains.element(chain, base), pivot=pivot, bandwidth=bandwidth)
        self._foreign.refuse(vm, target, "a commit into it",
                                   [plan.spec.base_path] if plan.spec.base_path else [])
        between = list(plan.spec.invalidated[1:])

        def act(spec: JobSpec) -> JobSpec:
            self._pre_extend(vm, plan, between)
            assert plan.libvirt_base is not None and plan.libvirt_top is not None
            domain.block_commit(target, plan.libvirt_base, plan.libvirt_top, bandwidth,
                                active=plan.kind is JobKind.ACTIVE_COMMIT)
            return spec

        return self._start(vm, target, plan.kind, plan.spec, plan.pivot, act,
                           chain=chain.paths())

    def pull(self, vm: str, target: str, base: str | None, *, bandwidth: int) -> JobView:
        domain, chain = self._live_chain(vm, target, "a pull")
        refuse_on_rbd(chain, "pull")
        plan = plan_pull(chain, self._chains.element(chain, base), bandwidth=bandwidth)

        def act(spec: JobSpec) -> JobSpec:
            domain.block_pull(target, plan.libvirt_base, bandwidth)
            return spec

        return self._start(vm, target, plan.kind, plan.spec, False, act, chain=chain.paths())

    def copy(self, vm: str, target: str, *, dest_path: str | None, pool: str | None,
             shallow: bool, synchronous_writes: bool, pivot: bool,
             bandwidth: int) -> JobView:
        domain, chain = self._live_chain(vm, target, "a copy")
        plan = plan_copy(chain, shallow=shallow, synchronous_writes=synchronous_writes,
                         pivot=pivot, bandwidth=bandwidth)
        job_id = _new_id()
        pool_name, volume = copy_destination(self._pools_list(), dest_path, pool,
                                             f"{vm}-{target}-copy-{job_id[:6]}")
        top = chain.top
        backing = chain.elements[1] if plan.spec.shallow else None
        pool_record = self._pools.get(pool_name)
        into_rbd = pool_record.type == "rbd"
        if into_rbd and plan.spec.shallow:
            raise InvalidInput(
                f"--shallow into rbd pool {pool_name} is refused: a raw RBD image has no "
                "backing file to keep the chain below the top on; copy the whole chain",
                code="job.invalid_request")
        if into_rbd and (pivot or synchronous_writes):
            refuse_unsafe_mapping(domain.xml(), target, self._rbd_mapping,
                                  "a copy with --pivot" if pivot else "a copy with --sync-writes")

        def act(spec: JobSpec) -> JobSpec:
            virtual = self._rbd_copies.virtual_size(vm, target, top.path)
            initial = None
            if self._thin_copies.enabled and not is_rbd_path(top.path):
                initial = destination_size(pool_record, top.path, shallow=spec.shallow,
                                           virtual_bytes=virtual)
            record = self._volumes.create(
                vm, target, pool_name, volume, virtual, thin=initial is not None,
                backing=backing.path if backing else None,
                backing_format=backing.format if backing else None, origin="copy",
                initial_bytes=initial, image_format="raw" if into_rbd else "qcow2")
            ref = VolumeRef(record.pool, record.name, record.path)
            spec = replace(spec, destination=ref, created=(ref,), new_top_path=ref.path)
            self._store.save_spec(job_id, spec)
            failpoint("job.copy.after_destination")
            self._thin_copies.before_mirror(vm, target, record)
            destination = (
                copy_destination_xml(self._rbd_copies.destination(pool_record, ref.path, target))
                if into_rbd else destination_xml(target, ref.path))
            domain.block_copy(target, destination,
                              bandwidth, shallow=spec.shallow,
                              synchronous_writes=synchronous_writes)
            failpoint("job.copy.after_mirror_start")
            self._thin_copies.mirror_started(vm, target, ref)
            return spec

        return self._start(vm, target, JobKind.COPY, plan.spec, pivot, act, job_id=job_id,
                           chain=chain.paths())

    def backup(self, vm: str, dest_dir: str, incremental: str | None,
               targets: list[str]) -> JobView:
        domain = self._chains.domain(vm)
        if not domain.is_active():
            raise Conflict(f"VM {vm} is not running; back up a running VM",
                           code="vm.not_running")
        for target in targets:
            self._foreign.refuse(vm, target, "a backup")
        managed = [disk.target for disk in self._records.disks(vm)]
        job_id = _new_id()
        chosen = list(dict.fromkeys(targets)) or managed
        on_rbd, local = self._rbd_copies.on_rbd(vm, chosen)
        if on_rbd and local:
            raise InvalidInput(
                f"VM {vm}: {', '.join(d.target for d in on_rbd)} on rbd and "
                f"{', '.join(d.target for d in local)} on local pools cannot be backed up as "
                "one job (RBD snapshots and libvirt's bitmaps are not one instant); back them "
                "up with --disk, one kind at a time", code="backup.mixed_storage")
        if on_rbd and len(on_rbd) == len(chosen):
            return self._backup_rbd(vm, domain, job_id, on_rbd, dest_dir, incremental)
        plan = plan_backup(job_id, managed, targets, dest_dir, incremental,
                           domain.checkpoint_names(), self._pools_list())

        def act(spec: JobSpec) -> JobSpec:
            assert spec.backup_dir is not None
            os.makedirs(spec.backup_dir, mode=0o711, exist_ok=True)
            domain.backup_begin(plan.backup_xml, plan.checkpoint_xml)
            return spec

        return self._start(vm, ",".join(plan.spec.targets), JobKind.BACKUP, plan.spec, False,
                           act, job_id=job_id)

    def start(self, vm: str, kind: JobKind, spec: JobSpec, act: Callable[[JobSpec], JobSpec],
              *, job_id: str) -> JobView:
        """Start a job another package planned (a pull backup): PREPARING, ``act``, RUNNING,
        with the same refusals and the same FAILED-and-cleaned-up on a failure as the rest."""
        return self._start(vm, ",".join(spec.targets), kind, spec, False, act, job_id=job_id)

    def save_spec(self, job_id: str, spec: JobSpec) -> None:
        """Record what a starting job created, before libvirt is asked (see ``copy``)."""
        self._store.save_spec(job_id, spec)

    def end(self, job_id: str, outcome: Outcome, reason: str) -> JobView:
        """End a running job with ``outcome``, whatever libvirt reports of the end."""
        stored = self._driver.apply(job_id, EndRequested(outcome, reason))
        domain = self._chains.domain(stored.state.vm)
        if stored.state.kind is JobKind.BACKUP:
            domain.abort_job()
        else:
            domain.block_job_abort(stored.state.target)
        return self.show(job_id)

    def _backup_rbd(self, vm: str, domain: DomainHandle, job_id: str, disks: list[DiskRecord],
                    dest_dir: str, incremental: str | None) -> JobView:
        """RBD snapshots exported by the agent (``chain.jobs.rbd_backup``), as a job that ends
        before the request returns."""
        directory = backup_directory(dest_dir, self._pools_list())
        spec, plan = self._rbd_copies.plan_backup(job_id, disks, directory, incremental)

        def act(spec: JobSpec) -> JobSpec:
            try:
                os.makedirs(directory, mode=0o711, exist_ok=True)
            except OSError as error:
                raise OperationFailed(f"cannot make {directory}: {error.strerror}",
                                      code="backup.failed") from error
            run_rbd_backup(domain, plan, str(spec.checkpoint), incremental)
            return spec

        self._start(vm, ",".join(spec.targets), JobKind.BACKUP, spec, False, act,
                    job_id=job_id)
        self._driver.apply(job_id, JobEventObserved(BlockJobStatus.COMPLETED,
                                                    LIBVIRT_BACKUP_JOB_TYPE))
        return self.show(job_id)

    def _start(self, vm: str, target: str, kind: JobKind, spec: JobSpec, pivot: bool,
               act: Callable[[JobSpec], JobSpec], *, job_id: str | None = None,
               chain: tuple[str, ...] | None = None) -> JobView:
        """``chain``: the paths the job was planned on; refused if a snapshot changed them."""
        job = new_job(job_id or _new_id(), vm, target, kind, now=_now(), pivot=pivot)
        with self._locks.lock_for(vm), self._driver.lock(job.id):
            self._require_free(vm, spec.targets, kind)
            domain = self._chains.domain(vm)
            if chain is not None and self._chains.read(domain, target).paths() != chain:
                raise Conflict(f"the chain of {vm}/{target} changed while the job was being"
                               " planned; run it again", code="chain.changed")
            self._reconciler.starting.add(job.id)
            try:
                holder = self._store.insert_if_free(job, spec)
                if holder is not None:
                    raise busy_error(vm, holder)
                failpoint("job.after_prepare")
                try:
                    act(self._driver.get(job.id).spec)
                except BlockplaneError as error:
                    if not outcome_unknown(error):  # else PREPARING: the reconcile settles it
                        self._driver.apply(job.id, StartFailed(error.message))
                    raise
                failpoint("job.after_libvirt_start")
                self._driver.apply(job.id, Started())
            finally:
                self._reconciler.starting.discard(job.id)
        return self.show(job.id)

    def _require_free(self, vm: str, targets: tuple[str, ...], kind: JobKind) -> None:
        holder = next((h for t in targets if (h := self._store.holding(vm, t))), None)
        if holder is not None:
            raise busy_error(vm, holder)
        if kind is JobKind.BACKUP:
            return
        domain = self._chains.domain(vm)
        for target in targets:
            info = domain.block_job_info(target)
            if info is not None:
                raise Conflict(f"{vm}/{target} already runs a libvirt block job (type "
                               f"{info.job_type}) that blockplane did not start",
                               code="job.busy")

    def _pre_extend(self, vm: str, plan: BlockJobPlan, between: list[str]) -> None:
        spec = plan.spec
        if self._thin is None or spec.base_path is None or spec.top_path is None:
            return
        row = self._volume_at(spec.base_path)
        if row is None or not row.thin:
            return
        assert plan.libvirt_base is not None
        needed = measure_commit(spec.top_path, spec.base_path, between=between)
        self._thin.pre_extend(vm, plan.libvirt_base, needed)

    def _volume_at(self, path: str) -> VolumeRecord | None:
        return next((v for v in self._records.volumes() if v.path == path), None)

    def _live_chain(self, vm: str, target: str, action: str) -> tuple[DomainHandle, Chain]:
        if self._records.vm(vm) is None:
            raise NotFound(f"no VM named {vm!r} is managed by blockplane", code="vm.not_found")
        self._foreign.refuse(vm, target, action)
        holder = self._store.holding(vm, target)
        if holder is not None:
            raise busy_error(vm, holder)
        domain = self._chains.domain(vm)
        if not domain.is_active():
            raise Conflict(f"VM {vm} is not running; block jobs run on a running VM",
                           code="vm.not_running")
        return domain, self._chains.read(domain, target)

    def _pools_list(self) -> list[PoolRecord]:
        return self._records.pools()

    # requests on jobs
    def list(self, vm: str | None = None) -> list[JobView]:
        return [job_view(stored.state, stored.spec) for stored in self._store.all(vm)]

    def show(self, job_id: str) -> JobView:
        """The job, with libvirt's live progress while it runs."""
        stored = self._driver.get(job_id)
        progress: Progress | None = None
        scratch: ScratchUsage | None = None
        if stored.state.phase in (JobPhase.RUNNING, JobPhase.READY, JobPhase.PREPARING):
            try:
                seen = probe(self._chains, self._chains.domain(stored.state.vm), stored)
            except BlockplaneError:
                return job_view(stored.state, stored.spec)
            if seen.present and seen.end:
                progress = Progress(seen.cur, seen.end)
            if seen.present and stored.spec.mode == "pull":
                scratch = scratch_usage(self._chains.domain(stored.state.vm))
        return job_view(stored.state, stored.spec, progress, scratch)

    def abort(self, job_id: str) -> JobView:
        stored = self._driver.apply(job_id, AbortRequested())
        failpoint("job.abort.after_persist")
        domain = self._chains.domain(stored.state.vm)
        if stored.state.kind is JobKind.BACKUP:
            domain.abort_job()
        else:
            domain.block_job_abort(stored.state.target)
        return self.show(job_id)

    def pivot(self, job_id: str) -> JobView:
        stored = self._driver.get(job_id)
        destination = stored.spec.destination
        if stored.state.kind is JobKind.COPY and destination is not None and \
                is_rbd_path(destination.path) and not stored.state.phase.ended:
            domain = self._chains.domain(stored.state.vm)
            refuse_unsafe_mapping(domain.xml(), stored.state.target, self._rbd_mapping,
                                  "a pivot")
        self._driver.apply(job_id, PivotRequested())
        return self.show(job_id)

    def speed(self, job_id: str, bandwidth: int) -> JobView:
        stored = self._driver.get(job_id)
        if stored.state.kind is JobKind.BACKUP:
            raise InvalidInput("a backup's speed cannot be changed", code="job.invalid_request")
        if stored.state.phase.ended:
            raise Conflict(f"job {job_id} has ended", code="job.invalid_request")
        self._chains.domain(stored.state.vm).block_job_set_speed(stored.state.target, bandwidth)
        with self._driver.lock(job_id):
            current = self._driver.get(job_id)
            self._store.save_spec(job_id, replace(current.spec, bandwidth=bandwidth))
        return self.show(job_id)

    # reconcile
    def reconcile(self) -> None:
        self._reconciler.run()
        self._volumes.collect()



def scratch_usage(domain: DomainHandle) -> ScratchUsage | None:
    """A running pull backup's scratch images: bytes they hold, and their virtual sizes."""
    try:
        stats = domain.job_stats()
    except BlockplaneError:
        return None
    if "disk_temp_total" not in stats:
        return None
    return ScratchUsage(int(stats.get("disk_temp_used", 0)), int(stats["disk_temp_total"]))


def _status(value: int) -> BlockJobStatus | None:
    try:
        return BlockJobStatus(value)
    except ValueError:
        return None


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def _now() -> float:
    return time.time()
