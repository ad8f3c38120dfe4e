"""``ChainService``: a disk's backing chain as users see it, with sizes, and the chain reads the
snapshot and job services share.

The chain comes from the live domain XML (``xml.backing_chain``), or the inactive XML when the VM
is off; each element gets its virtual size from ``qemu-img info -U`` and its allocation from the
same (files) or from libvirt's block stats (block devices, where the host cannot tell). Elements
are named as ``addressing`` says. Must not start jobs or change any chain.
"""

from __future__ import annotations

import contextlib
import dataclasses

from blockplane.chain.addressing import resolve_element
from blockplane.chain.rbd_snapshots import RbdSnapshots
from blockplane.chain.views import ChainElementView, ChainView, MirrorView, RbdSnapshotView
from blockplane.errors import BlockplaneError, NotFound
from blockplane.hypervisor.bulk_stats import chain_nodes
from blockplane.hypervisor.domain import DomainHandle
from blockplane.model.chain import Chain, ChainElement
from blockplane.storage.images import image_facts
from blockplane.storage.volume_usage import canonical
from blockplane.store.chain_records import ChainRecords
from blockplane.store.records import Records
from blockplane.vms.lifecycle import VMService
from blockplane.xml.backing_chain import parse_chain


class ChainService:
    def __init__(self, vms: VMService, records: Records, chain_records: ChainRecords,
                 rbd: RbdSnapshots | None = None) -> None:
        """``rbd``: the RBD snapshots ``show`` lists beside a disk on an rbd pool."""
        self._vms = vms
        self._records = records
        self._chain = chain_records
        self._rbd = rbd

    def domain(self, vm: str) -> DomainHandle:
        return self._vms.domain(vm)

    def read(self, domain: DomainHandle, target: str) -> Chain:
        """The chain of ``target`` now: live (numbered by libvirt) if the VM runs."""
        live = domain.is_active()
        return parse_chain(domain.xml(inactive=not live), target)

    def element(self, chain: Chain, spec: str | None) -> ChainElement | None:
        """The element ``spec`` names (``vda``, ``vda[N]`` or a path), None for None."""
        if spec is None:
            return None
        return resolve_element(chain, spec, canonical=canonical)

    def show(self, vm: str, target: str) -> ChainView:
        """``blockplane chain VM TARGET``: every element, top to base, with sizes."""
        self._vms.record(vm)
        domain = self.domain(vm)
        chain = self.read(domain, target)
        sizes: dict[str, tuple[int | None, int | None]] = {}
        for element in chain.elements:
            try:
                sizes[element.path] = image_facts(element.path)
            except BlockplaneError:
                sizes[element.path] = (None, None)
        if chain.live:
            sizes = _block_allocations(domain, chain, sizes)
        chain = chain.with_sizes(sizes)
        elements = []
        for element in chain.elements:
            row = self._chain.volume_at(element.path)
            elements.append(ChainElementView(
                name=element.name,
                position=element.position,
                libvirt_index=element.libvirt_index,
                path=element.path,
                format=element.format,
                backing_format=element.backing_format,
                source_kind=element.source_kind,
                virtual_bytes=element.virtual_bytes,
                allocation_bytes=element.allocation_bytes,
                pool=row.pool if row else None,
                volume=row.volume if row else None,
            ))
        mirror = chain.mirror
        elements, rbd_snapshots = self._on_rbd(vm, target, elements)
        return ChainView(
            vm=vm,
            target=chain.target,
            complete=chain.complete,
            elements=tuple(elements),
            mirror=MirrorView(mirror.job, mirror.path, mirror.format, mirror.ready,
                              mirror.libvirt_index) if mirror else None,
            running=chain.live,
            rbd_snapshots=rbd_snapshots,
        )

    def _on_rbd(
        self, vm: str, target: str, elements: list[ChainElementView]
    ) -> tuple[list[ChainElementView], tuple[RbdSnapshotView, ...] | None]:
        """A disk on an rbd pool is one image (``qemu-img`` cannot size ``rbd:`` paths: the
        record does), with its RBD snapshots beside it."""
        disk = self._records.disk(vm, target)
        if self._rbd is None or disk is None or not self._rbd.on_rbd(disk):
            return elements, None
        volume = self._records.volume(disk.pool, disk.volume)
        if volume is not None:
            elements = [dataclasses.replace(element, virtual_bytes=volume.virtual_bytes)
                        if element.path == volume.path else element for element in elements]
        return elements, self._rbd.chain_snapshots(disk)

    def disk_paths(self, vm: str) -> set[str]:
        """Every image path in the chains of ``vm``'s disks (raises if they cannot be read)."""
        domain = self.domain(vm)
        live = domain.is_active()
        xml = domain.xml(inactive=not live)
        # A running VM's next cold start needs what its persistent definition names, which can
        # differ from the live chains until ``PersistentChains`` has brought them in step.
        persistent = domain.xml(inactive=True) if live and domain.is_persistent() else None
        paths: set[str] = set()
        for disk in self._records.disks(vm):
            try:
                chain = parse_chain(xml, disk.target)
            except NotFound:
                continue
            if not chain.complete:
                raise BlockplaneError(f"the chain of {vm}/{disk.target} is not fully known")
            paths.update(chain.paths())
            if chain.mirror is not None and chain.mirror.path:
                paths.add(chain.mirror.path)
            if persistent is not None:
                with contextlib.suppress(NotFound):
                    paths.update(parse_chain(persistent, disk.target).paths())
        return paths


def _block_allocations(
    domain: DomainHandle, chain: Chain, sizes: dict[str, tuple[int | None, int | None]]
) -> dict[str, tuple[int | None, int | None]]:
    """For block devices the host's ``actual-size`` means nothing: use QEMU's allocation."""
    with contextlib.suppress(BlockplaneError):
        nodes = chain_nodes(domain.block_stats())
        for element in chain.elements:
            if element.source_kind != "block":
                continue
            for seen in nodes:
                if seen.target == chain.target and seen.path == element.path:
                    sizes[element.path] = (sizes[element.path][0], seen.stats.allocation)
    return sizes
