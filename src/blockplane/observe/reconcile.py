"""``ReconcileLog``: runs one reconcile pass over the agent's steps and remembers how it went.

Each step is timed and isolated (one failing step does not stop the others); a step that returns a
mapping of counts (``confirm.Confirmer``) has them recorded. A pass is ``full`` (every step looks
at everything) or ``quick`` (only at what changed); the agent decides which
(``runtime.reconcile_schedule``). ``GET /v1/reconcile`` (``report``) and the metrics read the
first pass (the one at agent start), the latest and the latest full one. Owns no reconcile logic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from blockplane.observe.views import PassView, ReconcileReport, StepView
from blockplane.store.intents import UnknownIntent

log = logging.getLogger(__name__)

Step = Callable[[], object]


@dataclass(frozen=True)
class StepRecord:
    name: str
    duration_s: float
    ok: bool
    error: str | None
    counts: dict[str, int]

    def view(self) -> StepView:
        return StepView(self.name, round(self.duration_s, 4), self.ok, self.error, self.counts)


@dataclass(frozen=True)
class PassRecord:
    number: int
    started_at: float
    duration_s: float
    steps: tuple[StepRecord, ...]
    kind: str = "full"

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def counts(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for step in self.steps:
            merged.update(step.counts)
        return merged

    def view(self) -> PassView:
        return PassView(
            number=self.number,
            started_at=self.started_at,
            finished_at=self.started_at + self.duration_s,
            duration_s=round(self.duration_s, 4),
            ok=self.ok,
            counts=self.counts(),
            steps=tuple(step.view() for step in self.steps),
            kind=self.kind,
        )


class ReconcileLog:
    def __init__(self) -> None:
        self.agent_started_at = time.time()
        self._lock = threading.Lock()
        self._first: PassRecord | None = None
        self._last: PassRecord | None = None
        self._last_full: PassRecord | None = None
        self._passes = 0
        self._full_passes = 0

    def run(self, steps: Sequence[Step], kind: str = "full") -> PassRecord:
        started_wall, started = time.time(), time.monotonic()
        records = tuple(_run_step(step) for step in steps)
        with self._lock:
            self._passes += 1
            record = PassRecord(self._passes, started_wall, time.monotonic() - started, records,
                                kind)
            self._first = self._first or record
            self._last = record
            if kind == "full":
                self._full_passes += 1
                self._last_full = record
        return record

    @property
    def last_full(self) -> PassRecord | None:
        with self._lock:
            return self._last_full

    @property
    def last(self) -> PassRecord | None:
        with self._lock:
            return self._last

    @property
    def passes(self) -> int:
        with self._lock:
            return self._passes

    def report(
        self,
        checked_at: float | None = None,
        disagreements: Sequence[str] = (),
        unknown_intents: Sequence[UnknownIntent] = (),
    ) -> ReconcileReport:
        """The first pass and the latest, with what the confirmation and the intent registry
        add: when everything was last checked, what disagreed, which intents are kept."""
        with self._lock:
            first, last, passes = self._first, self._last, self._passes
            last_full, full_passes = self._last_full, self._full_passes
        return ReconcileReport(
            agent_started_at=self.agent_started_at,
            passes=passes,
            confirmed=last is not None and last.ok and confirmed(last.counts()),
            first=first.view() if first else None,
            last=last.view() if last else None,
            checked_at=checked_at,
            disagreements=tuple(disagreements),
            unknown_intents=tuple(unknown_intents),
            full_passes=full_passes,
            last_full=last_full.view() if last_full else None,
        )


def confirmed(counts: Mapping[str, int]) -> bool:
    """Every IOThread plan and every thin volume was checked against libvirt and agreed."""
    return (
        "iothread_plans" in counts
        and counts["iothread_plans"] == counts.get("iothread_plans_confirmed")
        and counts.get("thin_volumes", 0) == counts.get("thin_volumes_confirmed", 0)
    )


def _run_step(step: Step) -> StepRecord:
    name = getattr(step, "__qualname__", None) or repr(step)
    started = time.monotonic()
    try:
        result = step()
    except Exception as error:
        log.exception("reconcile step %s failed", name)
        return StepRecord(name, time.monotonic() - started, False, str(error), {})
    counts = (
        {str(key): int(value) for key, value in result.items()}
        if isinstance(result, Mapping)
        else {}
    )
    return StepRecord(name, time.monotonic() - started, True, None, counts)
