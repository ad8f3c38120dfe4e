"""The block jobs' safety net: at agent start and every reconcile period, each live job is set
right from what libvirt reports now (``phases.restart_action``).

- still running: keep tracking, with progress and READY from blockJobInfo and the XML's
  ``<mirror ready='yes'>`` (never from cur == end);
- gone: judged by the live chain (``effects``) or, for a backup, by libvirt's completed-job
  statistics, so that nothing vanished is taken for a success. A job must be seen gone on two
  passes in a row first: its final event may be on the way. A backup of a running VM whose
  outcome libvirt does not report yet is given ``BACKUP_OUTCOME_GRACE_S`` more: after the agent
  (and with it the embedded libvirt) restarts, libvirt reports the backup neither running nor
  ended until it has reconnected to QEMU, seconds later on a busy host (``verdict_due``);
- a push backup that libvirt reports running while none of its disks has a block job is a
  stale record: libvirt died between QEMU dismissing the finished job and saving that, so its
  restart dropped the job yet kept the backup running forever. It is judged like a backup gone
  (its outcome unknown) and libvirt's record is aborted, which frees the VM's disks;
- READY with a pivot asked for: pivot; PIVOTING: confirm from the XML, or pivot again;
  ABORTING: abort again; CLEANUP: finish the (idempotent) cleanup.

Jobs being started by this process, or locked by an event, are skipped for this pass. Must not
start jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from blockplane.chain.jobs.driver import JobDriver
from blockplane.chain.jobs.effects import commit_effect, pivot_confirmed, pivot_effect, pull_effect
from blockplane.chain.jobs.phases import (
    Effect,
    JobAbsent,
    JobInfoObserved,
    PivotObserved,
    RestartAction,
    restart_action,
)
from blockplane.chain.jobs.state import JobKind
from blockplane.chain.jobs.store import JobStore, StoredJob
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, NotFound
from blockplane.hypervisor.domain import JOB_OPERATION_BACKUP, DomainHandle

log = logging.getLogger(__name__)

BACKUP_OUTCOME_GRACE_S = 20.0


@dataclass(frozen=True)
class Probe:
    """What libvirt reports of a job now. ``ready``: the XML's mirror says ``ready='yes'``."""

    present: bool
    cur: int = 0
    end: int = 0
    ready: bool = False
    mirror_ready: str | None = None
    stale_backup: bool = False


def probe(chains: ChainService, domain: DomainHandle, stored: StoredJob) -> Probe:
    job = stored.state
    if not domain.is_active():
        return Probe(False)
    if job.kind is JobKind.BACKUP:
        if not domain.domain_job_active():
            return Probe(False)
        if stored.spec.mode != "pull" and all(
                domain.block_job_info(target) is None for target in stored.spec.targets):
            return Probe(False, stale_backup=True)
        processed, total = domain.domain_job()
        return Probe(True, processed, total)
    info = domain.block_job_info(job.target)
    if info is None:
        return Probe(False)
    mirror = chains.read(domain, job.target).mirror if job.kind.mirrors else None
    ready = mirror is not None and mirror.is_ready
    return Probe(True, info.cur, info.end, ready, mirror.ready if mirror else None)


def absent_effect(chains: ChainService, domain: DomainHandle, stored: StoredJob) -> Effect:
    """What the chain (or, for a backup, libvirt's last job) shows of a job that is gone."""
    job, spec = stored.state, stored.spec
    if job.kind is JobKind.BACKUP:
        stats = domain.completed_job() if domain.is_active() else {}
        if stats.get("operation") != JOB_OPERATION_BACKUP or "success" not in stats:
            return Effect.UNKNOWN
        return Effect.APPLIED if stats["success"] else Effect.NOT_APPLIED
    chain = chains.read(domain, job.target)
    if job.kind is JobKind.COMMIT and spec.top_path and spec.base_path:
        return commit_effect(chain, spec.top_path, spec.base_path)
    if job.kind is JobKind.PULL and spec.top_path:
        return pull_effect(chain, spec.top_path, spec.base_path)
    if job.kind.mirrors and spec.new_top_path and spec.top_path:
        return pivot_effect(chain, spec.new_top_path, spec.top_path)
    return Effect.UNKNOWN


