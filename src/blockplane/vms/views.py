"""What the VM and disk services answer (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blockplane.iothreads.placement import Gap
from blockplane.model.view import KEY_IF_SET
from blockplane.throttle.views import DiskLimitsView


@dataclass(frozen=True)
class VMView:
    """``adopted``: taken under management by ``vm adopt``; then what it had at adoption (its
    own IOThreads, its foreign disks) and, once someone else undefined it, since when."""

    name: str
    uuid: str
    state: str
    vcpus: int
    memory_bytes: int
    guest: str
    managed: bool
    adopted: bool = False
    gone_since: float | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)
    reserved_iothreads: tuple[int, ...] | None = field(default=None, kw_only=True,
                                                       metadata=KEY_IF_SET)
    foreign_disks: tuple[dict[str, Any], ...] | None = field(default=None, kw_only=True,
                                                             metadata=KEY_IF_SET)


@dataclass(frozen=True)
class DiskView:
    """A disk of a VM as its domain has it, with its volume and plan when blockplane manages
    it (``managed``)."""

    vm: str
    target: str
    bus: str
    source: str
    format: str
    pool: str | None
    volume: str | None
    virtual_bytes: int | None
    physical_bytes: int | None
    thin: bool
    managed: bool
    plan: dict[str, Any]
    throttle_groups: tuple[str, ...]
    #: Why blockplane must not write this disk of an adopted domain (None: it may).
    foreign: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttachResult(DiskView):
    """``notes``: why the IOThread plan and the limits are what they are."""

    live: bool
    seconds: float
    notes: tuple[str, ...]
    throttle: DiskLimitsView | None


@dataclass(frozen=True)
class DetachResult:
    vm: str
    target: str
    detached: bool
    #: None where the volume was kept (a shared rbd image something still references).
    volume_deleted: str | None
    iothreads_removed: tuple[int, ...]
    #: Why the volume was kept, where it was (a shared rbd image something still uses).
    volume_kept: str | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)


@dataclass(frozen=True, kw_only=True)
class VMCreated(VMView):
    """A new VM; ``disks`` only when it was created with define-time disks."""

    disks: tuple[AttachResult, ...] | None = field(default=None, kw_only=True,
                                                   metadata=KEY_IF_SET)


@dataclass(frozen=True)
class VMDeleteResult:
    name: str
    deleted: bool
    volumes_deleted: tuple[str, ...]


@dataclass(frozen=True)
class GuestExecView:
    """A command's exit status and output in the guest (the output base64-encoded)."""

    exit_code: int
    stdout_base64: str
    stderr_base64: str


@dataclass(frozen=True)
class MigrateCheckView:
    vm: str
    compatible: bool
    gaps: tuple[Gap, ...]
