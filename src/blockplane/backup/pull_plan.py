"""From a pull-backup request and the VM's checkpoints to what is exported, and how.

Decides, before anything is created:
- which disks are exported (``--disk``, default every managed disk) and in which pool each
  scratch image goes (``--scratch-pool``, default the disk's own pool);
- full or incremental, per disk. ``--incremental C``: every disk whose bitmap in ``C`` is usable
  is incremental; a disk ``C`` does not track (attached after it) is exported fully, and the
  answer says so; a broken bitmap refuses the backup (``checkpoint.inconsistent``).
  ``--incremental auto``: from the VM's newest checkpoint, falling back to a full export of a
  disk whose bitmap is broken, or of every disk when there is no checkpoint, and saying so;
- the checkpoint the backup creates (``bp-<job id>``, a bitmap on every exported disk).
Must not create anything or call libvirt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blockplane.chain.checkpoint_health import DiskHealth
from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.store.records import DiskRecord, PoolRecord
from blockplane.xml.chain import CheckpointDocument, checkpoint_xml

AUTO = "auto"
DEFAULT_TIMEOUT_S = 24 * 3600.0
MAX_TIMEOUT_S = 30 * 24 * 3600.0


@dataclass(frozen=True)
class PullRequest:
    vm: str
    targets: tuple[str, ...] = ()
    incremental: str | None = None
    scratch_pool: str | None = None
    quiesce: bool = False
    require_quiesce: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    tcp: bool = False


@dataclass(frozen=True)
class PlannedDisk:
    target: str
    mode: str  # "full" | "incremental"
    scratch_pool: PoolRecord
    reason: str | None = None


@dataclass(frozen=True)
class PullPlan:
    disks: tuple[PlannedDisk, ...]
    skipped: tuple[str, ...]
    incremental: str | None
    checkpoint: str
    checkpoint_xml: str
    fallback: str | None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(disk.target for disk in self.disks)


def validate_request(request: PullRequest) -> None:
    if not 0 < request.timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"--timeout must be between 1 s and {MAX_TIMEOUT_S:.0f} s, got "
                           f"{request.timeout_s:g}", code="backup.invalid")
    if request.incremental is not None and not request.incremental.strip():
        raise InvalidInput("--incremental needs a checkpoint name or 'auto'",
                           code="backup.invalid")


def plan_pull(
    job_id: str,
    request: PullRequest,
    disks: Sequence[DiskRecord],
    pools: Mapping[str, PoolRecord],
    checkpoints: Sequence[CheckpointDocument],
    health: Mapping[str, Mapping[str, DiskHealth]],
) -> PullPlan:
    """``checkpoints``: the VM's, oldest first; ``health``: per checkpoint, per disk."""
    validate_request(request)
    managed = [disk.target for disk in disks]
    targets = list(dict.fromkeys(request.targets)) or managed
    unknown = [t for t in targets if t not in managed]
    if unknown:
        raise NotFound(f"the VM has no disk {', '.join(unknown)}", code="disk.not_found")
    if not targets:
        raise InvalidInput("the VM has no disks to back up", code="backup.invalid")
    pool_of = {disk.target: disk.pool for disk in disks}
    scratch: dict[str, PoolRecord] = {}
    for target in targets:
        name = request.scratch_pool or pool_of[target]
        if name not in pools:
            raise NotFound(f"no pool named {name!r} for the scratch images",
                           code="pool.not_found")
        scratch[target] = pools[name]
    base, fallback = _base(request.incremental, checkpoints)
    planned = []
    for target in targets:
        mode, reason = "full", None
        if base is not None:
            mode, reason = _disk_mode(base, target, health.get(base.name, {}),
                                      auto=request.incremental == AUTO)
        planned.append(PlannedDisk(target, mode, scratch[target], reason))
    if base is not None and all(disk.mode == "full" for disk in planned):
        fallback = (f"no disk's bitmap in checkpoint {base.name} can be used: full backup"
                    f" ({'; '.join(d.reason for d in planned if d.reason)})")
        base = None
        planned = [PlannedDisk(d.target, "full", d.scratch_pool, d.reason) for d in planned]
    elif base is not None and any(disk.mode == "full" for disk in planned):
        fallback = "; ".join(d.reason for d in planned if d.reason)
    skipped = tuple(t for t in managed if t not in targets)
    checkpoint = f"bp-{job_id}"
    return PullPlan(
        disks=tuple(planned), skipped=skipped,
        incremental=base.name if base is not None else None, checkpoint=checkpoint,
        checkpoint_xml=checkpoint_xml(checkpoint, targets, skipped), fallback=fallback,
    )


def _base(requested: str | None, checkpoints: Sequence[CheckpointDocument]
          ) -> tuple[CheckpointDocument | None, str | None]:
    """The checkpoint to start from, and why there is none when ``auto`` found none."""
    if requested is None:
        return None, None
    if requested == AUTO:
        if not checkpoints:
            return None, "the VM has no checkpoint yet: full backup"
        return max(enumerate(checkpoints), key=lambda p: (p[1].created_at or 0, p[0]))[1], None
    for checkpoint in checkpoints:
        if checkpoint.name == requested:
            return checkpoint, None
    known = ", ".join(c.name for c in checkpoints) or "none"
    raise NotFound(f"no checkpoint {requested!r} (checkpoints: {known})",
                   code="checkpoint.not_found")


def _disk_mode(base: CheckpointDocument, target: str, health: Mapping[str, DiskHealth],
               *, auto: bool) -> tuple[str, str | None]:
    verdict = health.get(target, DiskHealth.UNKNOWN)
    tracked = any(d.target == target and d.bitmap for d in base.disks)
    if not tracked:
        return "full", f"{target} has no bitmap in checkpoint {base.name} (attached after it)"
    if verdict.usable:
        return "incremental", None
    why = f"the bitmap of checkpoint {base.name} on {target} is missing or inconsistent"
    if auto:
        return "full", f"{why}: {target} is exported fully"
    raise Conflict(f"{why}; back up fully, or with --incremental auto, which falls back to a "
                   "full export of that disk", code="checkpoint.inconsistent",
                   checkpoint=base.name, disk=target)