def verdict_due(kind: JobKind, effect: Effect, gone_for_s: float, vm_running: bool,
                *, backup_targets_exist: bool = True) -> bool:
    """Whether a job that passes saw gone for ``gone_for_s`` is judged now (``JobAbsent``).

    ``backup_targets_exist``: libvirt creates a push backup's target images as it begins, so a
    backup without them never began and waiting for libvirt would tell nothing more.
    """
    if kind is JobKind.BACKUP and effect is Effect.UNKNOWN and vm_running:
        return not backup_targets_exist or gone_for_s >= BACKUP_OUTCOME_GRACE_S
    return True


class JobReconciler:
    def __init__(self, store: JobStore, chains: ChainService, driver: JobDriver) -> None:
        self._store = store
        self._chains = chains
        self._driver = driver
        #: When a pass first saw each job gone from libvirt (``time.monotonic()``).
        self._gone_since: dict[str, float] = {}
        #: Jobs this process is starting: PREPARING, and libvirt not called yet.
        self.starting: set[str] = set()

    def run(self) -> None:
        live = self._store.live()
        live_ids = {stored.id for stored in live}
        self._gone_since = {job_id: since for job_id, since in self._gone_since.items()
                            if job_id in live_ids}
        for stored in live:
            if stored.id in self.starting:
                continue
            lock = self._driver.lock(stored.id)
            if not lock.acquire(blocking=False):
                continue
            try:
                self._one(self._driver.get(stored.id))
            except BlockplaneError:
                log.exception("reconciling job %s failed", stored.id)
            finally:
                lock.release()

    def _one(self, stored: StoredJob) -> None:
        job = stored.state
        try:
            domain = self._chains.domain(job.vm)
        except NotFound:
            self._driver.apply(job.id, JobAbsent(Effect.UNKNOWN))
            return
        if domain.unresponsive:
            return  # its QEMU does not answer: judged once the call left running returns
        seen = probe(self._chains, domain, stored)
        action = restart_action(job, seen.present)
        if seen.present:
            self._gone_since.pop(job.id, None)
        if action is RestartAction.TRACK:
            self._driver.apply(job.id, JobInfoObserved(seen.cur, seen.end, seen.ready))
        elif action is RestartAction.RECORD_OUTCOME:
            self._judge_absent(domain, stored, stale_backup=seen.stale_backup)
        elif action is RestartAction.PIVOT:
            self._driver.follow(stored)
        elif action is RestartAction.CONFIRM_PIVOT:
            self._confirm(domain, stored, seen)
        elif action is RestartAction.ABORT:
            with contextlib.suppress(BlockplaneError):
                if job.kind is JobKind.BACKUP:
                    domain.abort_job()
                else:
                    domain.block_job_abort(job.target)
        elif action is RestartAction.CLEANUP:
            self._driver.follow(stored)

    def _confirm(self, domain: DomainHandle, stored: StoredJob, seen: Probe) -> None:
        job, spec = stored.state, stored.spec
        chain = self._chains.read(domain, job.target)
        if spec.new_top_path and pivot_confirmed(chain, spec.new_top_path):
            self._driver.apply(job.id, PivotObserved(True))
        elif seen.present:
            if seen.mirror_ready == "yes":
                # The pivot was persisted but never reached libvirt (or libvirt dropped it).
                with contextlib.suppress(BlockplaneError):
                    domain.block_job_abort(job.target, pivot=True)
                self._driver.confirm_pivot(stored, wait_s=2.0)
        else:
            self._judge_absent(domain, stored)

    def _judge_absent(self, domain: DomainHandle, stored: StoredJob, *,
                      stale_backup: bool = False) -> None:
        job = stored.state
        now = time.monotonic()
        since = self._gone_since.get(job.id)
        if since is None:
            self._gone_since[job.id] = now  # its final event may be on the way
            return
        # A stale record's completed-job statistics are an older job's, or the abort's below.
        effect = Effect.UNKNOWN if stale_backup else absent_effect(self._chains, domain, stored)
        targets_exist = any(os.path.exists(path) for path in stored.spec.backup_files.values())
        if not verdict_due(job.kind, effect, now - since, domain.is_active(),
                           backup_targets_exist=targets_exist):
            return
        self._gone_since.pop(job.id, None)
        if stale_backup:
            log.warning("libvirt reports backup job %s of %s running but none of its disks has "
                        "a block job: libvirt lost track of it; aborting its record",
                        job.id, job.vm)
            with contextlib.suppress(BlockplaneError):
                domain.abort_job()
        self._driver.apply(job.id, JobAbsent(effect))
