"""Fakes for the thin monitor unit tests: a domain with one thin disk, its hypervisor, a pool.

``FakeDomain`` behaves like libvirt and QEMU where the monitor depends on it: a threshold is
one-shot (``write`` past it fires once and clears it), a write past the volume's end pauses the
VM on ENOSPC (``error_policy='enospace'``) and moves ``allocation`` past the end, and resume
fails on a running VM. Sizes come from ``FakeBackend``, which refuses growth past the pool's
capacity the way the real backends do (``PoolCapacity``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockplane.errors import HypervisorError, NotFound
from blockplane.hypervisor.domain import PAUSED_IOERROR_REASON, PAUSED_STATE, DomainState
from blockplane.storage.backends.base import Volume
from blockplane.storage.capacity import PoolCapacity
from blockplane.store.records import PoolRecord, Records

RUNNING_STATE = 1


class FakeBackend:
    kind = "loop"
    is_block = True

    def __init__(self, sizes: dict[str, int], capacity: PoolCapacity) -> None:
        self.sizes = sizes
        self.capacity = capacity
        self.grows: list[tuple[str, int]] = []

    def create(self, name: str, size_bytes: int) -> Volume:
        self.sizes[name] = size_bytes
        return Volume(name, Path(f"/dev/fake-{name}"), size_bytes)

    def grow(self, name: str, new_physical_bytes: int) -> int:
        current = self.sizes[name]
        self.capacity.check_capacity(self.used_bytes(), new_physical_bytes - current, volume=name)
        self.sizes[name] = new_physical_bytes
        self.grows.append((name, new_physical_bytes))
        return new_physical_bytes

    def physical_size(self, name: str) -> int:
        return self.sizes[name]

    def delete(self, name: str) -> None:
        del self.sizes[name]

    def activate(self, name: str) -> Volume:
        return Volume(name, Path(f"/dev/fake-{name}"), self.sizes[name])

    def device_of(self, name: str) -> Path | None:
        return None

    def list(self) -> list[str]:
        return sorted(self.sizes)

    def used_bytes(self) -> int:
        return sum(self.sizes.values())


class FakePools:
    """``PoolService.get``/``backend`` over real pool records; one size table per pool."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.sizes: dict[str, dict[str, int]] = {}
        self.backends: list[FakeBackend] = []

    def get(self, name: str) -> PoolRecord:
        record = self.records.pool(name)
        if record is None:
            raise NotFound(f"no pool {name}", code="pool.not_found")
        return record

    def backend(self, record: PoolRecord) -> FakeBackend:
        backend = FakeBackend(self.sizes.setdefault(record.name, {}),
                              PoolCapacity(record.capacity_bytes))
        self.backends.append(backend)
        return backend

    def grows(self) -> list[tuple[str, int]]:
        return [grow for backend in self.backends for grow in backend.grows]


@dataclass
class FakeDomain:
    name: str
    target: str
    path: str
    index: int
    sizes: dict[str, int]
    volume: str
    running: bool = True
    paused: bool = False
    #: Another call holds its job: stats asked without waiting carry no sizes or counters.
    busy: bool = False
    allocation: int = 0
    threshold: int = 0
    armed: list[tuple[str, int]] = field(default_factory=list)
    resumes: int = 0
    resumed_at: list[float] = field(default_factory=list)
    fired: list[int] = field(default_factory=list)

    def state(self) -> DomainState:
        if not self.running:
            return DomainState("shutoff", 0)
        if self.paused:
            return DomainState("paused", PAUSED_IOERROR_REASON)
        return DomainState("running", 1)

    def resume(self) -> None:
        if not self.paused:
            raise HypervisorError("Requested operation is not valid: domain is not paused")
        self.resumes += 1
        self.resumed_at.append(time.monotonic())
        self.paused = False

    def set_block_threshold(self, target: str, threshold_bytes: int) -> None:
        if not self.running:
            raise HypervisorError("domain is not running")
        self.armed.append((target, threshold_bytes))
        self.threshold = threshold_bytes

    def block_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "block.count": 1,
            "block.0.name": self.target,
            "block.0.path": self.path,
            "block.0.backingIndex": self.index,
            "block.0.allocation": self.allocation,
            "block.0.physical": self.sizes[self.volume],
            "block.0.wr.reqs": 0,
        }
        if self.threshold:
            stats["block.0.threshold"] = self.threshold
        return stats

    def disk_errors(self) -> dict[str, int]:
        return {self.target: 2} if self.paused else {}

    def write_to(self, offset: int) -> bool:
        """The guest writes up to ``offset``; True if that fired the armed threshold."""
        self.allocation = max(self.allocation, offset)
        fired = bool(self.threshold) and offset > self.threshold
        if fired:
            self.fired.append(self.threshold)
            self.threshold = 0
        if offset > self.sizes[self.volume]:
            self.paused = True
        return fired


class FakeHypervisor:
    def __init__(self) -> None:
        self.domains: dict[str, FakeDomain] = {}
        self.bulk_calls = 0
        #: The domains each bulk stats call asked for (None: all of them).
        self.asked: list[list[str] | None] = []

    def lookup(self, name: str) -> FakeDomain:
        if name not in self.domains:
            raise NotFound(f"no VM named {name!r}", code="vm.not_found")
        return self.domains[name]

    def unresponsive_domains(self) -> set[str]:
        return set()

    def bulk_stats(
        self, stats: int = 0, domains: Collection[str] | None = None, *, nowait: bool = False
    ) -> list[tuple[str, dict[str, Any]]]:
        self.bulk_calls += 1
        self.asked.append(None if domains is None else sorted(domains))
        result = []
        for name, domain in self.domains.items():
            if domain.running and (domains is None or name in domains):
                state = PAUSED_STATE if domain.paused else RUNNING_STATE
                reason = PAUSED_IOERROR_REASON if domain.paused else 1
                block = domain.block_stats()
                if nowait and domain.busy:
                    block = {key: value for key, value in block.items()
                             if key.endswith((".name", ".path", ".count", "backingIndex"))}
                result.append((name, {"state.state": state, "state.reason": reason, **block}))
        return result
