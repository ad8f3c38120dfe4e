"""``vm adopt``: take a domain some platform defined under management, as it is.

Sequence: look the domain up (running or not), read its XML into an inventory, locate each
disk's images in the pools, read the managed disks' chains (the live XML's, or the images' own
backing records for a stopped VM) and sizes, the block jobs and checkpoints; judge it all
(``vms.adopt_plan``): a refusal records nothing. Then every row is written in ONE transaction:
the VM, the new volumes, the disks, their chain volumes, the block jobs to track and the
adoption record, so an agent killed at any point leaves the VM either fully managed or not at
all. Only then are thin volumes armed (a restarted agent arms what it finds recorded).

Must not change the domain: no define, no device change, no IOThread, nothing the guest sees.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import LIBVIRT_JOB_TYPES, JobKind, JobPhase, new_job
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.ports import ThinHook
from blockplane.deadlines import BoundedLock
from blockplane.errors import BlockplaneError, NotFound
from blockplane.failpoints import failpoint
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.domain import DomainHandle
from blockplane.model.inventory import ChainLink, DiskInventory
from blockplane.storage.images import image_layer
from blockplane.storage.names import validate_name
from blockplane.storage.pools import PoolService
from blockplane.storage.volume_paths import Location, VolumeLocator, parse_pool_for
from blockplane.store.adoption import AdoptionRecord, AdoptionRecords
from blockplane.store.chain_records import ChainRecords, ChainVolumeRecord
from blockplane.store.database import Database
from blockplane.store.events import EventPublisher
from blockplane.store.records import DiskRecord, Records, VMRecord, VolumeRecord
from blockplane.vms.adopt_plan import (
    AdoptionPlan,
    ChainRead,
    Claims,
    ImageInfo,
    Observed,
    judge,
)
from blockplane.xml.inventory import parse_inventory

log = logging.getLogger(__name__)

#: The longest backing chain read from the images of a stopped VM (a loop guard).
MAX_CHAIN = 256


@dataclass(frozen=True)
class AdoptResult:
    vm: str
    running: bool
    disks: list[dict[str, Any]]
    foreign: list[dict[str, Any]]
    reserved_iothreads: list[int]
    throttle_groups: list[dict[str, object]]
    iotune: dict[str, dict[str, int]]
    checkpoints: list[str]
    jobs: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class AdoptService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        database: Database,
        records: Records,
        chain_records: ChainRecords,
        jobs: JobStore,
        adoptions: AdoptionRecords,
        pools: PoolService,
        events: EventPublisher,
        vm_lock: Callable[[str], BoundedLock],
        thin: ThinHook | None,
    ) -> None:
        self._hypervisor = hypervisor
        self._database = database
        self._records = records
        self._chain = chain_records
        self._jobs = jobs
        self._adoptions = adoptions
        self._pools = pools
        self._events = events
        self._vm_lock = vm_lock
        self._thin = thin

    def adopt(self, name: str, pool_for: Sequence[str] = ()) -> AdoptResult:
        validate_name("vm", name)
        rules = parse_pool_for(pool_for, self._records.pools())
        started = time.monotonic()
        with self._vm_lock(name):
            domain = self._hypervisor.lookup(name)
            observed = self._observe(domain, VolumeLocator(self._records.pools(), rules))
            judge(observed, self._claims())  # refuse before anything else happens
            failpoint("adopt.before_records")
            plan, jobs = self._record(observed)
            failpoint("adopt.after_records")
            self._arm(plan)
        result = AdoptResult(
            vm=name,
            running=plan.running,
            disks=[disk.to_json() for disk in plan.disks],
            foreign=[item.to_json() for item in plan.foreign],
            reserved_iothreads=list(plan.reserved_iothreads),
            throttle_groups=plan.report_json()["throttle_groups"],
            iotune=plan.report_json()["iotune"],
            checkpoints=list(plan.checkpoints),
            jobs=jobs,
            seconds=round(time.monotonic() - started, 3),
        )
        self._events.publish(
            "vm.adopted", name, disks=[d.disk.target for d in plan.disks],
            foreign=[f.disk.target for f in plan.foreign],
            reserved_iothreads=list(plan.reserved_iothreads), jobs=jobs,
        )
        return result

    # observing
    def _observe(self, domain: DomainHandle, locator: VolumeLocator) -> Observed:
        running = domain.is_active()
        inventory = parse_inventory(domain.xml(inactive=not running))
        locations: dict[str, Location] = {}
        images: dict[str, ImageInfo] = {}
        chains: dict[str, ChainRead] = {}
        jobs: dict[str, int] = {}
        for disk in inventory.disks:
            if disk.path is None:
                continue
            locations[disk.path] = locator.locate(disk.path)
            top = locations[disk.path]
            if disk.device != "disk" or top.foreign or top.refusal is not None:
                continue
            chain = self._chain_of(disk)
            chains[disk.target] = chain
            for link in chain.links:
                where = locations.setdefault(link.path, locator.locate(link.path))
                images[link.path] = self._measure(link, where)
            if running:
                job_type = self._job_type(domain, disk.target)
                if job_type is not None:
                    jobs[disk.target] = job_type
        checkpoints = self._quietly(domain.checkpoint_names) or []
        pool_types = {pool.name: pool.type for pool in self._records.pools()}
        return Observed(inventory, running, chains, locations, images, pool_types, jobs,
                        tuple(checkpoints))

    def _chain_of(self, disk: DiskInventory) -> ChainRead:
        """The live XML's chain, or (inactive XML) the one the images record, top first."""
        links = list(disk.chain)
        if disk.chain_complete:
            missing = next((link.path for link in links if not os.path.lexists(link.path)),
                           None)
            return ChainRead(tuple(links), missing)
        links = links[:1]
        while len(links) < MAX_CHAIN:
            current = links[-1]
            if not os.path.exists(current.path):
                return ChainRead(tuple(links), current.path)
            try:
                layer = image_layer(current.path)
            except BlockplaneError as error:
                return ChainRead(tuple(links), error=error.message)
            if layer.backing_path is None:
                return ChainRead(tuple(links))
            links.append(ChainLink(layer.backing_path, layer.backing_format,
                                   "block" if _is_block(layer.backing_path) else "file"))
        return ChainRead(tuple(links), error=f"longer than {MAX_CHAIN} images")

    def _measure(self, link: ChainLink, where: Location) -> ImageInfo:
        if not os.path.exists(link.path):
            return ImageInfo(exists=False)
        if where.pool is None or where.volume is None:
            return ImageInfo(exists=True)
        try:
            layer = image_layer(link.path)
            backend = self._pools.backend(self._pools.get(where.pool))
            physical = backend.physical_size(where.volume)
        except BlockplaneError as error:
            return ImageInfo(exists=True, error=error.message)
        return ImageInfo(True, layer.virtual_bytes, physical, _is_block(link.path))

    def _job_type(self, domain: DomainHandle, target: str) -> int | None:
        """libvirt's type of the block job running on ``target``, if it is one we follow."""
        try:
            info = domain.block_job_info(target)
        except BlockplaneError as error:
            log.info("adopt: %s", error.message)
            return None
        if info is None or info.job_type not in LIBVIRT_JOB_TYPES:
            return None
        return info.job_type

    @staticmethod
    def _quietly(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except BlockplaneError as error:
            log.info("adopt: %s", error.message)
            return None

    def _claims(self) -> Claims:
        users: dict[tuple[str, str], str] = {}
        vms = self._records.vms()
        for vm in vms:
            for disk in self._records.disks(vm.name):
                users[(disk.pool, disk.volume)] = vm.name
        for row in self._chain.volumes():
            users.setdefault((row.pool, row.volume), row.vm)
        return Claims(
            vm_names=frozenset(vm.name for vm in vms),
            vm_uuids=frozenset(vm.uuid for vm in vms),
            volume_users=users,
            recorded_volumes=frozenset((v.pool, v.name) for v in self._records.volumes()),
        )

    # recording
    def _record(self, observed: Observed) -> tuple[AdoptionPlan, list[str]]:
        """Every row of the adoption, in one transaction; the plan and the ids of the jobs
        now tracked. The claims are judged again inside it: no other writer can record a VM
        or a volume between that judgement and these rows."""
        jobs: list[str] = []
        with self._database.transaction():
            plan = judge(observed, self._claims())
            inventory = plan.inventory
            vm = inventory.name
            self._records.add_vm(VMRecord(vm, inventory.uuid or str(uuid.uuid4()),
                                          inventory.vcpus, inventory.memory_bytes, "none"))
            for disk in plan.disks:
                for image in disk.images:
                    if not image.recorded:
                        self._records.add_volume(VolumeRecord(
                            image.pool, image.volume, image.path, image.format,
                            image.virtual_bytes, image.physical_bytes,
                            disk.thin and image is disk.top))
                    self._chain.add_volume(ChainVolumeRecord(
                        image.pool, image.volume, vm, disk.disk.target, image.path,
                        "in_chain", "adopted"))
                self._records.add_disk(DiskRecord(vm, disk.disk.target, disk.top.pool,
                                                  disk.top.volume, disk.disk.bus,
                                                  disk.plan_json()))
                failpoint("adopt.in_records")
                if disk.block_job is not None:
                    jobs.append(self._track_job(vm, disk.disk, disk.block_job))
            self._adoptions.add(AdoptionRecord(
                vm=vm,
                reserved_iothreads=plan.reserved_iothreads,
                foreign_disks=tuple(item.to_json() for item in plan.foreign),
                foreign_paths=plan.foreign_paths,
                report=plan.report_json(),
            ))
        return plan, jobs

    def _track_job(self, vm: str, disk: DiskInventory, job_type: int) -> str:
        """A block job someone else started: followed from now on like one of ours."""
        kind = LIBVIRT_JOB_TYPES[job_type]
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        job = dataclasses.replace(new_job(job_id, vm, disk.target, kind, now=now),
                                  phase=JobPhase.RUNNING)
        spec = JobSpec(targets=(disk.target,), top_path=disk.path,
                       new_top_path=disk.mirror_path if kind.mirrors else None)
        if kind is JobKind.BACKUP:
            spec = JobSpec(targets=(disk.target,))
        self._jobs.insert_if_free(job, spec)
        return job_id

    def _arm(self, plan: AdoptionPlan) -> None:
        if self._thin is None:
            return
        for disk in plan.disks:
            if not disk.thin:
                continue
            record = self._records.volume(disk.top.pool, disk.top.volume)
            if record is None:
                continue
            try:
                self._thin.track(plan.inventory.name, disk.disk.target, record)
            except BlockplaneError:
                log.exception("arming adopted thin volume %s/%s failed; reconcile retries",
                              record.pool, record.name)

    def record(self, vm: str) -> AdoptionRecord:
        record = self._adoptions.get(vm)
        if record is None:
            raise NotFound(f"VM {vm} was not adopted", code="vm.not_adopted")
        return record


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
