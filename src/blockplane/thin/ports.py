"""The narrow views of the hypervisor and the pools that the thin monitor is given.

``hypervisor.Hypervisor``/``DomainHandle`` and ``storage.pools.PoolService`` satisfy these
structurally; unit tests pass small fakes. Owns no behaviour. Must not import libvirt or the
storage services themselves.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from blockplane.storage.backends.base import VolumeBackend
from blockplane.store.records import PoolRecord


class DomainStateView(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def reason(self) -> int: ...


class DomainPort(Protocol):
    def state(self) -> DomainStateView: ...

    def resume(self) -> None: ...

    def set_block_threshold(self, target: str, threshold_bytes: int) -> None: ...

    def block_stats(self) -> dict[str, Any]: ...

    def disk_errors(self) -> dict[str, int]: ...


class HypervisorPort(Protocol):
    def lookup(self, name: str) -> DomainPort: ...

    def bulk_stats(
        self, stats: int = 0, domains: Collection[str] | None = None, *, nowait: bool = False
    ) -> list[tuple[str, dict[str, Any]]]: ...

    def unresponsive_domains(self) -> set[str]: ...


class PoolsPort(Protocol):
    def get(self, name: str) -> PoolRecord: ...

    def backend(self, record: PoolRecord) -> VolumeBackend: ...
