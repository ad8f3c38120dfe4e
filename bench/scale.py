"""A full host: 100 no-OS VMs x 4 thin disks through the API, and what the agent costs then.

Runs on a throwaway agent (embedded libvirt, TCG) with a loop pool on tmpfs (4 MiB chunks, 50%
utilization) and measures, printing ratios and goals:

1. creating the VMs (64 MiB, started) and their disks (qcow2, 2 queues over 2 IOThreads, a
   2-level throttle chain), 2 clients in parallel: throughput, p50/p99 per attach, and the
   agent's RSS at 0, 25, 50 and 100% of the VMs;
2. what observing costs at that size: ``GET /v1/top``, ``GET /v1/metrics``, the periodic
   reconcile passes (the latest quick one and the latest full one);
   idle: the agent's CPU over ``--idle-s`` (60 s) and its RSS, side by side with quick passes
   (the default: a full pass every 60 s) and with every pass full
   (``BLOCKPLANE_FULL_RECONCILE_S=0``, the behaviour before issue 21), each on an agent just
   restarted (goal: <= 3% of one core; RSS <= 120 MiB);
3. a restart reconcile: SIGKILL, start again, until ``GET /v1/reconcile`` reports every
   IOThread plan and thin threshold confirmed against libvirt (goal: <= 2 s for 400 volumes);
4. the API overhead of ``disk attach`` against virsh by hand on ``qemu:///system``
   (``bench.scale_system``; goal: ratio <= 1.3);
5. an event burst: all thin thresholds crossed at once (``bench.scale_burst``; goal: handler
   p99 <= 500 ms, none missed).

Writes ``bench/out/scale.json`` and ``bench/out/scale.png``. About 10 minutes on 2 cores.

    python -m bench.scale [--vms 100] [--workers 2] [--restarts 2] [--restart-settle-s 0]
                          [--rounds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import OUT, force_cleanup, save, tmpfs_dir
from bench.scale_api import Api
from bench.scale_burst import agent_in_process, burst
from bench.scale_phases import (
    POOL,
    agent_pid,
    cpu_ticks,
    create_all,
    create_pool,
    qemu_pids,
    restart_reconcile,
    rss_bytes,
)
from bench.scale_plot import plot
from bench.scale_system import overhead
from blockplane.cli.client import agent_pid as pid_on_file
from blockplane.cli.client import api_path, start_agent, stop_agent
from blockplane.config import Settings, load_settings

MIB = 2**20


def observe_costs(api: Api, home: Path, idle_s: float = 10.0) -> dict[str, Any]:
    """What looking at a full host costs: top, a scrape, the periodic reconcile, idle CPU (the
    agent's, and the idle guests' own, which the host carries whatever the agent does)."""
    api.call("GET", "/v1/top", window=0.5)
    top_s, frame = api.timed("GET", "/v1/top")
    metrics_s, text = api.timed("GET", "/v1/metrics")
    series = [line for line in str(text).splitlines() if line and not line.startswith("#")]
    pid, guests = agent_pid(api), qemu_pids(home)
    ticks = os.sysconf("SC_CLK_TCK")
    before, guests_before = cpu_ticks(pid), sum(map(cpu_ticks, guests))
    time.sleep(idle_s)
    cpu = (cpu_ticks(pid) - before) / ticks / idle_s
    guests_cpu = (sum(map(cpu_ticks, guests)) - guests_before) / ticks / idle_s
    reconcile = api.call("GET", "/v1/reconcile")
    last, last_full = reconcile["last"], reconcile["last_full"]
    return {
        "top_frame_s": round(top_s, 4),
        "top_stats_calls": frame["stats_calls"],
        "top_stats_call_s": frame["stats_call_s"],
        "top_rows": len(frame["disks"]),
        "metrics_scrape_s": round(metrics_s, 4),
        "metrics_series": len(series),
        "periodic_reconcile_pass_s": last["duration_s"],
        "periodic_reconcile_kind": last["kind"],
        "periodic_reconcile_steps": {s["name"]: s["duration_s"] for s in last["steps"]},
        "full_reconcile_pass_s": last_full["duration_s"],
        "full_reconcile_steps": {s["name"]: s["duration_s"] for s in last_full["steps"]},
        "agent_cpu_idle_fraction": round(cpu, 3),
        "guests_cpu_idle_fraction": round(guests_cpu, 3),
    }


IDLE_SETTLE_S = 5.0
#: The two reconcile behaviours measured side by side: the agent's environment for each.
IDLE_MODES = {
    "quick passes, full every 60 s": {},
    "every pass full (before)": {"BLOCKPLANE_FULL_RECONCILE_S": "0"},
}


def restart_agent_with(settings: Settings, api: Api, env: dict[str, str]) -> None:
    """Restart the agent with ``env`` added to its environment (and only to its)."""
    stop_agent(settings)
    api.reset()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        start_agent(settings)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def idle_costs(api: Api, settings: Settings, idle_s: float) -> dict[str, Any]:
    """The idle agent's CPU and RSS with each reconcile behaviour, one after the other on the
    same host and VMs, each on a freshly restarted agent (its start-up pass excluded)."""
    results: dict[str, Any] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for label, env in IDLE_MODES.items():
        restart_agent_with(settings, api, env)
        time.sleep(IDLE_SETTLE_S)
        pid = agent_pid(api)
        before_report = api.call("GET", "/v1/reconcile")
        before = cpu_ticks(pid)
        time.sleep(idle_s)
        cpu = (cpu_ticks(pid) - before) / ticks / idle_s
        report = api.call("GET", "/v1/reconcile")
        results[label] = {
            "env": env,
            "idle_s": idle_s,
            "agent_cpu_fraction": round(cpu, 4),
            "agent_rss_bytes": rss_bytes(pid),
            "passes": report["passes"] - before_report["passes"],
            "full_passes": report["full_passes"] - before_report["full_passes"],
            "last_pass_s": report["last"]["duration_s"],
            "last_full_pass_s": report["last_full"]["duration_s"],
        }
        print(f"  {label}: idle agent CPU {cpu * 100:.1f}% of a core, RSS "
              f"{rss_bytes(pid) / MIB:.0f} MiB, {results[label]['passes']} passes "
              f"({results[label]['full_passes']} full)")
    restart_agent_with(settings, api, {})
    new, old = (results[label]["agent_cpu_fraction"] for label in IDLE_MODES)
    results["cpu_ratio_new_vs_before"] = round(new / old, 3) if old else None
    return results


def teardown(api: Api) -> None:
    def remove(vm: dict[str, Any]) -> None:
        if vm["state"] not in ("shutoff", "crashed"):
            api.call("POST", api_path("vms", vm["name"], "destroy"))
        api.call("DELETE", api_path("vms", vm["name"]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(remove, api.call("GET", "/v1/vms")))
    with contextlib.suppress(Exception):
        api.call("DELETE", api_path("pools", POOL))


def report(results: dict[str, Any]) -> None:
    create = results["create"]
    print(f"\nhost: {results['host']}; load average (1, 5, 15 min) at start "
          f"{results['load_average_start']}, at end {results['load_average_end']}")
    print(f"create {create['vms']} VMs / {create['disks']} disks, {create['workers']} clients: "
          f"{create['wall_s']} s, {create['vms_per_s']} VMs/s, {create['disks_per_s']} disks/s")
    print(f"  attach p50 {create['attach_p50_s'] * 1000:.0f} ms, p99 "
          f"{create['attach_p99_s'] * 1000:.0f} ms; VM create+start p50 "
          f"{create['vm_create_p50_s'] * 1000:.0f} ms")
    print(f"  throttle: {create['chains_note']}")
    rss = ", ".join(f"{n} VMs {v / MIB:.0f} MiB" for n, v in create["agent_rss_bytes"].items())
    print(f"  agent RSS: {rss}")
    observe = results["observe"]
    print(f"observe at {create['vms']} VMs: top frame {observe['top_frame_s'] * 1000:.0f} ms "
          f"({observe['top_stats_calls']} bulk stats call, "
          f"{observe['top_stats_call_s'] * 1000:.0f} ms), /v1/metrics "
          f"{observe['metrics_scrape_s'] * 1000:.0f} ms ({observe['metrics_series']} series), "
          f"last reconcile pass ({observe['periodic_reconcile_kind']}) "
          f"{observe['periodic_reconcile_pass_s'] * 1000:.0f} ms, last full pass "
          f"{observe['full_reconcile_pass_s'] * 1000:.0f} ms, "
          f"idle agent CPU {observe['agent_cpu_idle_fraction'] * 100:.0f}% of a core (the idle "
          f"guests: {observe['guests_cpu_idle_fraction'] * 100:.0f}%)")
    if "idle" in results:
        idle = results["idle"]
        for label in IDLE_MODES:
            mode = idle[label]
            print(f"idle {mode['idle_s']:.0f} s, {label}: agent CPU "
                  f"{mode['agent_cpu_fraction'] * 100:.1f}% of a core (goal <= 3%), RSS "
                  f"{mode['agent_rss_bytes'] / MIB:.0f} MiB (goal <= 120), {mode['passes']} "
                  f"passes ({mode['full_passes']} full; last {mode['last_pass_s'] * 1000:.0f} "
                  f"ms, last full {mode['last_full_pass_s'] * 1000:.0f} ms)")
        print(f"  idle CPU, quick passes vs every pass full: {idle['cpu_ratio_new_vs_before']}")
    for number, restart in enumerate(results["restarts"], start=1):
        counts = restart["counts"]
        print(f"restart {number}: SIGKILL -> API up {restart['spawn_to_api_s']} s (agent built "
              f"{restart['spawn_to_agent_built_s']} s, first reconcile "
              f"{restart['first_pass_s']} s, confirmed={restart['confirmed']}: "
              f"{counts.get('iothread_plans_confirmed')}/{counts.get('iothread_plans')} "
              f"IOThread plans, {counts.get('thin_volumes_confirmed')}/"
              f"{counts.get('thin_volumes')} thin volumes); goal: reconcile <= 2 s; "
              f"{restart['thin_rows_not_live_at_api_up']} thin rows not live at API up, all "
              f"confirmed {restart['spawn_to_all_confirmed_s']} s after spawn")
    if "api_overhead" in results:
        ovh = results["api_overhead"]
        print(f"API overhead (qemu:///system, {ovh['rounds']} rounds): agent "
              f"{ovh['agent_api_median_s'] * 1000:.0f} ms vs by hand "
              f"{ovh['by_hand_median_s']['total'] * 1000:.0f} ms -> ratio "
              f"{ovh['ratio_vs_by_hand']} (goal <= 1.3); vs attach-device alone "
              f"{ovh['by_hand_median_s']['attach_device'] * 1000:.0f} ms -> "
              f"{ovh['ratio_vs_attach_device_only']}")
    if "burst" in results:
        b = results["burst"]
        print(f"event burst: {b['armed']} thresholds crossed within {b['injection_spread_s']} s; "
              f"{b['extended_by_event']} extended by event, {b['extended_by_reconcile_only']} "
              f"by reconcile only, {b['not_extended']} not extended; handler p50 "
              f"{b['handler_latency_p50_s'] * 1000:.0f} ms p99 "
              f"{b['handler_latency_p99_s'] * 1000:.0f} ms (goal p99 <= 500 ms); write start "
              f"-> extended p99 {b['write_start_to_extended_p99_s'] * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--restart-settle-s", type=float, default=0.0,
                        help="how long each restarted agent runs before the next SIGKILL")
    parser.add_argument("--rounds", type=int, default=10, help="API overhead rounds")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--idle-s", type=float, default=60.0,
                        help="idle CPU window per reconcile behaviour")
    arguments = parser.parse_args()
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="bp-scale-", dir="/tmp"))
    pool_dir = tmpfs_dir("bp-scale-pool")
    settings = load_settings(home=home)
    start_agent(settings)
    api = Api(settings)
    # The host is shared: the load average says how far the figures are from an idle host.
    results: dict[str, Any] = {"vms": arguments.vms, "load_average_start": os.getloadavg()}
    torn_down = False
    try:
        facts = api.call("GET", "/v1/facts")
        results["host"] = {"cpus": facts["cpus"], "accel": facts["accel"]["selected"],
                           "qemu": facts["qemu"]["version"],
                           "libvirt": facts["libvirt"]["version"]}
        create_pool(api, pool_dir)
        created = create_all(api, arguments.vms, arguments.workers, home, print)
        results["create"] = created.summary()
        results["rss_series"] = created.rss_series
        print("observing ...")
        results["observe"] = observe_costs(api, home)
        print(f"idle, {arguments.idle_s:.0f} s per reconcile behaviour ...")
        results["idle"] = idle_costs(api, settings, arguments.idle_s)
        print("restart reconcile ...")
        results["restarts"] = [restart_reconcile(api, settings, arguments.restart_settle_s)
                               for _ in range(arguments.restarts)]
        if not arguments.skip_overhead:
            print("API overhead on qemu:///system ...")
            results["api_overhead"] = overhead(arguments.rounds, str(os.getpid()))
        if not arguments.skip_burst:
            print("event burst ...")
            with agent_in_process(settings, api) as agent:
                try:
                    results["burst"] = burst(agent, api)
                finally:
                    teardown(api)
                    torn_down = True
        results["plot"] = str(plot(created, OUT / "scale.png"))
    finally:
        if not torn_down and pid_on_file(settings) not in (None, os.getpid()):
            with contextlib.suppress(Exception):
                teardown(api)
        if pid_on_file(settings) not in (None, os.getpid()):
            stop_agent(settings)
        for action in force_cleanup(home, pool_dir):  # what a failed teardown left
            print(f"cleanup: {action}")
        shutil.rmtree(pool_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        # Also a run that a later phase broke off reports what it measured until then.
        results["bench_wall_s"] = round(time.perf_counter() - started, 1)
        results["load_average_end"] = os.getloadavg()
        report_partial(results)
        print(f"bench took {results['bench_wall_s']} s; saved {save('scale', results)}, "
              f"{results.get('plot')}")


def report_partial(results: dict[str, Any]) -> None:
    """The report, also of a run that a later phase broke off (what it measured until then)."""
    try:
        report(results)
    except KeyError as missing:
        print(f"(the run stopped before {missing} was measured)")


if __name__ == "__main__":
    main()
