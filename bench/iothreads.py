"""IOThread virtqueue mapping: guest 4k random-read IOPS with no, one, 2 and 4 IOThreads.

All configurations run in one VM, one after the other, on a raw disk whose loop volume sits on
tmpfs, so the storage below is the same for each. Ratios are against the single-IOThread case.
Also times the planner for 64 disks x 16 queues. Runs unchanged on a KVM host with more cores
(the guest gets --vcpus queues; the host's CPU count caps the IOThreads, as the policy says).

    python bench/iothreads.py [--queues 4] [--runtime 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.common import (
    bench_agent,
    fio_json,
    save,
    tmpfs_dir,
    wait_for_block_device,
)
from blockplane.cli.client import AgentClient, api_path
from blockplane.iothreads import IOThreadRequest, MappingSupport, plan_vm

CONFIGS = (("no IOThread", 0), ("1 IOThread", 1), ("2 IOThreads", 2), ("4 IOThreads", 4))


def measure(client: AgentClient, queues: int, io_threads: int, runtime: int) -> dict[str, Any]:
    disk = client.request(
        "POST",
        api_path("vms", "bench", "disks"),
        {
            "pool": "tmpfs",
            "size": "1G",
            "format": "raw",
            "queues": queues,
            "io_threads": io_threads,
        },
    )
    target = disk["target"]
    wait_for_block_device(client, "bench", target)
    report = client.request("GET", api_path("vms", "bench", "iothreads"))
    applied = next(d for d in report["disks"] if d["target"] == target)
    fio = fio_json(
        client,
        "bench",
        f"--name=randread --filename=/dev/{target} --rw=randread --bs=4k --iodepth=32 "
        f"--numjobs={queues} --ioengine=libaio --direct=1 --runtime={runtime} --time_based "
        "--group_reporting --size=1G",
        timeout=runtime + 120,
    )
    client.request("DELETE", api_path("vms", "bench", "disks", target))
    return {
        "iops": fio["jobs"][0]["read"]["iops"],
        "iothreads_applied": len(applied["mapping"]),
        "mode": applied["mode"],
        "reason": applied["reason"],
    }


def planner_cost(repeats: int = 20) -> dict[str, float]:
    support = MappingSupport(True, "bench")
    requests = [(f"vd{i}", IOThreadRequest(8, 16)) for i in range(64)]
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        plan_vm(16, requests, host_cpus=16, host_cap=16, support_blk=support, support_scsi=support)
        timings.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(timings) * 1000, "max_ms": max(timings) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--runtime", type=int, default=10)
    arguments = parser.parse_args()
    results: dict[str, Any] = {"queues": arguments.queues, "runs": {}}
    with bench_agent() as client:
        client.request(
            "POST",
            "/v1/pools",
            {"name": "tmpfs", "type": "loop", "path": str(tmpfs_dir("bp-bench-pool"))},
        )
        facts = client.request("GET", "/v1/facts")
        results["host"] = {
            "cpus": facts["cpus"],
            "accel": facts["accel"]["selected"],
            "qemu": facts["qemu"]["version"],
        }
        client.request(
            "POST",
            "/v1/vms",
            {
                "name": "bench",
                "vcpus": arguments.queues,
                "memory": "1G",
                "guest": "linux",
                "start": True,
            },
        )
        for label, io_threads in CONFIGS:
            results["runs"][label] = measure(
                client, arguments.queues, io_threads, arguments.runtime
            )
    results["planner_64x16"] = planner_cost()
    baseline = results["runs"]["1 IOThread"]["iops"]
    print(
        f"host: {results['host']}, {arguments.queues}-queue raw disk on tmpfs, fio 4k "
        f"randread iodepth 32, {arguments.queues} jobs, {arguments.runtime} s each"
    )
    print(f"{'configuration':<14} {'applied':>8} {'IOPS':>10} {'vs 1 IOThread':>14}")
    for label, run in results["runs"].items():
        run["ratio_vs_single"] = run["iops"] / baseline if baseline else None
        print(
            f"{label:<14} {run['iothreads_applied']:>8} {run['iops']:>10.0f} "
            f"{run['ratio_vs_single']:>14.2f}"
        )
    planner = results["planner_64x16"]
    print(
        f"planner, 64 disks x 16 queues: median {planner['median_ms']:.1f} ms, "
        f"max {planner['max_ms']:.1f} ms"
    )
    print(f"saved {save('iothreads', results)}")


if __name__ == "__main__":
    main()
