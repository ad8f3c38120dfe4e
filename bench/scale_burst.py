"""The event burst of the scale bench: every thin volume's write threshold crossed at once.

No-OS guests cannot write, so the writes are injected with QEMU's ``qemu-io`` through the
human monitor, on each disk's own device backend (through its throttle chain, as guest writes
go). Only the process holding the embedded libvirt root can reach a monitor, so for this phase
the bench stops the agent process and runs the same ``Agent`` (same home, same code, same
handlers) inside itself, on a thread; the writes use its connection, everything else still goes
through the HTTP API. This is a bench-only path: the agent never sends monitor commands itself.
Domains get libvirt's ``custom-monitor`` taint.

Measured per volume: the thin monitor's own latency (libvirt's callback to the re-armed
threshold, ``thin.extended`` events), and whether the extend came from the event (``cause``
``event``) or only from a reconcile pass (a missed event).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from bench.scale_api import Api
from bench.scale_phases import percentile
from blockplane.cli.client import stop_agent
from blockplane.config import Settings
from blockplane.runtime.agent import Agent
from blockplane.runtime.services import build_services

WRITERS = 8
SETTLE_TIMEOUT_S = 60.0


@contextmanager
def agent_in_process(settings: Settings, api: Api) -> Iterator[Agent]:
    """Stop the agent process (VMs keep running) and serve the same home from this one."""
    stop_agent(settings)
    api.reset()
    agent = Agent(build_services(settings))
    loop = asyncio.new_event_loop()
    serving = loop.create_task(agent.serve())

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serving)

    thread = threading.Thread(target=run, name="bench-agent", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            api.call("GET", "/v1/health")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            api.reset()
            time.sleep(0.1)
    try:
        yield agent
    finally:
        loop.call_soon_threadsafe(serving.cancel)
        thread.join(60)
        api.reset()


def qemu_io_write(agent: Agent, vm: str, target: str, length: int) -> float:
    """Write ``length`` bytes at offset 0 of ``vm``'s disk; returns when the write started."""
    device = f"/machine/peripheral/ua-bp-{target}/virtio-backend"
    command = f'qemu-io -d {device} "write 0 {length}"'
    domain = agent.services.hypervisor.lookup(vm)
    started = time.time()
    reply = domain.monitor_command(
        {"execute": "human-monitor-command", "arguments": {"command-line": command}}
    )
    if reply.get("return"):
        raise RuntimeError(f"qemu-io on {vm}/{target}: {reply['return']!r}")
    return started


def burst(agent: Agent, api: Api) -> dict[str, Any]:
    volumes = api.call("GET", "/v1/thin")
    armed = [v for v in volumes if v["running"] and v["state"] == "set" and v["threshold"]]
    # One disk of every VM, then the next: a monitor write holds its domain's libvirt job, so
    # writes to the same VM side by side would hold up the agent's re-arm of the disk before.
    armed.sort(key=lambda v: (v["target"], v["vm"]))
    last_event = api.call("GET", "/v1/events", limit=1)
    mark = last_event[-1]["id"] if last_event else 0
    started_wall, started = time.time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=WRITERS) as writers:
        # Past the threshold by one qcow2 cluster's worth of metadata at least.
        written = list(writers.map(
            lambda v: qemu_io_write(agent, v["vm"], v["target"], int(v["threshold"])), armed
        ))
    injected_s = time.perf_counter() - started
    wanted = {(v["vm"], v["target"]) for v in armed}
    extended: dict[tuple[str, str], dict[str, Any]] = {}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while len(extended) < len(wanted) and time.monotonic() < deadline:
        # Only new events, once a second: this process also runs the agent under test.
        time.sleep(1.0)
        for event in api.call("GET", "/v1/events", after=mark, limit=10000):
            mark = max(mark, int(event["id"]))
            key = (event["vm"], event["target"]) if event["type"] == "thin.extended" else None
            if key in wanted:
                extended.setdefault(key, event)
    settled_s = time.perf_counter() - started
    by_event = [e for e in extended.values() if e.get("cause") == "event"]
    latencies = [float(e["latency_s"]) for e in by_event]
    arrivals = sorted(by_event, key=lambda e: float(e["at"]) - float(e["latency_s"]))
    tenth = max(1, len(arrivals) // 10)
    by_arrival = [round(max(float(e["latency_s"]) for e in arrivals[i:i + tenth]), 3)
                  for i in range(0, len(arrivals), tenth)]
    write_started = {(v["vm"], v["target"]): at for v, at in zip(armed, written, strict=True)}
    end_to_end = [float(e["at"]) - write_started[key] for key, e in extended.items()]
    return {
        "volumes": len(volumes),
        "armed": len(armed),
        "writers": WRITERS,
        "injection_spread_s": round(injected_s, 3),
        "all_settled_s": round(settled_s, 3),
        "extended": len(extended),
        "extended_by_event": len(by_event),
        "extended_by_reconcile_only": len(extended) - len(by_event),
        "not_extended": len(wanted) - len(extended),
        "handler_latency_p50_s": round(percentile(latencies, 50), 4),
        "handler_latency_p99_s": round(percentile(latencies, 99), 4),
        "handler_latency_max_s": round(max(latencies), 4) if latencies else None,
        "handler_latency_max_by_arrival_tenth_s": by_arrival,
        "write_start_to_extended_p50_s": round(percentile(end_to_end, 50), 4),
        "write_start_to_extended_p99_s": round(percentile(end_to_end, 99), 4),
        "started_at": started_wall,
    }

