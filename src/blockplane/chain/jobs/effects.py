"""What the live chain says about a job: has a pivot, commit or pull taken effect?

These verdicts feed ``phases.PivotObserved`` and ``phases.JobAbsent`` when libvirt no longer
reports the job (an event was missed, or the agent was down), so that a vanished job is judged by
the chain itself and never assumed to have succeeded. Paths are compared after ``normpath``, as
recorded when the job was created. Must not call libvirt or touch the filesystem.
"""

from __future__ import annotations

import os

from blockplane.chain.jobs.phases import Effect
from blockplane.model.chain import Chain


def pivot_confirmed(chain: Chain, new_top_path: str) -> bool:
    """The new image is the active top and no ``<mirror>`` is left: the pivot took effect."""
    return chain.mirror is None and _same(chain.top.path, new_top_path)


def pivot_effect(chain: Chain, new_top_path: str, old_top_path: str) -> Effect:
    """For a copy (new top: the destination) or an active commit (new top: the base)."""
    if pivot_confirmed(chain, new_top_path):
        return Effect.APPLIED
    if _same(chain.top.path, old_top_path):
        return Effect.NOT_APPLIED
    return Effect.UNKNOWN


def commit_effect(chain: Chain, top_path: str, base_path: str) -> Effect:
    """An intermediate commit took effect when its top left the chain and its base stayed."""
    paths = _paths(chain)
    if os.path.normpath(top_path) in paths:
        return Effect.NOT_APPLIED
    if chain.complete and os.path.normpath(base_path) in paths:
        return Effect.APPLIED
    return Effect.UNKNOWN


def pull_effect(chain: Chain, top_path: str, base_path: str | None) -> Effect:
    """A pull took effect when the top sits directly on ``base_path`` (or on nothing)."""
    if not chain.complete or not _same(chain.top.path, top_path):
        return Effect.UNKNOWN
    below = chain.elements[1].path if len(chain.elements) > 1 else None
    if base_path is None:
        return Effect.APPLIED if below is None else Effect.NOT_APPLIED
    if below is not None and _same(below, base_path):
        return Effect.APPLIED
    if os.path.normpath(base_path) in _paths(chain):
        return Effect.NOT_APPLIED
    return Effect.UNKNOWN


def _paths(chain: Chain) -> set[str]:
    return {os.path.normpath(p) for p in chain.paths()}


def _same(left: str, right: str) -> bool:
    return os.path.normpath(left) == os.path.normpath(right)
