"""Capacity-scaled limits follow the disk: recompute them when its size changes.

Owns ``DiskRescaler``: given a disk's new virtual size it recomputes the per-disk limits from
the stored spec (``throttle.tiers.recompute_for_size``) and updates the generated per-disk group (or
``<iotune>`` in the fallback) in place, live and in the persistent definition, without detaching
anything. ``reconcile`` is the hook: it compares each scaled disk's capacity as libvirt reports
it with the size its limits were computed for, so a resize made by anyone is caught on the
agent's next reconcile pass. Thin extension changes a volume's *physical* size, not the size the
guest sees, and so does not rescale (as in Cinder, the volume size is what counts).
"""

from __future__ import annotations

import logging
import threading

from blockplane.errors import BlockplaneError, NotFound
from blockplane.store.events import EventPublisher
from blockplane.store.throttle_records import DiskThrottleRecord, ThrottleRecords
from blockplane.throttle.disk_spec import is_scaled, spec_from_json
from blockplane.throttle.service import DomainLookup, LockFor
from blockplane.throttle.tiers import per_disk_group_name, recompute_for_size
from blockplane.throttle.views import RescaleResult

log = logging.getLogger(__name__)


class DiskRescaler:
    def __init__(
        self,
        domain: DomainLookup,
        lock_for: LockFor,
        records: ThrottleRecords,
        events: EventPublisher,
    ) -> None:
        self._domain = domain
        self._lock_for = lock_for
        self._records = records
        self._events = events
        self._reconcile_lock = threading.Lock()

    def disk_resized(self, vm: str, target: str, size_bytes: int) -> RescaleResult | None:
        """Recompute ``vm``/``target``'s scaled limits for ``size_bytes``; ``None`` if unscaled."""
        with self._lock_for(vm):
            record = self._records.disk(vm, target)
            if record is None:
                return None
            spec = spec_from_json(record.spec)
            if not is_scaled(spec):
                return None
            tiers = recompute_for_size(spec, size_bytes)
            limits = tiers.per_disk_limits
            changed = limits.to_dict(nonzero_only=True) != record.per_disk
            if changed:
                self._apply(vm, target, record, limits.to_dict())
            self._records.put_disk(
                DiskThrottleRecord(
                    vm,
                    target,
                    record.mode,
                    record.spec,
                    record.chain,
                    size_bytes,
                    limits.to_dict(nonzero_only=True),
                )
            )
        if changed:
            self._events.publish(
                "throttle.rescaled",
                vm,
                target=target,
                size_bytes=size_bytes,
                previous_size_bytes=record.size_bytes,
                limits=limits.to_dict(nonzero_only=True),
            )
        view = tiers.view()
        return RescaleResult(vm=view.vm, target=view.target, size_bytes=view.size_bytes,
                             per_disk_limits=view.per_disk_limits, chain=view.chain,
                             changed=changed)

    def reconcile(self) -> None:
        """Rescale every scaled disk whose capacity differs from the size on record."""
        with self._reconcile_lock:
            for record in self._records.disks():
                if not is_scaled(spec_from_json(record.spec)):
                    continue
                try:
                    capacity, _allocation, _physical = self._domain(record.vm).block_info(
                        record.target
                    )
                    if capacity != record.size_bytes:
                        self.disk_resized(record.vm, record.target, capacity)
                except NotFound:
                    continue
                except BlockplaneError:
                    log.exception("rescaling the limits of %s/%s failed", record.vm, record.target)

    def _apply(
        self, vm: str, target: str, record: DiskThrottleRecord, params: dict[str, int]
    ) -> None:
        domain = self._domain(vm)
        live = domain.is_active()
        if record.mode == "filters":
            domain.set_throttle_group(
                per_disk_group_name(target), params, live=live, config=True
            )
        else:
            # Only a per-disk tier scales, and in the fallback it is the disk's own <iotune>.
            domain.set_block_iotune(target, params, group_name=None, live=live, config=True)
