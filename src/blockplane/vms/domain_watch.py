"""Adopted domains that someone else undefined: reported, never recreated.

A platform owns an adopted domain's lifecycle, so when its domain leaves libvirt blockplane
keeps the records (``vm show``/``vm list`` say ``undefined``, a ``vm.undefined`` event is
published once) until the domain comes back (``vm.redefined``) or the VM is released. A domain
is judged gone only when two reconcile passes at least ``CONFIRM_S`` apart both miss it, so a
``vm delete`` (which undefines, then drops the records) is never reported. Must not define,
start or change any domain.
"""

from __future__ import annotations

import time

from blockplane.hypervisor.connection import Hypervisor
from blockplane.store.adoption import AdoptionRecords
from blockplane.store.events import EventPublisher

CONFIRM_S = 1.0


class AdoptedDomainWatch:
    def __init__(
        self, hypervisor: Hypervisor, adoptions: AdoptionRecords, events: EventPublisher
    ) -> None:
        self._hypervisor = hypervisor
        self._adoptions = adoptions
        self._events = events
        #: When a pass first missed each domain (``time.monotonic()``).
        self._missing_since: dict[str, float] = {}

    def reconcile(self) -> None:
        adopted = self._adoptions.all()
        if not adopted:
            self._missing_since.clear()
            return
        present = {domain.name for domain in self._hypervisor.domains()}
        now = time.monotonic()
        for record in adopted:
            vm = record.vm
            if vm in present:
                self._missing_since.pop(vm, None)
                if record.gone_since is not None:
                    self._adoptions.set_gone(vm, None)
                    self._events.publish("vm.redefined", vm, adopted=True)
                continue
            if record.gone_since is not None:
                continue
            first = self._missing_since.setdefault(vm, now)
            if now - first < CONFIRM_S:
                continue
            if self._adoptions.get(vm) is None:
                continue  # released or deleted meanwhile
            self._adoptions.set_gone(vm, time.time())
            self._events.publish(
                "vm.undefined", vm, adopted=True,
                detail="the domain was undefined outside blockplane; it is not recreated. "
                f"`blockplane vm release {vm}` drops its records",
            )
        self._missing_since = {vm: since for vm, since in self._missing_since.items()
                               if any(r.vm == vm for r in adopted)}
