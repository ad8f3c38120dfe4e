"""``CheckpointKeeper``: checkpoints that survive what VMs go through.

libvirt keeps a checkpoint's metadata apart from its bitmaps: the bitmaps live in the qcow2
images, the metadata in libvirt's own state. The metadata is lost where the bitmaps are not:
a migration's destination never gets it, a transient or re-defined domain drops it, a host
whose libvirt state was reset forgets it. So every checkpoint's ``<domaincheckpoint>`` is kept
in blockplane's store (``remember``), and whatever libvirt lacks is defined again from there
(``redefine_checkpoints``, ``VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE``), parents first. A
checkpoint whose bitmap is really gone is redefined all the same and then listed ``broken``.

When: at the agent's first reconcile and every ``SYNC_INTERVAL_S`` after, when a VM starts,
after a backup began (a pull backup at once, a push backup at the next reconcile), and on
request (a migration's destination passes the source's definitions in). Checkpoints deleted
through blockplane are forgotten; one deleted behind its back is defined again. Must not
create or delete checkpoints' bitmaps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from blockplane.backup.records import CheckpointDefinition, CheckpointDefinitions
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, NotFound
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records
from blockplane.xml.chain import parse_checkpoint

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 30.0


@dataclass(frozen=True)
class RedefineFailure:
    name: str
    error: str


@dataclass(frozen=True)
class RedefineResult:
    vm: str
    redefined: tuple[str, ...]
    present: tuple[str, ...]
    failed: tuple[RedefineFailure, ...] = ()


@dataclass(frozen=True)
class CheckpointDefinitionsView:
    """The recorded ``<domaincheckpoint>`` documents of ``vm``, parents first."""

    vm: str
    definitions: tuple[str, ...]


class CheckpointKeeper:
    def __init__(self, chains: ChainService, definitions: CheckpointDefinitions,
                 records: Records, events: EventPublisher) -> None:
        self._chains = chains
        self._definitions = definitions
        self._records = records
        self._events = events
        self._last_sync: float | None = None
        self._jobs_seen_at = 0.0

    def remember(self, vm: str) -> list[str]:
        """Record every checkpoint libvirt has for ``vm`` now; their names, parents first."""
        documents = self._chains.domain(vm).checkpoint_documents(with_sizes=False)
        names = []
        for document in documents:
            parsed = parse_checkpoint(document)
            self._definitions.save(CheckpointDefinition(vm, parsed.name, parsed.parent,
                                                        document, parsed.created_at))
            names.append(parsed.name)
        return names

    def forget(self, vm: str, name: str) -> None:
        self._definitions.delete(vm, name)
        # libvirt re-parented the children of the deleted checkpoint: record them again.
        try:
            self.remember(vm)
        except BlockplaneError:
            log.exception("re-recording the checkpoints of %s failed", vm)

    def definitions(self, vm: str) -> CheckpointDefinitionsView:
        """The recorded ``<domaincheckpoint>`` documents of ``vm``, parents first (what a
        migration's destination is given to redefine)."""
        return CheckpointDefinitionsView(
            vm, tuple(definition.xml for definition in self._definitions.of_vm(vm)))

    def redefine_checkpoints(self, vm: str,
                             documents: Sequence[str] | None = None) -> RedefineResult:
        """Define again, from the store, every checkpoint of ``vm`` that libvirt lacks.

        ``documents``: definitions from elsewhere (a migration's source), recorded first.
        """
        if self._records.vm(vm) is None:
            raise NotFound(f"no VM named {vm!r} is managed by blockplane", code="vm.not_found")
        for document in documents or ():
            parsed = parse_checkpoint(document)
            self._definitions.save(CheckpointDefinition(vm, parsed.name, parsed.parent,
                                                        document, parsed.created_at))
        domain = self._chains.domain(vm)
        present = set(domain.checkpoint_names())
        redefined: list[str] = []
        failed: list[RedefineFailure] = []
        for definition in self._definitions.of_vm(vm):
            if definition.name in present:
                continue
            try:
                domain.redefine_checkpoint(definition.xml)
            except BlockplaneError as error:
                failed.append(RedefineFailure(definition.name, error.message))
                log.warning("redefining checkpoint %s of %s failed: %s", definition.name, vm,
                            error.message)
                continue
            redefined.append(definition.name)
            present.add(definition.name)
        unrecorded = present - {d.name for d in self._definitions.of_vm(vm)}
        if unrecorded:
            self.remember(vm)
        if redefined or failed:
            self._events.publish("checkpoint.redefined", vm, checkpoints=redefined,
                                 failed=[failure.name for failure in failed])
        return RedefineResult(vm, tuple(redefined), tuple(sorted(present)), tuple(failed))

    def remember_new(self, jobs: JobStore) -> None:
        """Record the checkpoints of backups started since the last call (push backups create
        theirs in ``chain.jobs``, which does not tell this keeper)."""
        since, self._jobs_seen_at = self._jobs_seen_at, time.time()
        vms = {stored.state.vm for stored in jobs.created_since(since - 1.0, "backup")
               if stored.spec.checkpoint}
        for vm in sorted(vms):
            try:
                self.remember(vm)
            except BlockplaneError:
                log.exception("recording the checkpoints of %s failed", vm)

    def sync(self, *, force: bool = False) -> list[RedefineResult]:
        """Every managed VM: redefine what libvirt lost, record what it gained. At most once
        per ``SYNC_INTERVAL_S`` unless ``force``."""
        now = time.monotonic()
        if not force and self._last_sync is not None and now - self._last_sync < SYNC_INTERVAL_S:
            return []
        self._last_sync = now
        results = []
        for record in self._records.vms():
            try:
                if self._chains.domain(record.name).unresponsive:
                    continue
                results.append(self.redefine_checkpoints(record.name))
            except BlockplaneError:
                log.exception("keeping the checkpoints of %s failed", record.name)
        return results
