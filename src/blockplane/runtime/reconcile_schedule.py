"""When the agent reconciles, and how much: quick passes often, a full pass now and then.

Events drive the work; reconcile passes are the safety net under them.
- A **quick** pass every ``reconcile_interval_s`` (2 s) looks only at what changed since the last
  pass: the thin volumes the host saw written and the VMs the event log names (one stats call
  for just those domains, none on an idle host), running jobs, and the confirmation of what
  events touched.
- A **full** pass looks at everything (one stats call for every domain, every IOThread plan
  against its VM's XML, capacity-scaled limits against each disk's size): at start, after the
  connection to libvirt came back or an abandoned call returned, and every
  ``full_reconcile_interval_s`` (60 s). A full interval no longer than the quick one makes every
  pass full, as before issue 21.

After a pass the agent idles ``reconcile_interval_s``, or twice the pass's own duration if that
is longer, so that passes never run back to back on a busy host. Owns only the timing; the steps
are the agent's.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class PassKind(enum.Enum):
    FULL = "full"
    QUICK = "quick"


class ReconcileSchedule:
    def __init__(
        self,
        interval_s: float,
        full_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"the reconcile interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.full_interval_s = full_interval_s
        self._clock = clock
        self._full_started_at: float | None = None

    @property
    def every_pass_full(self) -> bool:
        return self.full_interval_s <= self.interval_s

    def next_kind(self, *, forced_full: bool = False) -> PassKind:
        """The kind of the pass to run now (``forced_full``: something asked for a full one)."""
        last = self._full_started_at
        if forced_full or last is None or self.every_pass_full or (
            self._clock() - last >= self.full_interval_s
        ):
            return PassKind.FULL
        return PassKind.QUICK

    def started(self, kind: PassKind) -> None:
        if kind is PassKind.FULL:
            self._full_started_at = self._clock()

    def pause_s(self, last_duration_s: float | None) -> float:
        """How long to idle after a pass that took ``last_duration_s``."""
        return max(self.interval_s, 2 * (last_duration_s or 0.0))
