"""The destination's side of a migration: plan, prepare, finish and roll back, on request of
the source agent, and settle on its own what the source left it with.

- ``plan``: what the VM would get here (``landing.plan_landing``); changes nothing.
- ``prepare``: the intent first (the request and the plan, phase ``preparing``), then each
  copied disk's volume, each name recorded in the intent before it is made; then ``prepared``
  with the final plan (the volumes' paths in the XML the VM will run here).
- ``finish``: once the VM runs here, record it as if it had been created here: the VM, its
  volumes and disks with their re-planned IOThreads, its I/O limit records and chain volumes,
  its checkpoints redefined (their bitmaps came with the disks), its thin volumes armed (the
  write threshold does not survive a migration). Each step is idempotent.
- ``abort``: remove what the prepare made; refused once the VM runs here.
- ``reconcile``: a VM that landed while the source agent was away is finished here, once it has
  run here ``SETTLE_AFTER_RUNNING_S`` (libvirt's peer-to-peer migration resumes it here before
  the source's confirm step, which can still end it: the source asks ``finish`` itself once
  its migrate call returned, and a VM ended meanwhile is never recorded here); an intent
  the agent died preparing is rolled back; one the source never came back to is rolled back
  once its lease runs out, unless the VM is arriving or here.
Must not start or steer the migration itself (the source's libvirt does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from blockplane.errors import BlockplaneError, Conflict, NotFound
from blockplane.facts.capabilities import Capability
from blockplane.failpoints import failpoint
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.migration import JOB_OPERATION_MIGRATION_IN, PAUSED_MIGRATION
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.migration.landing import HostView, PoolRoom, plan_landing
from blockplane.migration.phases import DestinationView
from blockplane.migration.plan import MigrationPlan, MigrationRequest
from blockplane.migration.shared_pools import pool_identity
from blockplane.migration.shared_snapshots import landed
from blockplane.migration.store import MigrationStore, StoredIncoming
from blockplane.storage.images import create_qcow2
from blockplane.storage.names import validate_name
from blockplane.storage.pools import PoolService
from blockplane.storage.volumes import VolumeService
from blockplane.store.chain_records import ChainRecords, ChainVolumeRecord
from blockplane.store.events import EventPublisher
from blockplane.store.records import DiskRecord, Records, VMRecord, VolumeRecord
from blockplane.store.throttle_records import DiskThrottleRecord, ThrottleRecords
from blockplane.vms.migrate_check import migrate_check
from blockplane.xml.chain import parse_checkpoint
from blockplane.xml.relocate import host_files, serial_log_paths

log = logging.getLogger(__name__)

#: How long a prepared intent waits for its source to migrate, finish or abort before this
#: host rolls it back on its own (never while the VM is arriving or running here).
LEASE_S = 600.0

#: How long a VM must run here before this host finishes its migration without the source.
SETTLE_AFTER_RUNNING_S = 10.0

PREPARING, PREPARED, FINISHING, DONE = "preparing", "prepared", "finishing", "done"
ROLLING_BACK, ROLLED_BACK = "rolling_back", "rolled_back"


@dataclass(frozen=True)
class IncomingView:
    """A migration into this host, as the source asks about it: its phase here (``unknown``
    when this host has no record of it) and whether the VM is here, arriving or running."""

    id: str
    vm: str
    phase: str
    present: bool
    running: bool
    incoming: bool
    error: str | None = None
    downtime_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "vm": self.vm, "phase": self.phase, "present": self.present,
                "running": self.running, "incoming": self.incoming, "error": self.error,
                "downtime_ms": self.downtime_ms}

    @property
    def domain(self) -> DestinationView:
        return DestinationView(self.present, self.running, self.incoming)


@dataclass(frozen=True)
class HostSide:
    """What the destination needs of this host besides its stores: its IOThread limits and
    capabilities (facts), the libvirt URI it receives migrations by, the thin monitor."""

    limits: Callable[[], HostIOThreadLimits]
    capabilities: Callable[[], Mapping[str, Capability]]
    facts: Callable[[], Mapping[str, Any]]  # ``facts --json``, for migrate-check's gaps
    libvirt_uri: str | None
    migration_uri: str | None = None
    thin_track: Callable[[str, str, VolumeRecord], object] | None = None
    clock: Callable[[], float] = time.time


class DestinationService:
    def __init__(
        self, hypervisor: Hypervisor, records: Records, pools: PoolService,
        volumes: VolumeService, store: MigrationStore, chain_records: ChainRecords,
        throttle_records: ThrottleRecords, events: EventPublisher, host: HostSide,
    ) -> None:
        self._hypervisor = hypervisor
        self._records = records
        self._pools = pools
        self._volumes = volumes
        self._store = store
        self._chain = chain_records
        self._throttle = throttle_records
        self._events = events
        self._host = host
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        #: When ``reconcile`` first saw each prepared migration's VM running here (host clock).
        self._running_since: dict[str, float] = {}

    def _lock(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())

    # what the VM would get here
    def plan(self, request: MigrationRequest) -> MigrationPlan:
        failpoint("migrate.destination.plan")
        return self._with_gaps(request, plan_landing(request, self._view(request), request.id))

    def _with_gaps(self, request: MigrationRequest, plan: MigrationPlan) -> MigrationPlan:
        """The plan with ``vm migrate-check``'s gaps against this host's live facts."""
        check = migrate_check(request.vm.name, request.live_xml, self._host.facts())
        return replace(plan, gaps=tuple(asdict(gap) for gap in check.gaps))

    def _view(self, request: MigrationRequest) -> HostView:
        capabilities = self._host.capabilities()
        wanted = {move.destination_pool for move in request.disks}
        pools = {name: self._room(name) for name in wanted if self._records.pool(name)}
        files = [*host_files(request.live_xml)]
        vm = request.vm.name
        return HostView(
            pools=pools, limits=self._host.limits(),
            throttle_groups=capabilities["throttle_groups"],
            block_threshold=capabilities["block_threshold"],
            libvirt_uri=self._host.libvirt_uri, migration_uri=self._host.migration_uri,
            vm_exists=self._records.vm(vm) is not None or self._hypervisor.exists(vm),
            missing_files=tuple(path for path in files if not os.path.exists(path)),
        )  # fmt: skip

    def _room(self, name: str) -> PoolRoom:
        record = self._pools.get(name)
        backend = self._pools.backend(record)
        names = {volume.name for volume in self._records.volumes(name)}
        with contextlib.suppress(BlockplaneError):
            names |= set(backend.list())
        free: int | None = None
        if record.type in ("dir", "loop"):
            with contextlib.suppress(OSError):
                stats = os.statvfs(record.path)
                free = stats.f_bavail * stats.f_frsize
        return PoolRoom(record, pool_identity(record, backend, make=False), frozenset(names),
                        self._pools.used_bytes(name), free)

    # prepare
    def prepare(self, request: MigrationRequest, peer: str | None = None) -> MigrationPlan:
        with self._lock(request.id):
            stored = self._store.incoming(request.id)
            if stored is not None:
                if stored.phase == PREPARED:
                    return MigrationPlan.from_json(stored.plan["plan"])
                raise Conflict(f"migration {request.id} is {stored.phase} here",
                               code="migration.state", phase=stored.phase)
            host = self._view(request)
            plan = plan_landing(request, host, request.id)  # every refusal, before anything
            now = self._host.clock()
            state: dict[str, Any] = {"made": [], "expires_at": now + LEASE_S,
                                     "source_host": request.source_host}
            incoming = StoredIncoming(request.id, request.vm.name, PREPARING, state,
                                      {"request": request.to_json(), "plan": plan.to_json()})
            self._store.put_incoming(incoming, peer, now)
            self._events.publish("migration.incoming_prepared", request.vm.name,
                                 job=request.id, phase=PREPARING)
            try:
                failpoint("migrate.destination.prepare")
                paths = self._make_volumes(incoming, plan)
                self._make_log_dirs(request.live_xml)
                final = self._with_gaps(request, plan_landing(request, host, request.id, paths))
            except BaseException as error:
                self._roll_back(self._get(request.id), str(error))
                raise
            incoming = self._get(request.id)
            self._save(incoming, PREPARED, plan={"request": request.to_json(),
                                                 "plan": final.to_json()})
            failpoint("migrate.destination.prepared")
            return final

    def _make_volumes(self, incoming: StoredIncoming, plan: MigrationPlan) -> dict[str, str]:
        paths: dict[str, str] = {}
        for landing in plan.disks:
            if not landing.copy:
                continue
            made = [*self._get(incoming.id).state["made"],
                    {"pool": landing.pool, "volume": landing.volume}]
            self._save(self._get(incoming.id), PREPARING, made=made)
            pool = self._pools.get(landing.pool)
            backend = self._pools.backend(pool)
            volume = backend.create(landing.volume, landing.physical_bytes)
            try:
                if landing.format == "qcow2":
                    create_qcow2(volume.path, landing.virtual_bytes)
                self._records.add_volume(VolumeRecord(
                    pool.name, landing.volume, str(volume.path), landing.format,
                    landing.virtual_bytes, volume.physical_bytes, landing.thin))
            except BaseException:
                with contextlib.suppress(BlockplaneError):
                    backend.delete(landing.volume)
                raise
            paths[landing.target] = str(volume.path)
        return paths

    @staticmethod
    def _make_log_dirs(domain_xml: str) -> None:
        for path in serial_log_paths(domain_xml):
            Path(path).parent.mkdir(mode=0o711, parents=True, exist_ok=True)

    # where the VM is here
    def status(self, job_id: str, vm: str) -> IncomingView:
        stored = self._store.incoming(job_id)
        name = stored.vm if stored is not None else validate_name("vm", vm)
        present, running, incoming = self._domain_view(name)
        return IncomingView(
            job_id, name, stored.phase if stored is not None else "unknown", present, running,
            incoming, stored.state.get("error") if stored else None,
            stored.state.get("downtime_ms") if stored else None,
        )  # fmt: skip

    def _domain_view(self, vm: str) -> tuple[bool, bool, bool]:
        """(present, running, incoming): a domain still arriving is paused for the migration
        (libvirt's own state: no question to QEMU, whose incoming job has no statistics on
        this side); anything else active has landed."""
        try:
            state = self._hypervisor.lookup(vm).state()
        except NotFound:  # also when libvirt ends it between the lookup and the read
            return False, False, False
        if not state.active:
            return True, False, False
        arriving = state.state == "paused" and state.reason == PAUSED_MIGRATION
        return True, not arriving, arriving

    # finish
    def finish(self, job_id: str) -> IncomingView:
        with self._lock(job_id):
            stored = self._get(job_id)
            if stored.phase in (ROLLING_BACK, ROLLED_BACK):
                raise Conflict(f"migration {job_id} was rolled back here", code="migration.state",
                               phase=stored.phase)
            if stored.phase != DONE:
                self._finish(stored)
            return self.status(job_id, stored.vm)

    def _finish(self, stored: StoredIncoming) -> None:
        _present, running, _arriving = self._domain_view(stored.vm)
        if not running:
            raise Conflict(f"{stored.vm} does not run on this host (yet)",
                           code="migration.not_landed")
        stored = self._save(stored, FINISHING)
        failpoint("migrate.destination.finish")
        request = MigrationRequest.from_json(stored.plan["request"])
        plan = MigrationPlan.from_json(stored.plan["plan"])
        self._record_vm(request, plan)
        self._redefine_checkpoints(request)
        downtime = self._downtime(stored.vm)
        self._save(stored, DONE, downtime_ms=downtime)
        self._events.publish("vm.migrated_in", stored.vm, job=stored.id,
                             source=stored.state.get("source_host"), downtime_ms=downtime)

    def _record_vm(self, request: MigrationRequest, plan: MigrationPlan) -> None:
        vm = request.vm
        if self._records.vm(vm.name) is None:
            self._records.add_vm(VMRecord(vm.name, vm.uuid, vm.vcpus, vm.memory_bytes,
                                          vm.guest))
        thin: list[tuple[str, VolumeRecord]] = []
        for move in request.disks:
            landing = plan.disk(move.target)
            if landing is None:
                continue
            elements = [(landing.pool, landing.volume, landing.path, "migration")]
            if not landing.copy:
                elements = [(landing.pool if e.pool == move.source_pool else e.pool, e.volume,
                             e.path, e.origin) for e in move.chain] or [
                    (landing.pool, landing.volume, landing.path, "disk")]
            for pool, volume, path, origin in elements:
                record = self._records.volume(pool, volume) or self._adopt_volume(
                    pool, volume, path, move.format, move.virtual_bytes, move.thin)
                self._chain.add_volume(ChainVolumeRecord(pool, volume, vm.name, move.target,
                                                         path, "in_chain", origin))
                if record.thin:
                    thin.append((move.target, record))
            if self._records.disk(vm.name, move.target) is None:
                plan_json = {**landing.plan_json, "bus": move.bus, "iothreads_added": [],
                             "io_threads_requested": move.stored_plan.get("io_threads_requested"),
                             "controller_index": move.stored_plan.get("controller_index")}
                self._records.add_disk(DiskRecord(vm.name, move.target, landing.pool,
                                                  landing.volume, move.bus, plan_json))
            if move.qos is not None:
                self._throttle.put_disk(DiskThrottleRecord(
                    vm.name, move.target, str(move.qos["mode"]), dict(move.qos["spec"]),
                    list(move.qos["chain"]), int(move.qos["size_bytes"]),
                    dict(move.qos["per_disk"])))
        for snapshot in landed(vm.name, request.snapshots, plan):
            if self._chain.snapshot(vm.name, snapshot.name) is None:
                self._chain.save_snapshot(snapshot)
        if self._host.thin_track is not None:
            for target, record in thin:
                self._host.thin_track(vm.name, target, record)

    def _adopt_volume(self, pool: str, volume: str, path: str, image_format: str,
                      virtual: int, thin: bool) -> VolumeRecord:
        """A volume on shared storage, made by another host: recorded here as it is."""
        physical = self._volumes.initial_physical(self._pools.get(pool), virtual, image_format,
                                                  thin)
        record = VolumeRecord(pool, volume, path, image_format, virtual, physical, thin)
        self._records.add_volume(record)
        return record

    def _redefine_checkpoints(self, request: MigrationRequest) -> None:
        if not request.checkpoints:
            return
        domain = self._hypervisor.lookup(request.vm.name)
        known = set(domain.checkpoint_names())
        migration = domain.migration()
        for document in request.checkpoints:
            name = _checkpoint_name(document)
            if name and name not in known:
                migration.redefine_checkpoint(document)

    def _downtime(self, vm: str) -> int | None:
        try:
            stats = self._hypervisor.lookup(vm).migration().completed_stats()
        except BlockplaneError:
            return None
        if stats.get("operation") != JOB_OPERATION_MIGRATION_IN or "downtime" not in stats:
            return None
        return int(stats["downtime"])

    # abort
    def abort(self, job_id: str, vm: str) -> IncomingView:
        with self._lock(job_id):
            stored = self._store.incoming(job_id)
            if stored is None:
                return self.status(job_id, vm)  # never prepared here: nothing to remove
            if stored.phase in (FINISHING, DONE) and not self._domain_view(stored.vm)[0]:
                # The finish began (or ended) when the VM ran here, and then libvirt ended this
                # QEMU: peer-to-peer migration resumes the destination before the source's
                # confirm step, which may still fail (a late abort, the daemon restarted). The
                # source asks this only while it rolls back with the VM running there.
                self._records.delete_vm(stored.vm)  # and, by cascade, what the finish recorded
                self._roll_back(stored, "libvirt ended the VM here before the source confirmed")
                return self.status(job_id, stored.vm)
            if stored.phase in (FINISHING, DONE):
                raise Conflict(f"{stored.vm} runs on this host: migration {job_id} is "
                               "finished here, not rolled back", code="migration.landed")
            if stored.phase != ROLLED_BACK:
                self._refuse_if_landed(stored.vm)
                self._roll_back(stored, "aborted by the source")
            return self.status(job_id, stored.vm)

    def _refuse_if_landed(self, vm: str) -> None:
        present, running, arriving = self._domain_view(vm)
        if running:
            raise Conflict(f"{vm} runs on this host: it landed, so it is finished, not "
                           "rolled back", code="migration.landed")
        if arriving:
            raise Conflict(f"{vm} is still arriving here; retry once libvirt ends it",
                           code="migration.busy")
        if present:  # defined, not running: what a failed incoming migration left
            with contextlib.suppress(NotFound):
                self._hypervisor.lookup(vm).undefine()

    def _roll_back(self, stored: StoredIncoming, why: str) -> None:
        stored = self._save(stored, ROLLING_BACK, error=stored.state.get("error") or why)
        failpoint("migrate.destination.rollback")
        for made in stored.state.get("made", []):
            self._delete_volume(str(made["pool"]), str(made["volume"]))
        self._save(stored, ROLLED_BACK)
        self._events.publish("migration.incoming_rolled_back", stored.vm, job=stored.id,
                             reason=why)

    def _delete_volume(self, pool_name: str, volume: str) -> None:
        if self._records.volume(pool_name, volume) is not None:
            try:
                self._volumes.delete(pool_name, volume)
            except NotFound:  # its bytes are gone already
                self._records.delete_volume(pool_name, volume)
            return
        pool = self._records.pool(pool_name)
        if pool is None:
            return
        backend = self._pools.backend(pool)
        with contextlib.suppress(NotFound):
            if volume in backend.list():
                backend.delete(volume)

    # settling on its own
    def reconcile(self) -> None:
        live = self._store.incomings(live_only=True)
        live_ids = {stored.id for stored in live}
        self._running_since = {job_id: since for job_id, since in self._running_since.items()
                               if job_id in live_ids}
        for stored in live:
            lock = self._lock(stored.id)
            if not lock.acquire(blocking=False):
                continue  # a request of the source is on it
            try:
                self._settle(self._get(stored.id))
            except BlockplaneError:
                log.exception("settling incoming migration %s failed", stored.id)
            finally:
                lock.release()

    def _settle(self, stored: StoredIncoming) -> None:
        if stored.phase in (PREPARING, ROLLING_BACK):
            self._roll_back(stored, stored.state.get("error")
                            or "the agent restarted while it prepared")
            return
        present, running, arriving = self._domain_view(stored.vm)
        if stored.phase == FINISHING:
            self._finish(stored)
            return
        if stored.phase == PREPARED and running:
            first_seen = self._running_since.setdefault(stored.id, self._host.clock())
            if self._host.clock() - first_seen >= SETTLE_AFTER_RUNNING_S:
                self._finish(stored)
            return
        self._running_since.pop(stored.id, None)
        expired = self._host.clock() > float(stored.state.get("expires_at", 0))
        if stored.phase == PREPARED and expired and not present and not arriving:
            self._roll_back(stored, f"the source did not come back within {LEASE_S:.0f} s")

    def _get(self, job_id: str) -> StoredIncoming:
        stored = self._store.incoming(job_id)
        if stored is None:
            raise NotFound(f"no migration {job_id} into this host", code="migration.not_found")
        return stored

    def _save(self, stored: StoredIncoming, phase: str, *,
              plan: Mapping[str, Any] | None = None, **state: Any) -> StoredIncoming:
        updated = StoredIncoming(stored.id, stored.vm, phase, {**stored.state, **state},
                                 plan if plan is not None else stored.plan)
        self._store.put_incoming(updated, None, self._host.clock())
        return updated


def _checkpoint_name(document: str) -> str | None:
    try:
        return parse_checkpoint(document).name
    except BlockplaneError:
        return None
