"""The thin bench's plot: volume size and guest progress against time, one panel per chunk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from matplotlib.figure import Figure

GIB = float(1 << 30)


class PlottedRun(Protocol):
    """What the plot reads of one run of the bench (``bench.thin.Run``)."""

    label: str
    rate_mib_s: float
    extends: int
    pauses: int
    sizes: list[tuple[float, int]]
    allocations: list[tuple[float, int]]
    extend_times: list[float]
    pause_spans: list[tuple[float, float]]

    @property
    def p99_ms(self) -> float: ...


def plot(runs: Sequence[PlottedRun], path: Path) -> Path:
    # Figure without pyplot: no GUI backend, no global state.
    figure = Figure(figsize=(9, 2.6 * len(runs) + 0.6))
    axes_list = figure.subplots(len(runs), 1, squeeze=False)[:, 0]
    for axes, run in zip(axes_list, runs, strict=True):
        axes.step([t for t, _ in run.sizes], [size / GIB for _, size in run.sizes],
                  where="post", label="volume size (loop device)")
        axes.plot([t for t, _ in run.allocations], [a / GIB for _, a in run.allocations], ".-",
                  label="guest progress (QEMU allocation, sampled)")
        for index, moment in enumerate(run.extend_times):
            axes.axvline(moment, color="tab:green", alpha=0.35, linewidth=0.8,
                         label="extend" if index == 0 else None)
        for index, (begin, end) in enumerate(run.pause_spans):
            axes.axvspan(begin, max(end, begin + 0.02), color="tab:red", alpha=0.25,
                         label="paused (ENOSPC)" if index == 0 else None)
        axes.set_title(f"{run.label}: {run.rate_mib_s:.0f} MiB/s, {run.extends} extends, "
                       f"{run.pauses} pauses, extend p99 {run.p99_ms:.0f} ms", fontsize=10)
        axes.set_ylabel("GiB")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
    axes_list[-1].set_xlabel("seconds since the write started")
    figure.tight_layout()
    path.parent.mkdir(exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
