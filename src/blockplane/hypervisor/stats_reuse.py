"""Reusing one bulk stats answer where a caller can accept it being a moment old.

On a full host one ``virConnectGetAllDomainStats`` costs about as much as a reconcile step
(seconds at 100 VMs under TCG: two QMP round trips per domain). Callers that only observe
(the reconcile confirmation, a metrics scrape) may say how old an answer they accept; callers
that act (the thin monitor) always get a fresh one, and every fresh answer is kept for reuse.
Reuse is opt-in per thread (``scope``), so code that calls ``bulk_stats`` without knowing about
it is never handed an old answer unless its caller chose so. Decides nothing about the stats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Records = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class StatsSnapshot:
    """One bulk stats answer: when the call started (``time.monotonic()``), for which groups."""

    taken_at: float
    groups: int
    records: Records

    def covers(self, groups: int, max_age_s: float, now: float) -> bool:
        return self.groups & groups == groups and now - self.taken_at <= max_age_s


class StatsReuse:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: StatsSnapshot | None = None
        self._scopes = threading.local()

    def keep(self, snapshot: StatsSnapshot) -> None:
        with self._lock:
            self._latest = snapshot

    def reusable(self, groups: int, max_age_s: float | None = None) -> StatsSnapshot | None:
        """The kept answer if it covers ``groups`` and is young enough for this caller.

        ``max_age_s`` None: whatever this thread's ``scope`` accepts (nothing outside one).
        """
        if max_age_s is None:
            max_age_s = getattr(self._scopes, "max_age_s", None)
            if max_age_s is None:
                return None
        with self._lock:
            latest = self._latest
        if latest is None or not latest.covers(groups, max_age_s, time.monotonic()):
            return None
        return latest

    @contextmanager
    def scope(self, max_age_s: float) -> Iterator[None]:
        """Within: ``bulk_stats`` on this thread may answer with a kept, young enough answer."""
        previous = getattr(self._scopes, "max_age_s", None)
        self._scopes.max_age_s = max_age_s
        try:
            yield
        finally:
            self._scopes.max_age_s = previous
