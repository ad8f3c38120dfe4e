"""What the throttle services answer: groups, and the effective limits of a disk
(``model.view``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.model.view import KEY_IF_SET


@dataclass(frozen=True)
class DiskUse:
    """One disk whose filter chain uses a group: where in the chain, and the whole chain."""

    target: str
    position: int
    chain: tuple[str, ...]


@dataclass(frozen=True)
class ThrottleGroupView:
    """A group as the current definition has it (``definition``), whether the live and the
    persistent definition have it, the disks using it, and ``differs``: the other definition's
    limits where they are not the same (the key is absent when they agree)."""

    vm: str
    group: str
    limits: dict[str, int]
    definition: str
    live: bool
    config: bool
    disks: tuple[DiskUse, ...]
    differs: dict[str, dict[str, int]] | None = field(default=None, kw_only=True,
                                                      metadata=KEY_IF_SET)


@dataclass(frozen=True, kw_only=True)
class ThrottleGroupSetResult(ThrottleGroupView):
    created: bool
    changed: tuple[str, ...]


@dataclass(frozen=True)
class ThrottleGroupDeleteResult:
    vm: str
    group: str
    deleted: bool
    definitions: tuple[str, ...]


@dataclass(frozen=True)
class TierView:
    """One filter of a disk's chain; ``limits`` None for a named group defined elsewhere."""

    group: str
    origin: str
    limits: dict[str, int] | None


@dataclass(frozen=True)
class TiersView:
    """A disk's chain at one size, narrowest scope first, and its own limits after scaling."""

    vm: str
    target: str
    size_bytes: int
    per_disk_limits: dict[str, int]
    chain: tuple[TierView, ...]


@dataclass(frozen=True, kw_only=True)
class DiskLimitsView(TiersView):
    """The effective limits of an attached disk: ``tightest`` is, per average limit, the lowest
    value any filter sets (what the disk reaches at most when it runs alone)."""

    mode: str
    reason: str
    tightest: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class RescaleResult(TiersView):
    changed: bool
