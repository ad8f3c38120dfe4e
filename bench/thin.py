"""Thin provisioning under a guest writing flat out: does growth keep ahead of the writes?

A throwaway agent boots the bundled Linux guest. For each chunk size (a loop pool each,
utilization 20%, VDSM's default) a fresh thin disk is hotplugged and the guest writes 2 GiB
sequentially with ``dd bs=1M oflag=direct`` as fast as it can. The host samples the volume's
size from its loop device and QEMU's allocation (its highest written offset: the guest's
progress) through the API, and the agent's ``thin.*`` events give the extends, their latency
(event to re-armed) and the ENOSPC pauses. Where the flat-out run paused, fio repeats it at
75%, 50% and 25% of that rate (``--rate``) to find the highest rate with no pause. The plot
(``bench/out/thin.png``) shows size and progress against time, extends marked, pauses shaded.

    python -m bench.thin [--size-mib 2048] [--chunks 64,128,256] [--stress]

Every configuration runs with the adaptive extension (``thin.adaptive``, the default).
``--stress`` adds a 64 MiB chunk at 90% utilization (a 6.4 MiB reserve) twice, side by side:
with VDSM's fixed chunk (the agent restarted with ``BLOCKPLANE_THIN_STEP=fixed``), and adaptive.
For each it also reports the pool's over-allocation at the end (physical minus allocation).
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import OUT, bench_agent, guest_run, save, wait_for_block_device
from bench.scale_phases import percentile
from bench.thin_plot import plot
from blockplane.cli.client import AgentClient, api_path, start_agent, stop_agent

MIB = 1 << 20
VM = "thinbench"
SAMPLE_S = 0.05
SIZE_SAMPLE_S = 0.02
GOAL_P99_S = 0.25
VDSM_S = (0.77, 1.39)


@dataclass
class Run:
    label: str
    chunk_mib: int
    utilization: int
    rate_limit_mib_s: float | None
    mode: str = "adaptive"
    over_allocation: int = 0
    reserves: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    rates: list[int] = field(default_factory=list)
    seconds: float = 0.0
    rate_mib_s: float = 0.0
    extends: int = 0
    pauses: int = 0
    paused_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    sizes: list[tuple[float, int]] = field(default_factory=list)
    allocations: list[tuple[float, int]] = field(default_factory=list)
    extend_times: list[float] = field(default_factory=list)
    pause_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 99) * 1000


class Sampler(threading.Thread):
    """The volume's size straight from its loop device (sysfs, every 20 ms) and QEMU's
    allocation from ``GET /v1/thin`` (as fast as QEMU answers stats: every 0.2-0.5 s under
    TCG, where the vCPU threads hold QEMU's big lock most of the time)."""

    def __init__(self, client: AgentClient, target: str, device: str) -> None:
        super().__init__(daemon=True)
        self.client, self.target = client, target
        self.size_file = Path("/sys/block") / Path(device).name / "size"
        self.sizes: list[tuple[float, int]] = []
        self.allocations: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.sizer = threading.Thread(target=self._sizes, daemon=True)

    def run(self) -> None:
        self.sizer.start()
        while not self.stop.is_set():
            asked = time.time()
            rows = self.client.request("GET", "/v1/thin", vm=VM)
            moment = (asked + time.time()) / 2  # the agent read the stats mid-request
            for row in rows:
                if row["target"] == self.target and row["allocation"] is not None:
                    self.allocations.append((moment, row["allocation"]))
            self.stop.wait(SAMPLE_S)
        self.sizer.join()

    def _sizes(self) -> None:
        while not self.stop.is_set():
            self.sizes.append((time.time(), int(self.size_file.read_text()) * 512))
            self.stop.wait(SIZE_SAMPLE_S)


def guest_try(client: AgentClient, script: str) -> str | None:
    """A guest command that may meet the VM paused (libvirt refuses the agent meanwhile)."""
    try:
        return guest_run(client, VM, script, timeout=60)
    except Exception:
        return None


def write(client: AgentClient, device: str, size_mib: int, rate: float | None) -> float:
    """Write ``size_mib`` flat out (or at ``rate`` MiB/s with fio); the guest's seconds."""
    if rate is None:
        command = f"time dd if=/dev/zero of={device} bs=1M count={size_mib} oflag=direct"
    else:
        command = (f"time fio --name=w --filename={device} --rw=write --bs=1M --direct=1 "
                   f"--ioengine=libaio --iodepth=1 --size={size_mib}M --rate={int(rate)}m")
    guest_run(client, VM, f"rm -f /tmp/w.rc; (({command}) >/tmp/w.log 2>&1; echo $? >/tmp/w.rc)"
              " >/dev/null 2>&1 &")
    deadline = time.monotonic() + 600
    while (rc := guest_try(client, "cat /tmp/w.rc 2>/dev/null || true")) is None or not rc.strip():
        if time.monotonic() > deadline:
            raise RuntimeError("the guest's write did not finish")
        time.sleep(0.25)
    log = guest_run(client, VM, "cat /tmp/w.log")
    if rc.strip() != "0":
        raise RuntimeError(f"the guest's write failed: {log}")
    match = re.search(r"real\s+(\d+)m\s*([\d.]+)s", log)
    if match is None:
        raise RuntimeError(f"no timing in {log!r}")
    return int(match[1]) * 60 + float(match[2])


def measure(client: AgentClient, run: Run, size_mib: int, pool: str) -> Run:
    disk = client.request("POST", api_path("vms", VM, "disks"),
                          {"pool": pool, "size": f"{size_mib + 1024}M", "thin": True})
    wait_for_block_device(client, VM, disk["target"])
    sampler = Sampler(client, disk["target"], disk["source"])
    started = time.time()
    sampler.start()
    run.seconds = write(client, f"/dev/{disk['target']}", size_mib, run.rate_limit_mib_s)
    sampler.stop.set()
    sampler.join()
    [row] = [r for r in client.request("GET", "/v1/thin", vm=VM) if r["target"] == disk["target"]]
    run.over_allocation = row["physical"] - row["allocation"]
    run.rate_mib_s = size_mib / run.seconds
    run.sizes = [(t - started, size) for t, size in sampler.sizes]
    run.allocations = [(t - started, allocation) for t, allocation in sampler.allocations]
    events = client.request("GET", "/v1/events", vm=VM, limit=5000)
    mine = [e for e in events if e.get("volume") == disk["volume"] and e["at"] >= started]
    extended = [e for e in mine if e["type"] == "thin.extended"]
    run.extends = len(extended)
    run.latencies_s = [e["latency_s"] for e in extended if e["cause"] == "event"]
    run.extend_times = [e["at"] - started for e in extended]
    run.reserves = [e.get("reserve_bytes", 0) for e in extended]
    run.steps = [e.get("step_bytes", 0) for e in extended]
    run.rates = [e.get("rate_bytes_s", 0) for e in extended]
    paused = [e["at"] - started for e in mine if e["type"] == "thin.paused"]
    resumed = [e for e in mine if e["type"] == "thin.resumed"]
    run.pauses = len(paused)
    run.paused_s = sum(e["paused_s"] or 0.0 for e in resumed)
    run.pause_spans = [(begin, e["at"] - started) for begin, e in zip(paused, resumed,
                                                                      strict=False)]
    client.request("DELETE", api_path("vms", VM, "disks", disk["target"]))
    return run


def configurations(chunks: list[int], stress: bool) -> list[tuple[int, int, str]]:
    stressed = [(64, 90, "fixed"), (64, 90, "adaptive")] if stress else []
    return [(chunk, 20, "adaptive") for chunk in chunks] + stressed


def use_step_mode(client: AgentClient, mode: str, current: str) -> str:
    """Restart the agent with ``BLOCKPLANE_THIN_STEP=mode`` if it runs another (the VM keeps
    running; the agent process only)."""
    if mode == current:
        return mode
    stop_agent(client.settings)
    os.environ["BLOCKPLANE_THIN_STEP"] = mode
    try:
        start_agent(client.settings)
    finally:
        os.environ.pop("BLOCKPLANE_THIN_STEP", None)
    return mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--chunks", default="64,128,256")
    parser.add_argument("--stress", action="store_true")
    args = parser.parse_args()
    chunks = [int(value) for value in args.chunks.split(",")]
    runs: list[Run] = []
    ladders: dict[str, list[Run]] = {}
    load_before = os.getloadavg()[0]
    with bench_agent() as client:
        client.request("POST", "/v1/vms", {"name": VM, "vcpus": 2, "memory": "1G",
                                           "guest": "linux", "start": True})
        mode_now = "adaptive"
        for chunk, utilization, mode in configurations(chunks, args.stress):
            mode_now = use_step_mode(client, mode, mode_now)
            pool = f"c{chunk}u{utilization}{mode[0]}"
            client.request("POST", "/v1/pools", {"name": pool, "type": "loop",
                                                 "chunk": f"{chunk}M",
                                                 "utilization": utilization})
            label = f"{chunk} MiB @ {utilization}% {mode}"
            run = measure(client, Run(label, chunk, utilization, None, mode), args.size_mib, pool)
            runs.append(run)
            ladders[label] = []
            for fraction in (0.75, 0.5, 0.25) if run.pauses else ():
                limited = Run(label, chunk, utilization, round(run.rate_mib_s * fraction), mode)
                ladders[label].append(measure(client, limited, args.size_mib, pool))
                if limited.pauses == 0:
                    break
    report(runs, ladders)
    # Other work on the host steals the guest's and the agent's CPU: say how busy it was.
    load = (load_before, os.getloadavg()[0])
    print(f"host load average (1 min) before/after: {load[0]:.1f}/{load[1]:.1f}")
    data: dict[str, Any] = {"load_average": load, "runs": [asdict(r) for r in runs],
                            "ladders": {k: [asdict(r) for r in v] for k, v in ladders.items()}}
    print(f"\nraw results: {save('thin', data)}; plot: {plot(runs, OUT / 'thin.png')}")


def zero_pause_rate(run: Run, ladder: list[Run]) -> str:
    if run.pauses == 0:
        return f"{run.rate_mib_s:.0f} (flat out)"
    calm = [r for r in ladder if r.pauses == 0]
    return f"{calm[0].rate_mib_s:.0f}" if calm else "none found (>= 25% still paused)"


def report(runs: list[Run], ladders: dict[str, list[Run]]) -> None:
    print("| chunk | write MiB/s | extends | pauses (s paused) | extend p50 | extend p99 "
          "| p99 vs 250 ms | highest MiB/s with 0 pauses |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        calm = zero_pause_rate(run, ladders[run.label])
        print(f"| {run.label} | {run.rate_mib_s:.0f} | {run.extends} | {run.pauses} "
              f"({run.paused_s:.1f}) | {run.p50_ms:.1f} ms | {run.p99_ms:.1f} ms "
              f"| {run.p99_ms / 1000 / GOAL_P99_S:.2f} | {calm} |")
    for label, ladder in ladders.items():
        for run in ladder:
            print(f"  {label} at {run.rate_limit_mib_s} MiB/s: {run.rate_mib_s:.0f} MiB/s, "
                  f"{run.pauses} pauses")
    print("\n| configuration | over-allocation at the end | reserve (min-max) | steps "
          "| measured rate p50 |")
    print("|---|---|---|---|---|")
    for run in runs:
        rates = [rate for rate in run.rates if rate]
        steps = sorted({step // MIB for step in run.steps})
        print(f"| {run.label} | {run.over_allocation / MIB:.1f} MiB "
              f"({run.over_allocation / (run.chunk_mib * MIB):.2f} chunks) "
              f"| {min(run.reserves, default=0) / MIB:.1f}-{max(run.reserves, default=0) / MIB:.1f}"
              f" MiB | {steps} MiB | "
              f"{percentile([float(r) for r in rates], 50) / MIB if rates else 0:.0f} MiB/s |")
    stressed = {run.mode: run for run in runs if run.utilization == 90}
    if {"fixed", "adaptive"} <= set(stressed):
        extra = stressed["adaptive"].over_allocation - stressed["fixed"].over_allocation
        print(f"\nstress, adaptive vs fixed: {stressed['adaptive'].pauses} vs "
              f"{stressed['fixed'].pauses} pauses flat out; over-allocation "
              f"{extra / MIB:+.1f} MiB ({extra / (64 * MIB):+.2f} chunks; goal <= +2)")
    every = [latency for run in runs for latency in run.latencies_s]
    if every:
        p99 = percentile(every, 99)
        low, high = VDSM_S
        print(f"\nall event-driven extends: n={len(every)}, p50 "
              f"{percentile(every, 50) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; VDSM's "
              f"{low:.2f}-{high:.2f} s is {low / p99:.0f}-{high / p99:.0f}x that")


if __name__ == "__main__":
    main()
