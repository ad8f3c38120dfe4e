"""Value types of the IOThread virtqueue-mapping planner.

Owns the frozen dataclasses that the policy, the planner and the placement filter pass around,
and the structural checks that keep a mapping well formed (every queue served exactly once).
Must not decide anything, import libvirt or know about XML: ``xml/`` turns these into
``<driver queues><iothreads><iothread id><queue id/>`` and back.

Queue ids are 0-based over the disk's request virtqueues, as libvirt numbers ``<queue id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from blockplane.errors import InvalidInput
from blockplane.model.disk import Bus

Mode = Literal["mapped", "single", "none"]

ERROR_CODE = "iothreads.invalid"

# The first IOThread id the planner hands out; lower ids belong to whoever defined the VM.
FIRST_PLANNER_ID = 101


@dataclass(frozen=True)
class MappingSupport:
    """Whether a host can map virtqueues to IOThreads for one bus, and why (from the facts)."""

    supported: bool
    reason: str


#: For hosts (and tests) where nothing keeps a throttled disk off several IOThreads.
NO_KNOWN_DEFECT = MappingSupport(True, "no known defect")


@dataclass(frozen=True)
class IOThreadRequest:
    """What a volume descriptor asks for.

    ``io_threads``: None = default policy, 0 = no automatic mapping, K > 0 = up to K IOThreads
    for the VM's pool. ``queues``: None = one per vCPU.
    """

    io_threads: int | None
    queues: int | None
    bus: Bus = "virtio"
    #: The disk has I/O limits (throttle filters or <iotune>): see ``decide``.
    throttled: bool = False
    #: The disk is an RBD image (QEMU's rbd driver): see ``decide``.
    rbd: bool = False


@dataclass(frozen=True)
class DiskMapping:
    """The IOThreads serving one disk (for ``scsi``: its own controller).

    ``mapping`` is ``((iothread_id, (queue_id, ...)), ...)`` sorted by IOThread id.
    - ``mapped``: an explicit ``iothread-vq-mapping`` over the VM's shared pool;
    - ``single``: one dedicated IOThread serves every queue (``<driver iothread='N'>``);
    - ``none``: no IOThread; QEMU's main loop serves the disk and ``mapping`` is empty.
    """

    target: str
    queues: int
    mapping: tuple[tuple[int, tuple[int, ...]], ...]
    mode: Mode = "mapped"
    bus: Bus = "virtio"

    def __post_init__(self) -> None:
        if self.queues < 1:
            raise InvalidInput(
                f"{self.target}: a disk needs at least one queue, got {self.queues}",
                code=ERROR_CODE,
            )
        ids = [iothread for iothread, _ in self.mapping]
        if ids != sorted(set(ids)):
            raise InvalidInput(
                f"{self.target}: IOThread ids must be unique and ascending, got {ids}",
                code=ERROR_CODE,
            )
        if self.mode == "none":
            if self.mapping:
                raise InvalidInput(f"{self.target}: mode none has no IOThreads", code=ERROR_CODE)
            return
        if self.mode == "single" and len(self.mapping) != 1:
            raise InvalidInput(
                f"{self.target}: mode single needs exactly one IOThread", code=ERROR_CODE
            )
        served = sorted(queue for _, queues in self.mapping for queue in queues)
        if served != list(range(self.queues)) or any(not queues for _, queues in self.mapping):
            raise InvalidInput(
                f"{self.target}: every queue 0..{self.queues - 1} must be served exactly once "
                f"by an IOThread that serves at least one, got {self.mapping}",
                code=ERROR_CODE,
            )

    @property
    def iothread_ids(self) -> tuple[int, ...]:
        return tuple(iothread for iothread, _ in self.mapping)


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one disk, before the planner picks IOThread ids.

    ``thread_budget``: how large the VM's shared pool may grow for this disk (``mapped``), 1 for
    ``single``, 0 for ``none``.
    """

    mode: Mode
    queues: int
    thread_budget: int
    reason: str
    bus: Bus = "virtio"

    def __post_init__(self) -> None:
        consistent = {
            "mapped": self.thread_budget >= 1,
            "single": self.thread_budget == 1,
            "none": self.thread_budget == 0,
        }
        if self.queues < 1 or not consistent.get(self.mode, False):
            raise InvalidInput(
                f"inconsistent decision: mode {self.mode}, {self.queues} queues, "
                f"budget {self.thread_budget}",
                code=ERROR_CODE,
            )


@dataclass(frozen=True)
class IOThreadPlan:
    """What an attach applies: the disk's mapping, the IOThreads to create first, and why."""

    disk: DiskMapping
    iothreads_to_add: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class VMIOThreads:
    """A VM's IOThreads and the disks they serve.

    ``reserved_ids`` are ids the planner must never create or remove (used by something else).
    Ids below ``FIRST_PLANNER_ID`` are never the planner's either.
    """

    iothread_ids: tuple[int, ...]
    disks: tuple[DiskMapping, ...]
    reserved_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.iothread_ids)) != len(self.iothread_ids):
            raise InvalidInput(f"duplicate IOThread ids {self.iothread_ids}", code=ERROR_CODE)
        targets = [disk.target for disk in self.disks]
        if len(set(targets)) != len(targets):
            raise InvalidInput(f"duplicate disk targets {targets}", code=ERROR_CODE)
        known = set(self.iothread_ids)
        for disk in self.disks:
            missing = [iothread for iothread in disk.iothread_ids if iothread not in known]
            if missing:
                raise InvalidInput(
                    f"{disk.target} uses IOThreads {missing} the VM does not have",
                    code=ERROR_CODE,
                )

    def disk(self, target: str) -> DiskMapping | None:
        return next((disk for disk in self.disks if disk.target == target), None)

    def owned_ids(self) -> frozenset[int]:
        """IOThreads the planner may remove: ids >= 101 that are not reserved."""
        reserved = set(self.reserved_ids)
        return frozenset(
            iothread
            for iothread in self.iothread_ids
            if iothread >= FIRST_PLANNER_ID and iothread not in reserved
        )

    def pool_loads(self) -> dict[int, int]:
        """Queues served per IOThread of the shared pool.

        The pool is the owned IOThreads minus those dedicated to a ``single`` disk; an owned
        IOThread serving nothing is in the pool with load 0.
        """
        dedicated = {
            iothread
            for disk in self.disks
            if disk.mode == "single"
            for iothread in disk.iothread_ids
        }
        loads = {iothread: 0 for iothread in self.owned_ids() if iothread not in dedicated}
        for disk in self.disks:
            if disk.mode != "mapped":
                continue
            for iothread, queues in disk.mapping:
                if iothread in loads:
                    loads[iothread] += len(queues)
        return loads

    def spread(self) -> int:
        """Max minus min queues per pool IOThread (0 for an empty pool)."""
        loads = self.pool_loads().values()
        return max(loads) - min(loads) if loads else 0
