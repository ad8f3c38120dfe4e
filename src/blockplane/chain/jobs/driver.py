"""``JobDriver``: feeds signals to ``phases.advance``, persists each new state, and takes the
steps a phase calls for: pivot a READY job whose pivot was asked for, confirm a pivot from the
live XML, clean up a job that ended.

Every change to a job happens here under that job's lock (re-entrant, so a step can feed the next
signal), and is written to the store before the libvirt call it announces. libvirt may return
from a pivot before or after the XML shows it, so the XML is polled briefly; a pivot still not
visible is left PIVOTING for the reconcile to confirm. Must not choose jobs to start or read
requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from blockplane.chain.jobs.cleanup import JobCleanup
from blockplane.chain.jobs.effects import pivot_confirmed
from blockplane.chain.jobs.phases import (
    CleanupDone,
    CopyRestarted,
    JobSignal,
    PivotFailed,
    PivotIssued,
    PivotObserved,
    RestartFailed,
    advance,
)
from blockplane.chain.jobs.state import JobPhase, JobState, Outcome
from blockplane.chain.jobs.store import JobStore, StoredJob
from blockplane.chain.jobs.thin_copy import CopyRestarts
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, NotFound, outcome_unknown
from blockplane.failpoints import failpoint
from blockplane.store.events import EventPublisher

log = logging.getLogger(__name__)

PIVOT_VISIBLE_TIMEOUT_S = 10.0


class JobDriver:
    def __init__(
        self,
        store: JobStore,
        chains: ChainService,
        cleanup: JobCleanup,
        events: EventPublisher,
        clock: Callable[[], float] = time.time,
        restarts: CopyRestarts | None = None,
    ) -> None:
        self._store = store
        self._chains = chains
        self._cleanup = cleanup
        self._events = events
        self._clock = clock
        self._restarts = restarts
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    def lock(self, job_id: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.RLock())

    def get(self, job_id: str) -> StoredJob:
        stored = self._store.get(job_id)
        if stored is None:
            raise NotFound(f"no block job {job_id}", code="job.not_found")
        return stored

    def apply(self, job_id: str, signal: JobSignal) -> StoredJob:
        """``advance`` the job by ``signal``, persist it, then take whatever step follows."""
        with self.lock(job_id):
            stored = self.get(job_id)
            new = advance(stored.state, signal, self._clock())
            reason = self._restarts.wanted(stored, new) if self._restarts else None
            if reason is not None:
                return self.follow(self._restart(stored, reason))
            if new != stored.state:
                self._save(stored.state, new)
                stored = StoredJob(new, stored.spec)
            return self.follow(stored)

    def follow(self, stored: StoredJob) -> StoredJob:
        """Take the steps the job's phase calls for, until none is left."""
        with self.lock(stored.id):
            stored = self.get(stored.id)
            for _ in range(4):
                job = stored.state
                if job.phase is JobPhase.READY and job.pivot_requested:
                    stored = self.pivot(stored)
                elif job.phase is JobPhase.PIVOTING:
                    stored = self.confirm_pivot(stored, wait_s=PIVOT_VISIBLE_TIMEOUT_S)
                    if stored.state.phase is JobPhase.PIVOTING:
                        return stored
                elif job.phase is JobPhase.CLEANUP:
                    stored = self._apply_cleanup(stored)
                else:
                    return stored
            return stored

    def pivot(self, stored: StoredJob) -> StoredJob:
        """Persist PIVOTING, ask libvirt to pivot, then confirm from the live XML."""
        with self.lock(stored.id):
            job = stored.state
            issued = advance(job, PivotIssued(), self._clock())
            self._save(job, issued)
            failpoint("job.pivot.after_persist")
            stored = StoredJob(issued, stored.spec)
            domain = self._chains.domain(job.vm)
            try:
                domain.block_job_abort(job.target, pivot=True)
                failpoint("job.pivot.after_issue")
            except BlockplaneError as error:
                confirmed = self.confirm_pivot(stored, wait_s=0)
                if confirmed.state.phase is not JobPhase.PIVOTING:
                    return confirmed
                failed = advance(issued, PivotFailed(error.message), self._clock())
                self._save(issued, failed)
                return StoredJob(failed, stored.spec)
            return self.confirm_pivot(stored, wait_s=PIVOT_VISIBLE_TIMEOUT_S)

    def confirm_pivot(self, stored: StoredJob, wait_s: float) -> StoredJob:
        """PivotObserved(True) once the XML shows the new top and no mirror."""
        new_top = stored.spec.new_top_path
        if new_top is None:
            return stored
        deadline = time.monotonic() + wait_s
        while True:
            try:
                chain = self._chains.read(self._chains.domain(stored.state.vm),
                                          stored.state.target)
                pivoted = pivot_confirmed(chain, new_top)
            except BlockplaneError:
                pivoted = False
            if pivoted:
                return self.apply(stored.id, PivotObserved(True))
            if time.monotonic() >= deadline:
                return stored
            time.sleep(0.1)

    def _restart(self, stored: StoredJob, reason: str) -> StoredJob:
        """Persist the restart (counted), then start the copy again; FAILED if that fails."""
        assert self._restarts is not None
        restarted = advance(stored.state, CopyRestarted(), self._clock())
        self._save(stored.state, restarted)
        stored = StoredJob(restarted, stored.spec)
        log.warning("copy job %s: %s; starting it again (%d)", stored.id, reason,
                    restarted.restarts)
        failpoint("job.copy.restart.after_persist")
        try:
            self._restarts.restart(stored, reason)
        except BlockplaneError as error:
            if outcome_unknown(error):
                return stored  # the mirror may still start: the reconcile finds out
            failed = advance(restarted, RestartFailed(error.message), self._clock())
            self._save(restarted, failed)
            return StoredJob(failed, stored.spec)
        return stored

    def _apply_cleanup(self, stored: StoredJob) -> StoredJob:
        failpoint("job.cleanup.before")
        try:
            self._cleanup.run(stored)
        except BlockplaneError:
            log.exception("cleanup of job %s failed; the reconcile retries it", stored.id)
            return self.get(stored.id)
        job = advance(stored.state, CleanupDone(), self._clock())
        self._save(stored.state, job)
        return StoredJob(job, stored.spec)

    def _save(self, old: JobState, new: JobState) -> None:
        if new == old:
            return
        self._store.save(new)
        if new.outcome is Outcome.FAILED and old.outcome is None:
            log.warning("%s job %s on %s/%s failed: %s", new.kind.value, new.id, new.vm,
                        new.target, new.error)
        if new.phase is not old.phase:
            self._events.publish(
                f"job.{new.phase.value}", new.vm, job=new.id, kind=new.kind.value,
                target=new.target, outcome=new.outcome.value if new.outcome else None,
                error=new.error, point_in_time_copy=new.point_in_time_copy,
            )
