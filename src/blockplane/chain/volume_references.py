"""The image paths the chain package holds on to, for ``volume list|delete`` (a
``storage.volume_usage.ReferenceSource``).

Three sources, each named so a refusal says who holds the volume: the chain records (a volume
being made for a job or snapshot, or recorded in a chain), every managed VM's backing chains as
libvirt shows them now (with a copy's mirror), and every job not yet DONE, FAILED or ABORTED
(its source, base, destination and the images it drops). A VM whose chain cannot be read is
reported as unreadable, never as unused. Must not delete or change anything.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

from blockplane.chain.jobs.store import JobStore
from blockplane.chain.service import ChainService
from blockplane.errors import BlockplaneError, NotFound
from blockplane.storage.volume_usage import VolumeReferences, canonical
from blockplane.store.chain_records import ChainRecords
from blockplane.store.records import Records
from blockplane.xml.backing_chain import parse_chain

_ROW_STATES = {
    "creating": "a job or snapshot of {vm}/{target} being prepared",
    "in_chain": "the backing chain of {vm}/{target}",
}


class ChainVolumeReferences:
    def __init__(self, records: Records, chain_records: ChainRecords, chains: ChainService,
                 store: JobStore) -> None:
        self._records = records
        self._chain = chain_records
        self._chains = chains
        self._store = store

    def __call__(self) -> VolumeReferences:
        by_path: defaultdict[str, list[str]] = defaultdict(list)
        unreadable = []
        for row in self._chain.volumes():
            template = _ROW_STATES.get(row.state)
            if template is not None:
                by_path[canonical(row.path)].append(template.format(vm=row.vm,
                                                                    target=row.target))
        for vm in self._records.vms():
            try:
                paths = self._chains.disk_paths(vm.name)
            except BlockplaneError as error:
                unreadable.append(f"the chains of VM {vm.name} cannot be read ({error.message})")
                continue
            for path in paths:
                by_path[canonical(path)].append(f"the backing chain of VM {vm.name}")
        for job in self._store.live():
            for path in job.spec.paths():
                by_path[canonical(path)].append(
                    f"{job.state.kind.value} job {job.id} of {job.state.vm}")
        return VolumeReferences({path: list(dict.fromkeys(users))
                                 for path, users in by_path.items()}, unreadable)

    def live_users(self, path: str) -> list[str]:
        """Who uses ``path`` now, by the live chains and the live jobs only (the chain records
        of a disk being released are not users). Used for images that are never a backing
        file (rbd: blockplane makes no overlay on one), so where a chain is only partly known
        (a stopped VM's definition) its known elements decide; a VM whose definition cannot
        be read at all counts as a user: never delete what cannot be checked."""
        wanted = canonical(path)
        users: list[str] = []
        for vm in self._records.vms():
            try:
                paths = self._known_paths(vm.name)
            except BlockplaneError as error:
                users.append(f"VM {vm.name}, whose chains cannot be read ({error.message})")
                continue
            if wanted in {canonical(found) for found in paths}:
                users.append(f"the backing chain of VM {vm.name}")
        for job in self._store.live():
            if wanted in {canonical(found) for found in job.spec.paths()}:
                users.append(f"{job.state.kind.value} job {job.id} of {job.state.vm}")
        return list(dict.fromkeys(users))

    def _known_paths(self, vm: str) -> set[str]:
        try:
            return self._chains.disk_paths(vm)
        except NotFound:
            raise
        except BlockplaneError:
            pass  # a chain not fully known: its known elements
        domain = self._chains.domain(vm)
        views = [domain.xml(inactive=True)]
        if domain.is_active():
            views.append(domain.xml())
        paths: set[str] = set()
        for disk in self._records.disks(vm):
            for xml in views:
                with contextlib.suppress(NotFound):
                    paths.update(parse_chain(xml, disk.target).paths())
        return paths
