"""Copies into thin destinations: sized by the one fill rule, watched on the mirror's own chain
index, and started again when the destination ran out of room.

A copy into a loop or lvm pool makes a thin qcow2 destination that starts at
``storage.fill_size.fill_size(measure_copy(source), chunk, ceiling)``: what the copy writes plus
one chunk, never above the qcow2 ceiling (a dir pool keeps a sparse file of the full size). The
thin monitor tracks it before the mirror starts, and arms it on libvirt's ``<mirror>`` index
(``vda[N]``) as soon as libvirt reports the mirror; from then on it grows on threshold events,
while the copy runs and while the guest writes through the mirror, like any thin volume.

libvirt 11.3 starts QEMU's mirror with the target error action ``report``, and offers no way to
change it: a destination that runs out of room (an extend later than the mirror's writes, or a
pool that cannot give more) fails the job, and never pauses the VM, which goes on on its source.
Such a failure of a thin copy is answered by a restart (``CopyRestarts``): the destination is
grown to ``fill_size`` of what the source holds now, formatted again and copied into from the
start, at most ``MAX_RESTARTS`` times; a pool that cannot grow it fails the job cleanly. Must not
decide job phases (``phases`` does) or call libvirt other than through ``DomainHandle``.
"""

from __future__ import annotations

import logging

from blockplane.chain.jobs.spec import JobSpec, VolumeRef
from blockplane.chain.jobs.state import JobKind, JobPhase, JobState, Outcome
from blockplane.chain.jobs.store import StoredJob
from blockplane.chain.ports import ThinHook
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, Conflict
from blockplane.model.chain import Chain
from blockplane.storage.fill_size import fill_size
from blockplane.storage.images import create_qcow2, is_block_device, measure_copy
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.store.events import EventPublisher
from blockplane.store.records import PoolRecord, Records, VolumeRecord
from blockplane.xml.chain import ImageTarget, copy_destination_xml

log = logging.getLogger(__name__)

#: Pools whose volumes grow on demand; a copy into them makes a thin destination.
GROWABLE_POOLS = ("loop", "lvm")
MAX_RESTARTS = 2


def destination_size(
    pool: PoolRecord, source_path: str, *, shallow: bool, virtual_bytes: int
) -> int | None:
    """The starting physical size of a thin copy destination in ``pool``; None where the pool
    does not grow volumes (a dir pool: a sparse file of the whole size)."""
    if pool.type not in GROWABLE_POOLS:
        return None
    return fill_size(measure_copy(source_path, shallow=shallow), chunk_bytes=pool.chunk_bytes,
                     ceiling_bytes=qcow2_max_physical(virtual_bytes))


def destination_xml(target: str, path: str) -> str:
    """The ``<disk>`` libvirt mirrors ``target`` into: the block device or file at ``path``."""
    return copy_destination_xml(
        ImageTarget(target, "block" if is_block_device(path) else "file", path))


class ThinCopies:
    """The thin monitor's part in a copy: track, arm on the mirror, restart when short."""

    def __init__(self, chains: ChainService, records: Records, thin: ThinHook | None) -> None:
        self._chains = chains
        self._records = records
        self._thin = thin

    @property
    def enabled(self) -> bool:
        """Without a thin monitor a destination that cannot grow by itself must be full size."""
        return self._thin is not None

    def before_mirror(self, vm: str, target: str, record: VolumeRecord) -> None:
        """Track a thin destination before the mirror starts, so no event finds it unknown."""
        if self._thin is not None and record.thin:
            self._thin.track(vm, target, record)

    def mirror_started(self, vm: str, target: str, ref: VolumeRef) -> None:
        """Arm the destination on the mirror's chain index, read from the live XML. A failure
        is left to the thin reconcile, which finds the node in the bulk stats by its path."""
        record = self._records.volume(ref.pool, ref.volume)
        if self._thin is None or record is None or not record.thin:
            return
        try:
            chain = self._chains.read(self._chains.domain(vm), target)
            index = _mirror_index(chain, ref.path)
            self._thin.watch_mirror(vm, (ref.pool, ref.volume), index)
        except BlockplaneError:
            log.exception("arming the copy destination %s/%s failed; the thin reconcile arms it",
                          ref.pool, ref.volume)


