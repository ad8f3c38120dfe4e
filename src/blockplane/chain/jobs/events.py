"""BLOCK_JOB_2 events -> the jobs they concern, in arrival order.

The agent's dispatcher hands each event to ``on_block_job``, which only queues it: one worker
applies them one after another in a thread, so a pivot or a cleanup never holds up other event
types (thin thresholds) and a job sees its READY before its COMPLETED. libvirt names the disk
``vda`` (no index) in these events. A backup sends one event per disk once the whole domain job
ended; its outcome is read from libvirt's completed-job statistics.

libvirt queues a job's end event while it still holds the domain's job in which it applies the
end to the live definition and then saves the status and the persistent config. Acting on the
event at once (recording the outcome, deleting merged images) and then dying with the embedded
libvirt could leave libvirt, after the restart, on the chain from before the job while QEMU runs
the new one. So each end is first settled: asking for the disk's block job takes a domain job
too, and returns only once libvirt has written its change down. Must not start jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from blockplane.chain.jobs.driver import JobDriver
from blockplane.chain.jobs.phases import JobEventObserved
from blockplane.chain.jobs.state import BlockJobStatus, JobKind
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError
from blockplane.hypervisor.domain import JOB_OPERATION_BACKUP
from blockplane.hypervisor.events import BlockJobEvent

log = logging.getLogger(__name__)


class JobEvents:
    def __init__(self, store: JobStore, chains: ChainService, driver: JobDriver) -> None:
        self._store = store
        self._chains = chains
        self._driver = driver
        self._queue: asyncio.Queue[BlockJobEvent] | None = None
        self._worker: asyncio.Future[None] | None = None

    async def on_block_job(self, event: BlockJobEvent) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.ensure_future(self._drain(self._queue))
        self._queue.put_nowait(event)

    async def _drain(self, queue: asyncio.Queue[BlockJobEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                await asyncio.to_thread(self.observe, event)
            except Exception:
                log.exception("handling %s failed", event)

    def observe(self, event: BlockJobEvent) -> None:
        target = event.target.split("[", 1)[0]
        try:
            status = BlockJobStatus(event.status)
        except ValueError:
            return
        if status is not BlockJobStatus.READY:
            self._settle(event.domain, target)
        for stored in self._store.live():
            job = stored.state
            if job.vm != event.domain or target not in stored.spec.targets:
                continue
            seen: BlockJobStatus | None = status
            if job.kind is JobKind.BACKUP:
                seen = self._backup_status(job.vm, status, job.abort_requested)
            if seen is not None:
                self._driver.apply(job.id, JobEventObserved(seen, event.job_type))

    def _settle(self, vm: str, target: str) -> None:
        with contextlib.suppress(BlockplaneError):
            self._chains.domain(vm).block_job_info(target)

    def _backup_status(
        self, vm: str, status: BlockJobStatus, aborting: bool
    ) -> BlockJobStatus | None:
        domain = self._chains.domain(vm)
        if domain.domain_job_active():
            return None  # other disks of the backup are still being copied
        stats = domain.completed_job()
        if stats.get("operation") != JOB_OPERATION_BACKUP or "success" not in stats:
            return status
        if stats["success"]:
            return BlockJobStatus.COMPLETED
        return BlockJobStatus.CANCELED if aborting else BlockJobStatus.FAILED
