"""What ``blockplane top`` and ``GET /v1/reconcile`` answer (``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.store.intents import UnknownIntent


@dataclass(frozen=True)
class JobBrief:
    """A running job on a disk; ``progress_pct`` None while libvirt reports no total."""

    id: str
    kind: str
    phase: str
    progress_pct: float | None


@dataclass(frozen=True)
class DiskRow:
    """One disk: rates over the window, the tightest limits and which layer sets each
    (``bound_by``), its filter ``chain``, sizes and thin fill, IOThreads and jobs."""

    vm: str
    target: str
    path: str
    pool: str | None
    volume: str | None
    thin: bool
    read_iops: float
    write_iops: float
    read_bytes_per_s: int
    write_bytes_per_s: int
    iops_limit: int | None
    bytes_limit: int | None
    limits: dict[str, int]
    bound_by: dict[str, str]
    chain: tuple[str, ...]
    virtual: int
    physical: int
    allocation: int
    fill_pct: float | None
    threshold: int | None
    iothreads: int
    jobs: tuple[JobBrief, ...]


@dataclass(frozen=True, kw_only=True)
class Rates:
    """Read and write IOPS and bytes per second, summed over some disks."""

    read_iops: float
    write_iops: float
    read_bytes_per_s: float
    write_bytes_per_s: float


@dataclass(frozen=True, kw_only=True)
class VMRow(Rates):
    vm: str
    state: str | None
    iothreads: int
    disks: int


@dataclass(frozen=True, kw_only=True)
class Totals(Rates):
    vms: int
    disks: int


@dataclass(frozen=True)
class TopFrame:
    """One frame: when (``at``, Unix time), over which window, how many bulk stats calls it
    took, and the rows sorted by ``sort``."""

    at: float
    window_s: float
    stats_calls: int
    stats_call_s: float
    sort: str
    vm: str | None
    jobs_available: bool
    totals: Totals
    vms: tuple[VMRow, ...]
    disks: tuple[DiskRow, ...]


@dataclass(frozen=True)
class StepView:
    name: str
    duration_s: float
    ok: bool
    error: str | None
    counts: dict[str, int]


@dataclass(frozen=True)
class PassView:
    number: int
    started_at: float
    finished_at: float
    duration_s: float
    ok: bool
    counts: dict[str, int]
    steps: tuple[StepView, ...]
    #: ``full`` (every step looked at everything) or ``quick`` (only at what changed).
    kind: str = "full"


@dataclass(frozen=True)
class ReconcileReport:
    """The first pass (at agent start) and the latest; ``confirmed``: the latest checked every
    IOThread plan and thin volume against libvirt and found them as recorded."""

    agent_started_at: float
    passes: int
    confirmed: bool
    first: PassView | None
    last: PassView | None
    checked_at: float | None
    disagreements: tuple[str, ...]
    unknown_intents: tuple[UnknownIntent, ...]
    #: How many of ``passes`` were full ones, and the latest of them
    #: (``runtime.reconcile_schedule``).
    full_passes: int = 0
    last_full: PassView | None = None
