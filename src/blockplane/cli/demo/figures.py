"""What the tour measured: figures with the bounds they must fall in, step reports, the summary.

Pure data and arithmetic: nothing here talks to the agent or prints. A figure's bounds come from
what the agent answered in the same run (a limit read back, a chunk size, the checksum of the
data written), never from a constant that could drift from what was applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "skipped", "interrupted"]


@dataclass(frozen=True)
class Figure:
    """One measured value. Numbers may have ``low``/``high`` bounds; text (a checksum) may have
    an ``expected`` value it must equal. ``basis`` says where the bounds came from."""

    name: str
    value: float | str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    expected: str | None = None
    basis: str = ""

    @property
    def bounded(self) -> bool:
        return self.expected is not None or self.low is not None or self.high is not None

    @property
    def within(self) -> bool | None:
        """True or False against the bounds; None for a figure shown for information only."""
        if self.expected is not None:
            return str(self.value) == self.expected
        if self.low is None and self.high is None:
            return None
        if isinstance(self.value, str):
            return False
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        return low <= self.value <= high

    def value_text(self) -> str:
        if isinstance(self.value, str):
            shown = self.value[:16] + "…" if len(self.value) > 24 else self.value
        elif float(self.value).is_integer() and abs(self.value) < 1e15:
            shown = f"{int(self.value)}"
        elif abs(self.value) >= 100:
            shown = f"{self.value:.0f}"
        else:
            shown = f"{self.value:.3g}"
        return f"{shown} {self.unit}".strip()

    def bounds_text(self) -> str:
        if self.expected is not None:
            expected = self.expected[:16] + "…" if len(self.expected) > 24 else self.expected
            text = f"= {expected}"
        elif self.low is not None and self.high is not None:
            text = f"{_number(self.low)}-{_number(self.high)}" if self.low != self.high \
                else f"= {_number(self.low)}"
        elif self.low is not None:
            text = f">= {_number(self.low)}"
        elif self.high is not None:
            text = f"<= {_number(self.high)}"
        else:
            return ""
        return f"{text}: {self.basis}" if self.basis else text

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "low": self.low,
            "high": self.high,
            "expected": self.expected,
            "basis": self.basis,
            "within": self.within,
        }


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def near(name: str, value: float, target: float, tolerance: float, unit: str,
         basis: str) -> Figure:
    """``value`` within ``tolerance`` (a fraction) of ``target``."""
    return Figure(name, value, unit, low=target * (1 - tolerance), high=target * (1 + tolerance),
                  basis=f"{basis} ±{tolerance:.0%}")


def exactly(name: str, value: float, target: float, unit: str = "", basis: str = "") -> Figure:
    return Figure(name, value, unit, low=target, high=target, basis=basis)


def at_least(name: str, value: float, minimum: float, unit: str = "", basis: str = "") -> Figure:
    return Figure(name, value, unit, low=minimum, basis=basis)


def equal(name: str, value: str, expected: str, basis: str = "") -> Figure:
    return Figure(name, value, expected=expected, basis=basis)


def measured(name: str, value: float | str, unit: str = "") -> Figure:
    """Shown for information; no bounds (a latency or a rate on a shared host is no test)."""
    return Figure(name, value, unit)


@dataclass(frozen=True)
class StepOutcome:
    """What a step returns: its title (what was really applied, read back from the answers),
    a one-line account of what it showed, its figures, and which one is the key figure."""

    title: str
    showed: str
    figures: tuple[Figure, ...]
    key: str

    def key_figure(self) -> Figure | None:
        return next((figure for figure in self.figures if figure.name == self.key), None)


@dataclass(frozen=True)
class StepReport:
    name: str
    label: str
    status: Status
    seconds: float
    title: str = ""
    showed: str = ""
    figures: tuple[Figure, ...] = ()
    key: str = ""
    error: str = ""

    @classmethod
    def of(cls, name: str, label: str, outcome: StepOutcome, seconds: float) -> StepReport:
        outside = [figure for figure in outcome.figures if figure.within is False]
        error = "; ".join(
            f"{figure.name} {figure.value_text()} is not {figure.bounds_text()}"
            for figure in outside)
        return cls(name, label, "failed" if outside else "ok", seconds, outcome.title,
                   outcome.showed, outcome.figures, outcome.key, error)

    def key_figure(self) -> Figure | None:
        return next((figure for figure in self.figures if figure.name == self.key), None)

    def to_json(self) -> dict[str, Any]:
        key = self.key_figure()
        return {
            "name": self.name,
            "label": self.label,
            "status": self.status,
            "title": self.title,
            "showed": self.showed,
            "key_figure": key.to_json() if key else None,
            "figures": [figure.to_json() for figure in self.figures],
            "seconds": round(self.seconds, 3),
            "error": self.error or None,
        }


@dataclass(frozen=True)
class Phase:
    """Set-up or clean-up: what it did, how long it took, what it could not do."""

    seconds: float
    did: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "did": list(self.did), "left": list(self.left)}


@dataclass(frozen=True)
class TourReport:
    steps: tuple[StepReport, ...]
    seconds: float
    setup: Phase
    cleanup: Phase
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (not self.interrupted and not self.cleanup.left
                and all(step.status in ("ok", "skipped") for step in self.steps))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "setup": self.setup.to_json(),
            "steps": [step.to_json() for step in self.steps],
            "cleanup": self.cleanup.to_json(),
            **self.extra,
        }


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
