"""From a request and the live chain to a job's kind and ``JobSpec``: commit, pull and copy.

Validates everything before anything is written or created (``addressing`` for the elements,
pool confinement for a copy destination). Must not create volumes, persist or call libvirt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from blockplane.chain.addressing import libvirt_name_of, validate_commit, validate_pull
from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import JobKind
from blockplane.errors import Conflict, InvalidInput, PathEscape
from blockplane.model.chain import Chain, ChainElement
from blockplane.storage.names import confine, validate_volume_name
from blockplane.store.records import PoolRecord


@dataclass(frozen=True)
class BlockJobPlan:
    kind: JobKind
    spec: JobSpec
    pivot: bool
    #: libvirt's names for the call (``vda[N]``), never stored: they change at each VM start.
    libvirt_top: str | None = None
    libvirt_base: str | None = None


def plan_commit(
    chain: Chain, top: ChainElement | None, base: ChainElement | None, *, pivot: bool,
    bandwidth: int,
) -> BlockJobPlan:
    _require_idle(chain)
    plan = validate_commit(chain, top, base)
    if pivot and not plan.active:
        raise InvalidInput(
            f"--pivot applies to an active commit (top {chain.target}); {plan.top.name} is not"
            " the active top", code="job.invalid_request")
    spec = JobSpec(
        targets=(chain.target,), bandwidth=bandwidth,
        top_name=plan.top.name, base_name=plan.base.name,
        top_path=plan.top.path, base_path=plan.base.path,
        new_top_path=plan.base.path if plan.active else None,
        invalidated=tuple(e.path for e in plan.invalidated),
    )
    return BlockJobPlan(
        JobKind.ACTIVE_COMMIT if plan.active else JobKind.COMMIT, spec, pivot,
        libvirt_name_of(chain, plan.top), libvirt_name_of(chain, plan.base),
    )


def plan_pull(chain: Chain, base: ChainElement | None, *, bandwidth: int) -> BlockJobPlan:
    _require_idle(chain)
    plan = validate_pull(chain, base)
    spec = JobSpec(
        targets=(chain.target,), bandwidth=bandwidth,
        top_name=chain.top.name, top_path=chain.top.path,
        base_name=plan.base.name if plan.base else None,
        base_path=plan.base.path if plan.base else None,
        invalidated=tuple(e.path for e in plan.invalidated),
    )
    return BlockJobPlan(JobKind.PULL, spec, False, libvirt_name_of(chain, chain.top),
                        libvirt_name_of(chain, plan.base) if plan.base else None)


def plan_copy(
    chain: Chain, *, shallow: bool, synchronous_writes: bool, pivot: bool, bandwidth: int
) -> BlockJobPlan:
    """The destination is added by the service once its volume exists (``spec.destination``)."""
    _require_idle(chain)
    libvirt_name_of(chain, chain.top)
    kept_below = shallow and len(chain.elements) > 1
    invalidated = chain.elements[:1] if kept_below else chain.elements
    spec = JobSpec(
        targets=(chain.target,), bandwidth=bandwidth,
        top_name=chain.top.name, top_path=chain.top.path,
        base_path=chain.elements[1].path if kept_below else None,
        invalidated=tuple(e.path for e in invalidated),
        shallow=kept_below, synchronous_writes=synchronous_writes,
    )
    return BlockJobPlan(JobKind.COPY, spec, pivot)


def copy_destination(
    pools: list[PoolRecord], dest_path: str | None, pool_name: str | None, default_name: str
) -> tuple[str, str]:
    """(pool, volume name) of a copy destination given as ``--dest PATH`` or ``--pool P``.

    A path must lie directly inside a dir pool's directory (block pools hand out devices, not
    paths: use ``--pool`` for them); it becomes a volume of that pool.
    """
    if (dest_path is None) == (pool_name is None):
        raise InvalidInput("give exactly one of --dest PATH and --pool POOL",
                           code="job.invalid_request")
    if pool_name is not None:
        if not any(pool.name == pool_name for pool in pools):
            raise InvalidInput(f"no pool named {pool_name!r}", code="pool.not_found")
        return pool_name, validate_volume_name(default_name)
    assert dest_path is not None
    if not os.path.isabs(dest_path) or "\x00" in dest_path:
        raise InvalidInput("--dest must be an absolute path", code="job.invalid_request")
    parent = os.path.realpath(os.path.dirname(dest_path))
    name = os.path.basename(dest_path)
    for pool in pools:
        if pool.type == "dir" and os.path.realpath(pool.path) == parent:
            resolved = confine(Path(pool.path), name)
            if os.path.exists(resolved):
                raise Conflict(f"{dest_path} already exists", code="volume.exists")
            return pool.name, name
    dir_pools = ", ".join(f"{p.name} ({p.path})" for p in pools if p.type == "dir") or "none"
    raise PathEscape(
        f"--dest {dest_path} is not directly inside a dir pool (dir pools: {dir_pools}); copy"
        " destinations must be pool volumes", name=name)


def _require_idle(chain: Chain) -> None:
    if chain.mirror is not None:
        raise Conflict(
            f"{chain.target} is busy: a {chain.mirror.job} job blockplane did not start is"
            f" mirroring it into {chain.mirror.path}", code="job.busy")
