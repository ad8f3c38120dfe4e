"""``build_services(settings) -> Services``: the composition root, wired through constructors.

Every service gets its collaborators when it is built, and nothing is assigned onto an object
afterwards. The order below is the order of dependencies: storage, VMs and their locks, the
features that observe disks (throttle limits, the thin monitor, the chain volumes, which need
what live jobs hold), then the disk service with that fixed set of observers, the jobs and
snapshots, and last the observers of the whole host. The intent registry, the reconcile steps
(full and quick) and the event handlers are plain values of ``Services``, which the agent
runs. Owns no behaviour beyond choosing who gets what.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.adoption.wiring import AdoptionServices
from blockplane.backup.tcp_export import TcpExports
from blockplane.backup.wiring import BackupServices, checkpoint_keeper
from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.jobs.cleanup import JobCleanup
from blockplane.chain.jobs.driver import JobDriver
from blockplane.chain.jobs.events import JobEvents
from blockplane.chain.jobs.holds import JobHolds
from blockplane.chain.jobs.rbd_copies import RbdCopies
from blockplane.chain.jobs.reconcile import JobReconciler
from blockplane.chain.jobs.service import JobsService
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.jobs.thin_copy import CopyRestarts, ThinCopies
from blockplane.chain.persistent_chains import PersistentChains
from blockplane.chain.rbd_snapshots import RbdSnapshots
from blockplane.chain.reconcile import ChainReconciler
from blockplane.chain.service import ChainService
from blockplane.chain.snapshots import SnapshotService
from blockplane.chain.volume_references import ChainVolumeReferences
from blockplane.chain.volumes import ChainVolumes
from blockplane.config import Settings
from blockplane.facts.host import HostFacts, LibvirtRuntime, gather_host_facts
from blockplane.facts.kernel_probe import ProbeKernel
from blockplane.home import ensure_room_to_start, prepare_home
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.events import (
    BlockJobEvent,
    BlockThresholdEvent,
    HypervisorEvent,
    IOErrorEvent,
    LifecycleEvent,
)
from blockplane.hypervisor.secrets import SecretStore
from blockplane.iothreads import MappingSupport
from blockplane.iothreads.apply import HostIOThreadLimits, IOThreadApplier
from blockplane.metrics import AgentMetrics
from blockplane.migration.peer_store import PeerStore
from blockplane.migration.peers import PeerService
from blockplane.migration.wiring import MigrationServices
from blockplane.model.ceph import CephHealth
from blockplane.observe.collector import ObserveCollector
from blockplane.observe.confirm import Confirmer
from blockplane.observe.reconcile import ReconcileLog
from blockplane.observe.top import TopService
from blockplane.runtime.eventlog import EventLog
from blockplane.storage.pool_volumes import PoolVolumes
from blockplane.storage.pools import PoolService
from blockplane.storage.rbd_pools import RbdPools
from blockplane.storage.volumes import VolumeService
from blockplane.store.adoption import AdoptionRecords
from blockplane.store.chain_records import ChainRecords
from blockplane.store.database import Database
from blockplane.store.intents import IntentRecovery
from blockplane.store.pending import PendingOperations
from blockplane.store.rbd_pools import RbdPoolStore
from blockplane.store.records import Records
from blockplane.store.throttle_records import ThrottleRecords
from blockplane.thin.monitor import ThinMonitor
from blockplane.throttle.disk_limits import DiskThrottle
from blockplane.throttle.rescale import DiskRescaler
from blockplane.throttle.service import DELETE_INTENT, SET_INTENT, ThrottleService
from blockplane.vms.disks import DiskService
from blockplane.vms.foreign import ForeignDisks
from blockplane.vms.lifecycle import VMService, emulator_path
from blockplane.vms.locks import VMLocks
from blockplane.vms.observers import DiskObservers
from blockplane.vms.provision import Provisioner
from blockplane.vms.recovery import DiskRecovery

#: One handler per hypervisor event type (``hypervisor.events``).
Handler = Callable[[Any], Awaitable[None]]
#: One step of the periodic reconcile; a mapping it returns is recorded as counts.
ReconcileStep = Callable[[], object]
#: A task the agent runs in the background while it serves.
BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Services:
    settings: Settings
    hypervisor: Hypervisor
    database: Database
    records: Records
    events: EventLog
    metrics: AgentMetrics
    facts: HostFacts
    #: libvirt secrets (the cephx keys of rbd pools); closed after the API stops.
    secrets: SecretStore
    #: rbd pools' clusters; their health probe runs while the agent serves.
    rbd: RbdPools
    pools: PoolService
    volumes: VolumeService
    pool_volumes: PoolVolumes
    vms: VMService
    disks: DiskService
    provisioner: Provisioner
    throttle: ThrottleService
    thin: ThinMonitor
    chains: ChainService
    snapshots: SnapshotService
    jobs: JobsService
    checkpoints: CheckpointService
    top: TopService
    reconcile_log: ReconcileLog
    confirmer: Confirmer
    intents: IntentRecovery
    peers: PeerService
    adoption: AdoptionServices
    backups: BackupServices
    migrations: MigrationServices
    #: A full pass (at start, after a reconnect, every ``full_reconcile_interval_s``): every
    #: step looks at everything, in this order; the confirmation last, after every feature's.
    reconcilers: tuple[ReconcileStep, ...]
    #: A quick pass (every ``reconcile_interval_s`` in between): only what changed since the
    #: last pass (``runtime.reconcile_schedule``).
    quick_reconcilers: tuple[ReconcileStep, ...]
    handlers: Mapping[type[HypervisorEvent], Handler]
    background: tuple[BackgroundTask, ...] = ()


def build_services(settings: Settings) -> Services:
    hypervisor = Hypervisor(settings.libvirt_uri)
    ensure_room_to_start(settings.paths, hypervisor.is_embedded)
    prepare_home(settings.paths, hypervisor.is_embedded)
    database = Database(settings.paths.database)
    records = Records(database)
    events = EventLog(records)
    metrics = AgentMetrics()
    hypervisor.open()
    facts = host_facts(settings, hypervisor)
    pending = PendingOperations(database)
    limits = iothread_limits(settings, facts)
    locks = VMLocks()

    secrets = SecretStore(hypervisor)
    secrets.open()  # before any VM with an rbd disk starts on an embedded libvirt
    rbd = RbdPools(RbdPoolStore(database), secrets,
                   health_listeners=(lambda health: record_ceph_health(metrics, health),))
    pools = PoolService(settings, records, events, rbd)
    volumes = VolumeService(pools, records, events)
    adoptions = AdoptionRecords(database)
    foreign = ForeignDisks(adoptions)
    vms = VMService(settings, hypervisor, records, events,
                    "kvm" if facts.accel.selected == "kvm" else "qemu", emulator_path(),
                    adoptions)

    throttle_capability = facts.capabilities["throttle_groups"]
    throttle_records = ThrottleRecords(database)
    throttle = ThrottleService(vms.domain, locks.lock_for, events, throttle_capability, pending)
    throttle_disks = DiskThrottle(vms.domain, throttle_records, events, throttle_capability)
    rescaler = DiskRescaler(vms.domain, locks.lock_for, throttle_records, events)
    thin = ThinMonitor(hypervisor, pools, records, database, events, metrics)

    chain_records = ChainRecords(database)
    job_store = JobStore(database)
    rbd_snapshots = RbdSnapshots(pools, records, chain_records)
    chains = ChainService(vms, records, chain_records, rbd=rbd_snapshots)
    volume_references = ChainVolumeReferences(records, chain_records, chains, job_store)
    holds = JobHolds(job_store, chains, locks)
    chain_volumes = ChainVolumes(records, chain_records, pools, volumes, events, thin,
                                 references=holds.referenced_paths, preparing=holds.preparing)
    chain_volumes.adopt_untracked()

    observers = DiskObservers(throttle_disks, thin, chain_volumes)
    disks = DiskService(vms, pools, volumes, records, events, IOThreadApplier(limits), pending,
                        locks, observers, guards=(holds.refuse_if_busy,), throttle=throttle_disks,
                        adopted=foreign, volume_users=volume_references.live_users)
    recovery = DiskRecovery(hypervisor, records, pools, volumes, events, observers)
    intents = IntentRecovery(pending, {
        # Throttle intents first, as before the registry: they never touch a disk.
        SET_INTENT: throttle.recover_intent,
        DELETE_INTENT: throttle.recover_intent,
        "disk.attach": recovery.recover_intent,
        "disk.detach": recovery.recover_intent,
    }, locks.lock_for, wait_for=lambda vm: vm in hypervisor.unresponsive_domains())

    thin_copies = ThinCopies(chains, records, thin)
    restarts = CopyRestarts(chains, records, thin_copies, thin, events)
    rbd_copies = RbdCopies(pools, records)
    driver = JobDriver(job_store, chains,
                       JobCleanup(chain_volumes, rbd_copies.forget_failed_backup), events,
                       restarts=restarts)
    job_reconciler = JobReconciler(job_store, chains, driver)
    jobs = JobsService(job_store, chains, driver, job_reconciler, chain_volumes, pools, records,
                       locks, thin, thin_copies, rbd_copies, foreign=foreign,
                       rbd_mapping=limits.support_rbd)
    snapshots = SnapshotService(chains, locks, records, chain_records, chain_volumes, job_store,
                                events, foreign=foreign, rbd=rbd_snapshots)
    keeper = checkpoint_keeper(chains, database, records, events)
    checkpoints = CheckpointService(chains, job_store, records, events, locks.lock_for,
                                    foreign=foreign, deleted=keeper.forget)
    backups = BackupServices.build(
        keeper, jobs, job_store, chains, checkpoints, chain_volumes, volumes, pools, disks,
        records, database, events, thin, settings.paths.home,
        TcpExports(settings.paths.home, settings.listen,
                   settings.paths.libvirt_root if hypervisor.is_embedded else None).endpoint,
    )
    adoption = AdoptionServices.build(hypervisor, database, records, adoptions, disks, pools,
                                      volumes, events, thin, locks.lock_for, pending)
    persistent = PersistentChains(chains, records, chain_records, job_store, vms.redefine, events)
    pool_volumes = PoolVolumes(pools, volumes, records, events, volume_references, thin.forget)

    peers = PeerService(PeerStore(database), events)
    migrations = MigrationServices.build(
        settings, hypervisor, database, records, pools, volumes, peers, events,
        limits=lambda: limits, capabilities=lambda: facts.capabilities, facts=facts.to_json,
        vm_lock=locks.lock_for, chain_busy=lambda vm: holds.refuse_if_busy(vm, None),
        thin_track=thin.track, forget_thin=thin.forget,
    )  # fmt: skip

    reconcile_log = ReconcileLog()
    confirmer = Confirmer(hypervisor.lookup, records, events, thin, hypervisor.stats_reuse.scope)
    top = TopService(hypervisor, records, events, jobs)
    chain_reconciler = ChainReconciler(persistent, snapshots, jobs)
    metrics.registry.register(ObserveCollector(top, reconcile_log))

    return Services(
        settings=settings,
        hypervisor=hypervisor,
        database=database,
        records=records,
        events=events,
        metrics=metrics,
        facts=facts,
        secrets=secrets,
        rbd=rbd,
        pools=pools,
        volumes=volumes,
        pool_volumes=pool_volumes,
        vms=vms,
        disks=disks,
        provisioner=Provisioner(vms, disks),
        throttle=throttle,
        thin=thin,
        chains=chains,
        snapshots=snapshots,
        jobs=jobs,
        checkpoints=checkpoints,
        top=top,
        reconcile_log=reconcile_log,
        confirmer=confirmer,
        intents=intents,
        peers=peers,
        adoption=adoption,
        backups=backups,
        migrations=migrations,
        reconcilers=(
            rescaler.reconcile,
            thin.reconcile,
            chain_reconciler.run,
            backups.reconcile,
            adoption.watch.reconcile,
            migrations.reconcile,
            confirmer.run_full,
        ),
        # No capacity rescale: a resize made outside blockplane is caught by the next full pass.
        # The chain, backup, adoption and migration steps cost one SQL query each while no job
        # runs, no export is open, nothing is adopted and nothing migrates.
        quick_reconcilers=(
            thin.quick_reconcile,
            chain_reconciler.run,
            backups.reconcile,
            adoption.watch.reconcile,
            migrations.reconcile,
            confirmer.run,
        ),
        handlers={
            LifecycleEvent: backups.on_lifecycle(vms.on_lifecycle),
            BlockThresholdEvent: thin.on_threshold,
            IOErrorEvent: thin.on_io_error,
            BlockJobEvent: JobEvents(job_store, chains, driver).on_block_job,
        },
        background=(backups.watch_refusals(events),),
    )


def host_facts(settings: Settings, hypervisor: Hypervisor) -> HostFacts:
    versions = hypervisor.versions()
    try:
        domain_caps: str | None = hypervisor.domain_capabilities("qemu")
    except Exception:  # a host without TCG support still reports its versions
        domain_caps = None
    return gather_host_facts(
        LibvirtRuntime(
            library_version=versions.library,
            daemon_version=versions.daemon,
            uri=versions.uri,
        ),
        domain_caps,
        requested_accel=settings.accel,
        linux=ProbeKernel.in_images(settings.paths.images),
    )


def record_ceph_health(metrics: AgentMetrics, health: CephHealth) -> None:
    """Each probe's verdict on an rbd pool's cluster, as ``/v1/metrics`` gauges."""
    metrics.ceph_pool_healthy.labels(health.pool).set(1 if health.healthy else 0)
    metrics.ceph_probe_seconds.labels(health.pool).set(health.probe_seconds or 0)
    since = health.unhealthy_since
    metrics.ceph_unhealthy_seconds.labels(health.pool).set(
        time.time() - since if since is not None else 0)


def iothread_limits(settings: Settings, facts: HostFacts) -> HostIOThreadLimits:
    blk = facts.capabilities["iothread_vq_mapping"]
    scsi = facts.capabilities["scsi_iothread_vq_mapping"]
    throttled = facts.capabilities["throttle_multi_iothread"]
    rbd = facts.capabilities["rbd_multi_iothread"]
    return HostIOThreadLimits(
        host_cpus=facts.cpus or 1,
        host_cap=settings.iothread_cap,
        support_blk=MappingSupport(blk.supported, blk.reason),
        support_scsi=MappingSupport(scsi.supported, scsi.reason),
        support_throttled=MappingSupport(throttled.supported, throttled.reason),
        support_rbd=MappingSupport(rbd.supported, rbd.reason),
    )
