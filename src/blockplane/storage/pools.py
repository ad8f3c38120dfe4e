"""Pools: named places where volumes are created (dir, loop, lvm, rbd).

Owns pool records, the pool directory, and capacity accounting. Which bytes a backend writes
is the backend's business (``storage.backends``); an rbd pool's cluster settings, secret and
health are ``storage.rbd_pools``'.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from blockplane.config import Settings
from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.model.ceph import CephHealth
from blockplane.model.disk import NetworkSource
from blockplane.model.view import view_fields
from blockplane.storage.backends.factory import POOL_TYPES, VolumeBackend, backend_of
from blockplane.storage.names import validate_name
from blockplane.storage.rbd_pools import RbdPoolRequest, RbdPools
from blockplane.storage.views import PoolDeleteResult, PoolView
from blockplane.store.events import EventPublisher
from blockplane.store.records import PoolRecord, Records

DEFAULT_CHUNK_BYTES = 2560 * 1024 * 1024
DEFAULT_UTILIZATION_PCT = 20


class PoolService:
    def __init__(self, settings: Settings, records: Records, events: EventPublisher,
                 rbd: RbdPools | None = None) -> None:
        self._settings = settings
        self._records = records
        self._events = events
        self.rbd = rbd

    def create(
        self,
        name: str,
        pool_type: str,
        path: str | None,
        capacity_bytes: int | None,
        chunk_bytes: int | None,
        utilization_pct: int | None,
    ) -> PoolView:
        validate_name("pool", name)
        if pool_type == "rbd":
            raise InvalidInput("an rbd pool needs --ceph-conf FILE and --rbd-pool POOL",
                               code="pool.invalid")
        if pool_type not in POOL_TYPES:
            raise InvalidInput(
                f"unknown pool type {pool_type!r}: use one of {', '.join(POOL_TYPES)}",
                code="pool.invalid",
            )
        chunk = DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        utilization = DEFAULT_UTILIZATION_PCT if utilization_pct is None else utilization_pct
        if chunk < 1024 * 1024:
            raise InvalidInput("--chunk must be at least 1 MiB", code="pool.invalid")
        if not 1 <= utilization <= 99:
            raise InvalidInput("--utilization must be 1..99 percent", code="pool.invalid")
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise InvalidInput("--capacity must be positive", code="pool.invalid")
        if self._records.pool(name) is not None:
            raise Conflict(f"a pool named {name!r} already exists", code="pool.exists")
        location = self._location(name, pool_type, path)
        record = PoolRecord(name, pool_type, location, capacity_bytes, chunk, utilization)
        if pool_type != "lvm":
            _make_pool_directory(Path(location))
        self._records.add_pool(record)
        self._events.publish("pool.created", None, pool=name, type=pool_type)
        return self._view(record)

    def create_rbd(self, name: str, request: RbdPoolRequest,
                   capacity_bytes: int | None) -> PoolView:
        """An rbd pool: recorded only once the cluster answered and the user wrote to it."""
        validate_name("pool", name)
        if self.rbd is None:
            raise InvalidInput("this agent has no rbd support wired in", code="pool.invalid")
        if self._records.pool(name) is not None:
            raise Conflict(f"a pool named {name!r} already exists", code="pool.exists")
        record, rbd = self.rbd.create(name, request, capacity_bytes)
        self._events.publish("pool.created", None, pool=name, type="rbd", rbd_pool=rbd.ceph_pool,
                             ceph_user=rbd.user, fsid=rbd.fsid, secret_uuid=rbd.secret_uuid)
        return self._view(record, live=True)

    def _location(self, name: str, pool_type: str, path: str | None) -> str:
        if pool_type == "lvm":
            if not path:
                raise InvalidInput("an lvm pool needs --path VOLUME_GROUP", code="pool.invalid")
            validate_name("volume_group", path)
            return path
        if path is None:
            return str(self._settings.paths.pools / name)
        candidate = Path(path)
        if not candidate.is_absolute() or "\x00" in path:
            raise InvalidInput("--path must be an absolute directory", code="pool.invalid")
        return str(candidate.resolve())

    def get(self, name: str) -> PoolRecord:
        record = self._records.pool(name)
        if record is None:
            raise NotFound(f"no pool named {name!r}", code="pool.not_found")
        return record

    def show(self, name: str) -> PoolView:
        return self._view(self.get(name), live=True)

    def list_pools(self) -> list[PoolView]:
        return [self._view(record) for record in self._records.pools()]

    def set_capacity(self, name: str, capacity_bytes: int | None) -> PoolView:
        """Change the pool's limit (None: no limit); thin extends refused so far retry."""
        record = self.get(name)
        if capacity_bytes is not None:
            used = self.used_bytes(name)
            if capacity_bytes < used:
                raise InvalidInput(
                    f"pool {name} already holds {used} bytes; a capacity of {capacity_bytes} "
                    "bytes would be below that",
                    code="pool.invalid",
                )
        self._records.set_pool_capacity(name, capacity_bytes)
        self._events.publish("pool.updated", None, pool=name,
                             capacity_bytes=capacity_bytes, previous=record.capacity_bytes)
        return self.show(name)

    def delete(self, name: str) -> PoolDeleteResult:
        record = self.get(name)
        volumes = self._records.volumes(name)
        if volumes:
            listed = ", ".join(volume.name for volume in volumes)
            raise Conflict(
                f"pool {name} still holds volumes: {listed}; detach and delete them first",
                code="pool.in_use",
            )
        rbd = self.rbd.record(name) if self.rbd is not None and record.type == "rbd" else None
        self._records.delete_pool(name)
        if rbd is not None and self.rbd is not None:
            self.rbd.forget(rbd)
        local = record.type not in ("lvm", "rbd")
        if local and Path(record.path).is_relative_to(self._settings.paths.pools):
            with contextlib.suppress(OSError):
                Path(record.path).rmdir()
        self._events.publish("pool.deleted", None, pool=name)
        return PoolDeleteResult(name, deleted=True)

    def backend(self, record: PoolRecord) -> VolumeBackend:
        if record.type == "rbd":
            if self.rbd is None:
                raise InvalidInput(f"pool {record.name} is an rbd pool and this agent has no "
                                   "rbd support wired in", code="pool.invalid")
            return self.rbd.backend(record)
        return backend_of(record)

    def network_source(self, record: PoolRecord, path: str) -> NetworkSource:
        """How QEMU reaches the image at ``path`` of an rbd pool (``<source>`` and ``<auth>``)."""
        if self.rbd is None or record.type != "rbd":
            raise InvalidInput(f"pool {record.name} is not an rbd pool", code="pool.invalid")
        return self.rbd.network_source(record.name, path)

    def is_shared(self, record: PoolRecord) -> bool:
        """Every host that adds the pool reaches the same volumes (a migration copies none)."""
        return record.type == "rbd"

    def ceph_health(self) -> list[CephHealth]:
        """The last probe of each rbd pool's cluster (``facts``), read from memory."""
        return self.rbd.health.all() if self.rbd is not None else []

    def used_bytes(self, name: str) -> int:
        return sum(volume.physical_bytes for volume in self._records.volumes(name))

    def _view(self, record: PoolRecord, *, live: bool = False) -> PoolView:
        volumes = self._records.volumes(record.name)
        rbd = None
        if record.type == "rbd" and self.rbd is not None:
            rbd = self.rbd.view(record, live=live)
        return PoolView(**view_fields(record), volumes=len(volumes),
                        used_bytes=sum(volume.physical_bytes for volume in volumes),
                        shared=self.is_shared(record), rbd=rbd)


def _make_pool_directory(directory: Path) -> None:
    """Create (or adopt, if empty) the pool's directory; on failure leave nothing behind.

    A path that cannot be a directory (a file, /proc, a name too long, no permission) is the
    caller's input, so it is refused as such, after removing any parents this call created.
    """
    created: list[Path] = []
    try:
        if directory.exists() and any(directory.iterdir()):
            raise Conflict(f"pool directory {directory} is not empty", code="pool.exists")
        created = [path for path in (directory, *directory.parents) if not path.exists()]
        directory.mkdir(mode=0o711, parents=True, exist_ok=True)
    except OSError as error:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise InvalidInput(
            f"--path {directory} cannot be a pool directory: {error.strerror or error}",
            code="pool.invalid",
        ) from error
