"""Threshold events while one VM hangs: the thin monitor's handler latency, hung against not.

20 no-OS VMs with one thin disk each (a loop pool on tmpfs, 4 MiB chunks at 50%), plus one
Linux guest (``hung``). Each round crosses every no-OS disk's write threshold at once (the event
burst of ``bench.scale_burst``) and reads the thin monitor's handler latency of each extend.
Rounds alternate: *quiet*, then *hung*: ``hung``'s qemu-guest-agent frozen (SIGSTOP from inside
the guest) while 16 ``guest exec`` requests to it wait on their deadlines, side by side with the
burst. Goal: p99 handler latency hung / quiet <= 1.2 (medians of the rounds' p99s).

    python -m bench.hang [--vms 20] [--rounds 3] [--waiters 16]

Writes ``bench/out/hang.json``. About 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import save, tmpfs_dir
from bench.scale_api import Api, ApiError
from bench.scale_burst import agent_in_process, burst
from blockplane.cli.client import api_path, start_agent, stop_agent
from blockplane.config import load_settings
from blockplane.runtime.agent import Agent

POOL = "hang"
HUNG = "hung"
#: The deadline of each waiting request, so that they outlast the burst.
WAITER_DEADLINE_S = 45.0
FREEZE_S = 60


def prepare(api: Api, pool_dir: Path, vms: int) -> None:
    api.call("POST", "/v1/pools", {"name": POOL, "type": "loop", "path": str(pool_dir),
                                   "chunk": "4M", "utilization": 50})
    for index in range(vms):
        name = f"hq{index:02d}"
        api.call("POST", "/v1/vms", {"name": name, "vcpus": 1, "memory": "64M", "start": True})
        api.call("POST", api_path("vms", name, "disks"),
                 {"pool": POOL, "size": "64M", "thin": True})
    api.call("POST", "/v1/vms", {"name": HUNG, "vcpus": 1, "memory": "384M", "guest": "linux",
                                 "start": True})


def guest_exec(api: Api, script: str, deadline_s: float) -> int:
    return int(api.call("POST", api_path("vms", HUNG, "exec"),
                        {"argv": ["/bin/sh", "-c", script], "timeout": deadline_s})["exit_code"])


def freeze_guest_agent(api: Api) -> None:
    job = (f"sleep 1; kill -STOP $(pidof qemu-ga); sleep {FREEZE_S}; "
           "kill -CONT $(pidof qemu-ga)")
    guest_exec(api, f"setsid /bin/sh -c '{job}' </dev/null >/dev/null 2>&1 &", 30)
    time.sleep(2.5)


def waiting_requests(settings_home: Path, count: int) -> tuple[threading.Thread, list[str]]:
    """``count`` guest exec requests to the hung guest, each on its own connection."""
    outcomes: list[str] = []
    settings = load_settings(home=settings_home)

    def one() -> None:
        api = Api(settings, timeout_s=WAITER_DEADLINE_S + 30)
        try:
            guest_exec(api, "true", WAITER_DEADLINE_S)
            outcomes.append("answered")
        except ApiError as error:
            outcomes.append(f"HTTP {error.status}")

    def all_of_them() -> None:
        with ThreadPoolExecutor(max_workers=count) as pool:
            for _ in range(count):
                pool.submit(one)

    thread = threading.Thread(target=all_of_them, name="waiters")
    thread.start()
    return thread, outcomes


def wait_thawed(api: Api) -> None:
    deadline = time.monotonic() + FREEZE_S + 60
    while time.monotonic() < deadline:
        try:
            if guest_exec(api, "true", 10) == 0:
                return
        except ApiError:
            pass
        time.sleep(1)
    raise RuntimeError("the guest agent did not come back")


def hung_burst(
    agent: Agent, api: Api, home: Path, waiters: int
) -> tuple[dict[str, Any], int, list[str]]:
    """A burst while the guest agent of ``hung`` is frozen and ``waiters`` requests wait on it."""
    freeze_guest_agent(api)
    thread, outcomes = waiting_requests(home, waiters)
    time.sleep(2)  # the requests are in, waiting on the frozen agent
    in_flight = len(api.call("GET", "/v1/agent")["requests"])
    result = burst(agent, api)
    thread.join()
    wait_thawed(api)
    return result, in_flight, outcomes


def teardown(api: Api) -> None:
    for vm in api.call("GET", "/v1/vms"):
        if vm["state"] not in ("shutoff", "crashed"):
            api.call("POST", api_path("vms", vm["name"], "destroy"))
        api.call("DELETE", api_path("vms", vm["name"]))
    api.call("DELETE", api_path("pools", POOL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waiters", type=int, default=16)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bp-hang-", dir="/tmp"))
    pool_dir = tmpfs_dir("bp-hang-pool")
    settings = load_settings(home=home)
    start_agent(settings)
    api = Api(settings)
    rounds: list[dict[str, Any]] = []
    try:
        prepare(api, pool_dir / POOL, args.vms)
        with agent_in_process(settings, api) as agent:
            try:
                for number in range(args.rounds):
                    # Alternate which comes first, so that neither gains from its place.
                    if number % 2 == 0:
                        quiet = burst(agent, api)
                    hung, in_flight, outcomes = hung_burst(agent, api, home, args.waiters)
                    if number % 2 == 1:
                        quiet = burst(agent, api)
                    rounds.append({
                        "round": number + 1,
                        "quiet": quiet,
                        "hung": hung,
                        "requests_in_flight_during_burst": in_flight,
                        "waiter_outcomes": sorted(outcomes),
                    })
                    print(f"round {number + 1}: p99 quiet {quiet['handler_latency_p99_s']} s, "
                          f"hung {hung['handler_latency_p99_s']} s, {in_flight} requests waiting")
            finally:
                teardown(api)  # by the agent in this process: it holds the embedded root now
    finally:
        stop_agent(settings)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(pool_dir, ignore_errors=True)
    quiet_p99 = statistics.median(r["quiet"]["handler_latency_p99_s"] for r in rounds)
    hung_p99 = statistics.median(r["hung"]["handler_latency_p99_s"] for r in rounds)
    summary = {
        "vms": args.vms,
        "waiters": args.waiters,
        "rounds": rounds,
        "p99_quiet_median_s": quiet_p99,
        "p99_hung_median_s": hung_p99,
        "p99_ratio": round(hung_p99 / quiet_p99, 3) if quiet_p99 else None,
        "goal_p99_ratio": 1.2,
    }
    path = save("hang", summary)
    print(f"p99 handler latency: quiet {quiet_p99} s, hung {hung_p99} s, ratio "
          f"{summary['p99_ratio']} (goal <= 1.2); {path}")


if __name__ == "__main__":
    main()
