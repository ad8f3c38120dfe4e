"""``vm migrate``: the migration job, driven by the source agent from check to cleanup.

``start`` runs the check in the request (the VM's lock taken at once, or refused; the job
recorded CHECKING; busy refusals; the request described; the destination's live facts compared
(``migrate_check``) and its plan asked for): any refusal forgets the job, and nothing changed
anywhere. Then a worker thread owns the job and the VM's lock and moves it on, persisting each
phase (``phases.advance``) before the step it announces:
- PREPARING: the destination prepares (its intent first, then the volumes);
- MIGRATING: libvirt's peer-to-peer live migration, a monitor thread reading its statistics
  for the progress (and setting the maximum downtime once the job runs); when the call ends,
  or when the agent restarted in this phase (the call is never made twice), the VM is located
  from both hosts' views;
- FINISHING: the destination records the VM as its own (retried until it answers);
- CLEANUP: this host lets go (``source_cleanup``);
- ROLLING_BACK: the VM is resumed here if the switch-over paused it, the destination removes
  what it prepared (retried until it answers), and the job ends FAILED or ABORTED.
``recover`` (agent start and every reconcile) gives a worker to each live job nobody drives.
Must not plan the destination's side (``landing``) or edit XML.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from blockplane.deadlines import BoundedLock
from blockplane.errors import BlockplaneError, Conflict, InvalidInput, NotFound
from blockplane.failpoints import failpoint
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.migration import (
    JOB_OPERATION_MIGRATION_OUT,
    PAUSED_MIGRATION,
    MigrateRequest,
)
from blockplane.migration.peer_client import PeerClient, PeerRefused
from blockplane.migration.peers import PeerService
from blockplane.migration.phases import (
    AbortRequested,
    CheckPassed,
    CleanupDone,
    DestinationView,
    FinishConfirmed,
    Located,
    MigrationFailed,
    MigrationPhase,
    MigrationReturned,
    Prepared,
    Restarted,
    RolledBack,
    Signal,
    SourceJob,
    SourceView,
    Stats,
    StepFailed,
    Where,
    advance,
    locate,
    new_job,
)
from blockplane.migration.plan import COPY_STORAGE_MODES, MigrationPlan, MigrationRequest
from blockplane.migration.source_check import MigrateOptions, SourceDescriber, refuse_if_busy
from blockplane.migration.source_cleanup import SourceCleanup
from blockplane.migration.store import MigrationStore, StoredMigration
from blockplane.migration.views import MigrationJobView
from blockplane.storage.names import validate_name
from blockplane.store.chain_records import ChainRecords
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records

log = logging.getLogger(__name__)

INCOMING = "/v1/migrations/incoming"
#: How long each call to the destination may take: planning and finishing are quick; the
#: prepare makes volumes (qemu-img, loop devices).
CALL_TIMEOUT_S = 30.0
PREPARE_TIMEOUT_S = 120.0
#: How often the migration's statistics are read (each reading is a QMP round trip).
POLL_S = 1.0
FIRST_POLL_S = 0.2
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0

VMLock = Callable[[str], BoundedLock]


def parse_pool_map(entries: Mapping[str, str] | None) -> dict[str, str]:
    mapped: dict[str, str] = {}
    for source, destination in (entries or {}).items():
        mapped[validate_name("pool", source)] = validate_name("pool", destination)
    return mapped


class SourceMigrations:
    def __init__(
        self, hypervisor: Hypervisor, records: Records, store: MigrationStore,
        peers: PeerService, describer: SourceDescriber, cleanup: SourceCleanup,
        vm_lock: VMLock, chain_busy: Callable[[str], None], chain_records: ChainRecords,
        events: EventPublisher, *, clock: Callable[[], float] = time.time,
    ) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._store = store
        self._peers = peers
        self._describer = describer
        self._cleanup = cleanup
        self._vm_lock = vm_lock
        self._chain_busy = chain_busy
        self._chain = chain_records
        self._events = events
        self._clock = clock
        self._guard = threading.Lock()
        self._job_locks: dict[str, threading.RLock] = {}
        self._workers: dict[str, threading.Thread] = {}
        #: Jobs a request or a worker of this process drives: ``recover`` leaves them alone.
        self._claimed: set[str] = set()
        self._stopping = threading.Event()

    # requests
    def start(self, vm: str, options: MigrateOptions) -> MigrationJobView:
        if options.copy_storage not in COPY_STORAGE_MODES:
            raise InvalidInput(f"--copy-storage {options.copy_storage!r}: use auto, all or none",
                               code="migration.invalid")
        if options.bandwidth_bps < 0 or options.max_downtime_ms < 0:
            raise InvalidInput("bandwidth and max downtime must not be negative",
                               code="migration.invalid")
        client = self._peers.client(options.peer)  # peer.not_found
        if self._records.vm(vm) is None:
            raise NotFound(f"no VM named {vm!r} is managed by blockplane", code="vm.not_found")
        domain = self._hypervisor.lookup(vm)
        if not domain.is_active():
            raise Conflict(f"VM {vm} is not running; live migration moves a running VM",
                           code="vm.not_running")
        lock = self._vm_lock(vm)
        if not lock.acquire(blocking=False):
            refuse_if_busy(vm, domain, [], self._chain_busy, self._chain)
            raise Conflict(f"another change of VM {vm} is in progress "
                           f"({lock.describe_holder()}); migrate it once that is done",
                           code="vm.busy")
        handed = False
        job = new_job(uuid.uuid4().hex[:12], vm, options.peer, self._clock())
        self._claim(job.id)
        try:
            self._store.insert_source(job, {"options": options.to_json()})
            try:
                plan_doc = self._check(job, domain, options, client)
            except BaseException:
                self._store.delete_source(job.id)  # refused: it never started
                raise
            self._store.save_source_plan(job.id, plan_doc)
            self._apply(job.id, CheckPassed())
            self._spawn(job.id, lock, resumed=False)
            handed = True
        finally:
            if not handed:
                lock.release()
                self._unclaim(job.id)
        return self.show(job.id)

    def _check(self, job: SourceJob, domain: Any, options: MigrateOptions,
               client: PeerClient) -> dict[str, Any]:
        failpoint("migrate.check")
        targets = [disk.target for disk in self._records.disks(job.vm)]
        refuse_if_busy(job.vm, domain, targets, self._chain_busy, self._chain)
        request = self._describer.describe(job.id, domain, options, socket.gethostname())
        answer = client.call("POST", f"{INCOMING}/plan", request.to_json(),
                             timeout_s=CALL_TIMEOUT_S)
        plan = MigrationPlan.from_json(answer)
        return {"options": options.to_json(), "request": request.to_json(),
                "check": plan.to_json(), "gaps": list(plan.gaps)}

    def abort(self, job_id: str) -> MigrationJobView:
        with self._job_lock(job_id):
            stored = self._get(job_id)
            job = self._apply(job_id, AbortRequested())
        if job.phase is MigrationPhase.MIGRATING:
            try:
                self._hypervisor.lookup(stored.job.vm).migration().abort()
            except BlockplaneError as error:  # it may have ended a moment ago: the call says
                log.info("aborting the migration of %s: %s", stored.job.vm, error)
        return self.show(job_id)

    def show(self, job_id: str) -> MigrationJobView:
        return _view(self._get(job_id))

    def list(self, vm: str | None = None) -> list[MigrationJobView]:
        return [_view(stored) for stored in self._store.sources(vm)]

    def owns(self, job_id: str) -> bool:
        return self._store.source(job_id) is not None

    def recover(self) -> None:
        """A worker for every live job nobody drives (after a restart, or a worker's crash)."""
        for stored in self._store.sources(live_only=True):
            with self._guard:
                if stored.id in self._claimed:
                    continue
                self._claimed.add(stored.id)
            self._apply(stored.id, Restarted())
            self._spawn(stored.id, None, resumed=True)

    def close(self) -> None:
        self._stopping.set()

    def _claim(self, job_id: str) -> None:
        with self._guard:
            self._claimed.add(job_id)

    def _unclaim(self, job_id: str) -> None:
        with self._guard:
            self._claimed.discard(job_id)
            self._workers.pop(job_id, None)

    # the worker
    def _spawn(self, job_id: str, lock: BoundedLock | None, *, resumed: bool) -> None:
        stored = self._get(job_id)
        worker = threading.Thread(target=self._drive, args=(job_id, lock, resumed),
                                  name=f"migrate {stored.job.vm} {job_id}", daemon=True)
        with self._guard:
            self._workers[job_id] = worker
        worker.start()

    def _drive(self, job_id: str, lock: BoundedLock | None, resumed: bool) -> None:
        try:
            while not self._stopping.is_set():
                stored = self._get(job_id)
                phase = stored.job.phase
                if phase.terminal:
                    return
                holds = phase in (MigrationPhase.PREPARING, MigrationPhase.MIGRATING,
                                  MigrationPhase.CLEANUP)
                if holds and lock is None:
                    lock = self._take_lock(stored.job.vm)
                    if lock is None:
                        continue
                elif not holds and lock is not None:
                    lock.release()
                    lock = None
                self._step(stored, resumed)
                resumed = False
        except Exception:
            log.exception("the worker of migration %s failed; the reconcile starts another",
                          job_id)
        finally:
            if lock is not None:
                lock.release()
            self._unclaim(job_id)

    def _take_lock(self, vm: str) -> BoundedLock | None:
        lock = self._vm_lock(vm)
        if lock.acquire(blocking=False):
            return lock
        self._stopping.wait(RETRY_FIRST_S)
        return None

    def _step(self, stored: StoredMigration, resumed: bool) -> None:
        phase = stored.job.phase
        if phase is MigrationPhase.PREPARING:
            self._prepare(stored)
        elif phase is MigrationPhase.MIGRATING:
            self._migrate(stored, resumed)
        elif phase is MigrationPhase.FINISHING:
            self._finish(stored)
        elif phase is MigrationPhase.CLEANUP:
            self._clean_up(stored)
        elif phase is MigrationPhase.ROLLING_BACK:
            self._roll_back(stored)

    def _prepare(self, stored: StoredMigration) -> None:
        if stored.job.abort_requested:
            self._apply(stored.id, StepFailed("aborted on request"))
            return
        failpoint("migrate.prepare")
        request = MigrationRequest.from_json(stored.plan["request"])
        try:
            answer = self._peers.client(stored.job.peer).call(
                "POST", INCOMING, request.to_json(), timeout_s=PREPARE_TIMEOUT_S)
            plan = MigrationPlan.from_json(answer)
        except (BlockplaneError, KeyError, TypeError, ValueError) as error:
            self._apply(stored.id, StepFailed(f"the destination did not prepare: {error}"))
            return
        self._store.save_source_plan(stored.id, {**stored.plan, "plan": plan.to_json()})
        failpoint("migrate.prepare.answered")
        if self._get(stored.id).job.abort_requested:
            self._apply(stored.id, StepFailed("aborted on request"))
            return
        self._apply(stored.id, Prepared())

    def _migrate(self, stored: StoredMigration, resumed: bool) -> None:
        job = stored.job
        if not resumed and not job.abort_requested:
            failpoint("migrate.migrating")
            plan = MigrationPlan.from_json(stored.plan["plan"])
            options = stored.plan["options"]
            monitor = _Monitor(self, job.id, job.vm, int(options.get("max_downtime_ms") or 0))
            monitor.start()
            try:
                self._hypervisor.lookup(job.vm).migration().migrate(MigrateRequest(
                    destination_uri=plan.libvirt_uri, live_xml=plan.live_xml,
                    persistent_xml=plan.persistent_xml, copy_disks=plan.copied,
                    bandwidth_bps=int(options.get("bandwidth") or 0),
                    migration_uri=plan.migration_uri,
                    detect_zeroes=tuple(d.target for d in plan.disks if d.copy and d.thin)))
                outcome: Signal = MigrationReturned()
            except BlockplaneError as error:
                outcome = MigrationFailed(error.message)
            finally:
                monitor.stop()
            self._apply(job.id, outcome)
            if isinstance(outcome, MigrationReturned):
                return
        elif job.abort_requested and not resumed:
            self._apply(job.id, MigrationFailed("aborted on request"))
        delay = RETRY_FIRST_S
        while not self._stopping.is_set():
            where = self._locate(job)
            if where is Where.MIGRATING:
                self._read_stats(job.id, job.vm)
                self._stopping.wait(POLL_S)
                continue
            if where is Where.UNKNOWN:
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self._apply(job.id, Located(where))
            return

    def _read_stats(self, job_id: str, vm: str) -> None:
        try:
            stats = self._hypervisor.lookup(vm).migration().job_stats()
        except BlockplaneError:
            return
        self._apply(job_id, Stats(stats))

    def _locate(self, job: SourceJob) -> Where:
        source = self._source_view(job.vm)
        if source is None:
            return Where.UNKNOWN
        try:
            answer = self._peers.client(job.peer).call(
                "GET", f"{INCOMING}/{job.id}", params={"vm": job.vm}, timeout_s=CALL_TIMEOUT_S)
            destination: DestinationView | None = DestinationView(
                bool(answer["present"]), bool(answer["running"]), bool(answer["incoming"]))
        except (BlockplaneError, KeyError, TypeError) as error:
            log.info("migration %s: the destination did not say where %s is: %s", job.id,
                     job.vm, error)
            destination = None
        return locate(source, destination)

    def _source_view(self, vm: str) -> SourceView | None:
        try:
            domain = self._hypervisor.lookup(vm)
        except NotFound:
            return SourceView(False, False)
        except BlockplaneError:
            return None
        try:
            state = domain.state()
            stats = domain.migration().job_stats() if state.active else {}
        except NotFound:
            return SourceView(False, False)
        except BlockplaneError:
            return None
        outgoing = bool(int(stats.get("type", 0))) and (
            stats.get("operation") == JOB_OPERATION_MIGRATION_OUT)
        paused = state.state == "paused" and state.reason == PAUSED_MIGRATION
        return SourceView(True, state.active, paused, outgoing)

    def _finish(self, stored: StoredMigration) -> None:
        failpoint("migrate.finishing")
        answer = self._retrying(stored.job, "finish", lambda client: client.call(
            "POST", f"{INCOMING}/{stored.id}/finish", timeout_s=CALL_TIMEOUT_S))
        if answer is None:
            return
        downtime = answer.get("downtime_ms") if isinstance(answer, Mapping) else None
        self._apply(stored.id, FinishConfirmed(int(downtime) if downtime is not None else None))

    def _clean_up(self, stored: StoredMigration) -> None:
        failpoint("migrate.cleanup")
        request = MigrationRequest.from_json(stored.plan["request"])
        plan = MigrationPlan.from_json(stored.plan["plan"])
        deleted = self._cleanup.release(request, plan)
        job = self._apply(stored.id, CleanupDone())
        self._events.publish("vm.migrated", job.vm, job=job.id, peer=job.peer,
                             downtime_ms=job.downtime_ms, volumes_deleted=deleted,
                             seconds=job.phase_seconds)

    def _roll_back(self, stored: StoredMigration) -> None:
        job = stored.job
        source = self._source_view(job.vm)
        if source is not None and source.paused_by_migration:
            try:
                self._hypervisor.lookup(job.vm).resume()
            except BlockplaneError as error:
                log.warning("resuming %s after its migration failed: %s", job.vm, error)
        landed = False

        def abort(client: PeerClient) -> Any:
            nonlocal landed
            try:
                return client.call("POST", f"{INCOMING}/{job.id}/abort",
                                   params={"vm": job.vm}, timeout_s=CALL_TIMEOUT_S) or {}
            except PeerRefused as error:
                if error.code != "migration.landed":
                    raise
                landed = True
                return {}

        if self._retrying(job, "abort", abort) is None:
            return
        if landed:
            here = self._source_view(job.vm)
            if here is not None and not here.active:
                self._apply(job.id, Located(Where.DESTINATION))
                return
            log.error("migration %s: %s reported running on both hosts", job.id, job.vm)
            self._stopping.wait(RETRY_MAX_S)
            return
        self._apply(job.id, RolledBack())

    def _retrying(self, job: SourceJob, what: str, call: Callable[[PeerClient], Any]) -> Any:
        """``call`` on the destination until it answers; None if the agent is stopping."""
        delay = RETRY_FIRST_S
        while not self._stopping.is_set():
            try:
                return call(self._peers.client(job.peer))
            except BlockplaneError as error:
                log.warning("migration %s: the destination's %s did not answer (%s); retrying "
                            "in %.0f s", job.id, what, error, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return None

    # state
    def _job_lock(self, job_id: str) -> threading.RLock:
        with self._guard:
            return self._job_locks.setdefault(job_id, threading.RLock())

    def _get(self, job_id: str) -> StoredMigration:
        stored = self._store.source(job_id)
        if stored is None:
            raise NotFound(f"no migration job {job_id}", code="job.not_found")
        return stored

    def _apply(self, job_id: str, signal: Signal) -> SourceJob:
        with self._job_lock(job_id):
            old = self._get(job_id).job
            new = advance(old, signal, self._clock())
            if new != old:
                self._store.save_source(new)
            if new.phase is not old.phase:
                self._events.publish(f"migration.{new.phase.value}", new.vm, job=new.id,
                                     peer=new.peer, error=new.error)
            return new


class _Monitor:
    """Reads the outgoing migration's statistics while the migration call runs."""

    def __init__(self, owner: SourceMigrations, job_id: str, vm: str,
                 max_downtime_ms: int) -> None:
        self._owner = owner
        self._job_id = job_id
        self._vm = vm
        self._downtime = max_downtime_ms
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"migrate-stats {vm}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        owner = self._owner
        interval = FIRST_POLL_S  # a first reading soon: a small VM migrates in a second or two
        while not self._done.wait(interval):
            interval = POLL_S
            try:
                migration = owner._hypervisor.lookup(self._vm).migration()
                stats = migration.job_stats()
                if not int(stats.get("type", 0)):
                    continue
                if self._downtime:
                    migration.set_max_downtime(self._downtime)
                    self._downtime = 0
                owner._apply(self._job_id, Stats(stats))
            except BlockplaneError as error:
                log.debug("reading the migration of %s: %s", self._vm, error)
                continue
            if int(stats.get("disk_processed", 0) or 0) > 0:
                failpoint("migrate.copying")


def _view(stored: StoredMigration) -> MigrationJobView:
    plan = stored.plan
    landed = plan.get("plan") or plan.get("check")
    disks: list[dict[str, Any]] = []
    notes: list[str] = []
    if landed:
        parsed = MigrationPlan.from_json(landed)
        disks = parsed.summary()
        notes = list(parsed.notes)
    request = plan.get("request") or {}
    targets = tuple(str(disk["target"]) for disk in request.get("disks", ()))
    spec = {**dict(plan.get("options") or {}), "disks": disks, "gaps": plan.get("gaps", []),
            "notes": notes}
    return MigrationJobView.of(stored.job, targets, spec)
