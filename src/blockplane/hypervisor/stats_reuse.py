"""Reusing one bulk stats answer where a caller can accept it being a moment old.

On a full host one ``virConnectGetAllDomainStats`` costs about as much as a reconcile step
(seconds at 100 VMs under TCG: two QMP round trips per domain). Callers that only observe
(the reconcile confirmation, a metrics scrape) may say how old an answer they accept; callers
that act (the thin monitor) always get a fresh one, and every fresh answer is kept for reuse.
Reuse is opt-in per thread (``scope``), so code that calls ``bulk_stats`` without knowing about
it is never handed an old answer unless its caller chose so. An answer for some domains only
(``Hypervisor.bulk_stats(domains=...)``) serves only callers that ask for those domains, and is
kept beside the last answer for all of them, not instead; an answer taken without waiting for
busy domains (``nowait``) serves only callers that accept one. Decides nothing about the stats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Records = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class StatsSnapshot:
    """One bulk stats answer: when the call started (``time.monotonic()``), for which groups,
    and for which domains (None: every active one; a domain asked for but not running is
    absent from ``records`` either way)."""

    taken_at: float
    groups: int
    records: Records
    domains: frozenset[str] | None = None
    nowait: bool = False

    def covers(
        self, groups: int, max_age_s: float, now: float, domains: Collection[str] | None = None,
        nowait: bool = False,
    ) -> bool:
        if self.groups & groups != groups or now - self.taken_at > max_age_s:
            return False
        if self.nowait and not nowait:
            return False
        return self.domains is None or (domains is not None and self.domains.issuperset(domains))

    def only(self, domains: Collection[str] | None) -> StatsSnapshot:
        """This answer cut to ``domains`` (None: as it is)."""
        if domains is None:
            return self
        wanted = frozenset(domains)
        return StatsSnapshot(self.taken_at, self.groups,
                             [(name, stats) for name, stats in self.records if name in wanted],
                             wanted, self.nowait)


class StatsReuse:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The latest answer of each kind: (for every domain?, taken without waiting?).
        self._latest: dict[tuple[bool, bool], StatsSnapshot] = {}
        self._scopes = threading.local()

    def keep(self, snapshot: StatsSnapshot) -> None:
        with self._lock:
            self._latest[(snapshot.domains is None, snapshot.nowait)] = snapshot

    def reusable(
        self, groups: int, max_age_s: float | None = None, domains: Collection[str] | None = None,
        nowait: bool = False,
    ) -> StatsSnapshot | None:
        """A kept answer that covers ``groups`` (and ``domains``, None: all) and is young enough
        for this caller, cut to ``domains``.

        ``max_age_s`` None: whatever this thread's ``scope`` accepts (nothing outside one).
        """
        if max_age_s is None:
            max_age_s = getattr(self._scopes, "max_age_s", None)
            if max_age_s is None:
                return None
        now = time.monotonic()
        with self._lock:
            kept = sorted(self._latest.values(), key=lambda snapshot: -snapshot.taken_at)
        for snapshot in kept:
            if snapshot.covers(groups, max_age_s, now, domains, nowait):
                return snapshot.only(domains)
        return None

    @contextmanager
    def scope(self, max_age_s: float) -> Iterator[None]:
        """Within: ``bulk_stats`` on this thread may answer with a kept, young enough answer."""
        previous = getattr(self._scopes, "max_age_s", None)
        self._scopes.max_age_s = max_age_s
        try:
            yield
        finally:
            self._scopes.max_age_s = previous