class CopyRestarts:
    """Starts a thin copy again after its destination ran out of room (see the module doc)."""

    def __init__(
        self, chains: ChainService, records: Records, copies: ThinCopies, thin: ThinHook | None,
        events: EventPublisher,
    ) -> None:
        self._chains = chains
        self._records = records
        self._copies = copies
        self._thin = thin
        self._events = events

    def wanted(self, stored: StoredJob, ended: JobState) -> str | None:
        """Why ``stored``, which ``ended`` as FAILED, should start again; None if it should not.

        Only a copy into a monitored thin destination that shows it ran short: the source now
        needs more room than it has (said first: it has the numbers), or a threshold of it fired
        during the copy (whichever reconcile, of the thin volumes or of the jobs, ran first).
        """
        job, spec = stored.state, stored.spec
        if (job.kind is not JobKind.COPY or job.phase not in (JobPhase.RUNNING, JobPhase.READY)
                or job.abort_requested
                or ended.outcome is not Outcome.FAILED or job.restarts >= MAX_RESTARTS
                or self._thin is None or spec.destination is None or spec.top_path is None):
            return None
        ref = spec.destination
        record = self._records.volume(ref.pool, ref.volume)
        if record is None or not record.thin or not self._vm_running(job.vm):
            return None  # a VM that stopped took the copy with it: no room would help
        try:
            needed: int | None = self._needed(spec, record)
        except BlockplaneError:
            needed = None
        if needed is not None and needed > record.physical_bytes:
            return (f"the source needs {needed} bytes of the destination, which holds "
                    f"{record.physical_bytes}")
        if self._thin.crossed((ref.pool, ref.volume)):
            return "a write threshold of the destination fired before the copy failed"
        return None

    def restart(self, stored: StoredJob, reason: str) -> None:
        """Grow the destination, format it again and start the mirror again; raises on any
        failure (Conflict ``pool.full`` when the pool cannot give the room)."""
        job, spec = stored.state, stored.spec
        assert spec.destination is not None and spec.top_path is not None
        assert self._thin is not None
        ref = spec.destination
        domain = self._chains.domain(job.vm)
        if not domain.is_active():
            raise Conflict(f"VM {job.vm} is not running", code="vm.not_running")
        chain = self._chains.read(domain, job.target)
        if chain.mirror is not None or chain.top.path != spec.top_path:
            now = (f"libvirt still shows a mirror to {chain.mirror.path}" if chain.mirror
                   else f"its top is {chain.top.path}")
            raise Conflict(f"the chain of {job.vm}/{job.target} changed under the copy: {now}",
                           code="chain.changed")
        record = self._records.volume(ref.pool, ref.volume)
        if record is None:
            raise Conflict(f"the destination {ref.volume} is gone", code="volume.not_found")
        try:
            self._thin.refill((ref.pool, ref.volume), self._measure(spec))
        except Conflict as error:
            raise Conflict(f"the copy's destination ran out of room and cannot grow: "
                           f"{error.message}", code=error.code) from error
        backing = chain.elements[1] if spec.shallow and len(chain.elements) > 1 else None
        create_qcow2(ref.path, record.virtual_bytes, backing.path if backing else None,
                     backing.format if backing else None)
        domain.block_copy(job.target, destination_xml(job.target, ref.path), spec.bandwidth,
                          shallow=spec.shallow, synchronous_writes=spec.synchronous_writes)
        self._copies.mirror_started(job.vm, job.target, ref)
        self._events.publish("job.copy_restarted", job.vm, job=job.id, target=job.target,
                             volume=ref.volume, pool=ref.pool, reason=reason,
                             restarts=job.restarts)

    def _vm_running(self, vm: str) -> bool:
        try:
            return self._chains.domain(vm).is_active()
        except BlockplaneError:
            return False

    def _needed(self, spec: JobSpec, record: VolumeRecord) -> int:
        return fill_size(self._measure(spec), chunk_bytes=self._chunk(record),
                         ceiling_bytes=qcow2_max_physical(record.virtual_bytes))

    def _measure(self, spec: JobSpec) -> int:
        assert spec.top_path is not None
        return measure_copy(spec.top_path, shallow=spec.shallow)

    def _chunk(self, record: VolumeRecord) -> int:
        pool = self._records.pool(record.pool)
        if pool is None:
            raise Conflict(f"pool {record.pool} is gone", code="pool.not_found")
        return pool.chunk_bytes


def _mirror_index(chain: Chain, path: str) -> int | None:
    mirror = chain.mirror
    if mirror is None or mirror.path != path:
        return None
    return mirror.libvirt_index
