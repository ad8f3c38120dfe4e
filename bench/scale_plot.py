"""The scale bench's plot: attach latency and the agent's memory against the VM count."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from bench.scale_phases import CreateResult, percentile

BUCKET = 10


def plot(result: CreateResult, path: Path) -> Path:
    # Figure without pyplot: no GUI backend, no global state.
    figure = Figure(figsize=(8, 7))
    latency_axes, memory_axes = figure.subplots(2, 1, sharex=True)
    buckets: dict[int, list[float]] = {}
    for vm in result.vms:
        upper = min(vm.index // BUCKET * BUCKET + BUCKET, len(result.vms))
        buckets.setdefault(upper, []).extend(vm.attach_s)
    counts = sorted(buckets)
    latency_axes.plot(counts, [percentile(buckets[c], 50) * 1000 for c in counts], "o-",
                      label="attach p50")
    latency_axes.plot(counts, [percentile(buckets[c], 99) * 1000 for c in counts], "s--",
                      label="attach p99")
    latency_axes.plot([vm.index + 1 for vm in result.vms],
                      [vm.create_s * 1000 for vm in result.vms], ".", alpha=0.4,
                      label="VM create + start")
    latency_axes.set_ylabel("ms (through the API)")
    latency_axes.set_title(f"disk attach (2 queues over 2 IOThreads"
                           f"{', 2-filter throttle chain' if result.chains else ', NO throttle'}"
                           f"), per {BUCKET} VMs")
    latency_axes.legend()
    latency_axes.grid(alpha=0.3)
    memory_axes.plot([n for n, _ in result.rss_series],
                     [rss / 2**20 for _, rss in result.rss_series], "-", label="agent RSS")
    memory_axes.set_ylabel("agent RSS (MiB)")
    memory_axes.set_xlabel("VMs (4 disks each)")
    memory_axes.grid(alpha=0.3)
    memory_axes.legend()
    figure.tight_layout()
    path.parent.mkdir(exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
