"""Tiered I/O limits: achieved against configured IOPS and bytes/s in the Linux test guest.

A throwaway agent boots the bundled Linux guest and attaches raw disks (dir pool on tmpfs)
under throttle chains of 1, 2 and 3 levels, plus two disks sharing one group. Each case sets the
groups' limits live (``PUT /v1/vms/{vm}/throttle-groups/{group}``, nothing is detached), runs
fio with direct I/O in the guest (4k for IOPS, 64k for bytes/s, iodepth 16, the first second
not counted) and prints the achieved rate, the tightest limit in the chain and the relative
error. The goal is within 5% of the tightest limit.

    python -m bench.throttle [--runtime 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import bench_agent, fio_json, save, tmpfs_dir, wait_for_block_device
from blockplane.cli.client import AgentClient, api_path
from blockplane.model.throttle_limits import AVG_FIELDS

MIB = 1024 * 1024
VM = "qosbench"
GOAL = 0.05
LEVELS = {"1-level": ["a1"], "2-level": ["b1", "b2"], "3-level": ["c1", "c2", "c3"]}
SHARED = ["shared"]


@dataclass(frozen=True)
class Case:
    name: str
    chain: str
    #: Limits per group of the chain (every other limit of those groups is reset to 0).
    limits: dict[str, dict[str, int]]
    rw: str
    block_size: str
    #: What is compared: "read", "write" or "total" (read + write), in IOPS or bytes/s.
    measure: str
    unit: str
    configured: int
    disks: int = 1


def cases() -> list[Case]:
    iops, bw = "IOPS", "bytes/s"
    one: list[Case] = [
        Case("total iops, randread", "1-level", {"a1": {"total_iops_sec": 300}},
             "randread", "4k", "read", iops, 300),
        Case("total iops, randwrite", "1-level", {"a1": {"total_iops_sec": 300}},
             "randwrite", "4k", "write", iops, 300),
        Case("total iops, randrw 50/50", "1-level", {"a1": {"total_iops_sec": 300}},
             "randrw", "4k", "total", iops, 300),
        Case("read iops, randread", "1-level", {"a1": {"read_iops_sec": 250}},
             "randread", "4k", "read", iops, 250),
        Case("write iops, randwrite", "1-level", {"a1": {"write_iops_sec": 200}},
             "randwrite", "4k", "write", iops, 200),
        Case("total bytes, read", "1-level", {"a1": {"total_bytes_sec": 8 * MIB}},
             "randread", "64k", "read", bw, 8 * MIB),
        Case("total bytes, write", "1-level", {"a1": {"total_bytes_sec": 8 * MIB}},
             "randwrite", "64k", "write", bw, 8 * MIB),
        Case("total bytes, randrw 50/50", "1-level", {"a1": {"total_bytes_sec": 8 * MIB}},
             "randrw", "64k", "total", bw, 8 * MIB),
        Case("read bytes, read", "1-level", {"a1": {"read_bytes_sec": 6 * MIB}},
             "randread", "64k", "read", bw, 6 * MIB),
        Case("write bytes, write", "1-level", {"a1": {"write_bytes_sec": 4 * MIB}},
             "randwrite", "64k", "write", bw, 4 * MIB),
    ]
    chained = [
        Case("iops, inner tighter", "2-level",
             {"b1": {"total_iops_sec": 250}, "b2": {"total_iops_sec": 400}},
             "randread", "4k", "read", iops, 250),
        Case("iops, outer tighter", "2-level",
             {"b1": {"total_iops_sec": 400}, "b2": {"total_iops_sec": 250}},
             "randread", "4k", "read", iops, 250),
        Case("bytes, outer tighter", "2-level",
             {"b1": {"total_bytes_sec": 16 * MIB}, "b2": {"total_bytes_sec": 8 * MIB}},
             "randwrite", "64k", "write", bw, 8 * MIB),
        Case("iops, middle tighter", "3-level",
             {"c1": {"total_iops_sec": 500}, "c2": {"total_iops_sec": 350},
              "c3": {"total_iops_sec": 450}},
             "randread", "4k", "read", iops, 350),
        Case("bytes, outer tighter", "3-level",
             {"c1": {"total_bytes_sec": 12 * MIB}, "c2": {"total_bytes_sec": 16 * MIB},
              "c3": {"total_bytes_sec": 6 * MIB}},
             "randread", "64k", "read", bw, 6 * MIB),
        Case("iops, randrw, r/w limits", "3-level",
             {"c1": {"read_iops_sec": 300, "write_iops_sec": 300},
              "c2": {"total_iops_sec": 400}, "c3": {"total_iops_sec": 1000}},
             "randrw", "4k", "total", iops, 400),
    ]
    shared = [
        Case("iops, 2 disks", "shared", {"shared": {"total_iops_sec": 400}},
             "randread", "4k", "read", iops, 400, disks=2),
        Case("bytes, 2 disks", "shared", {"shared": {"total_bytes_sec": 8 * MIB}},
             "randwrite", "64k", "write", bw, 8 * MIB, disks=2),
    ]
    return one + chained + shared


def set_limits(client: AgentClient, group: str, limits: dict[str, int]) -> None:
    # Every average is given (0 unless set) so that old ones never clash with the new ones.
    values = {**dict.fromkeys(AVG_FIELDS, 0), **limits}
    client.request("PUT", api_path("vms", VM, "throttle-groups", group), {"limits": values})


def prepare(client: AgentClient, pool_path: Path) -> dict[str, list[str]]:
    """Groups and disks; the disks of each chain, by chain name."""
    client.request("POST", "/v1/pools", {"name": "bench", "type": "dir", "path": str(pool_path)})
    client.request(
        "POST",
        "/v1/vms",
        {"name": VM, "vcpus": 2, "memory": "512M", "guest": "linux", "start": True},
    )
    chains = {**LEVELS, "shared": SHARED}
    for groups in chains.values():
        for group in groups:
            set_limits(client, group, {"total_iops_sec": 100000})
    targets: dict[str, list[str]] = {}
    for name, groups in chains.items():
        for _ in range(2 if name == "shared" else 1):
            disk = client.request(
                "POST",
                api_path("vms", VM, "disks"),
                {"pool": "bench", "size": "512M", "format": "raw", "throttle_groups": groups},
            )
            wait_for_block_device(client, VM, disk["target"])
            targets.setdefault(name, []).append(disk["target"])
    return targets


def fio(client: AgentClient, case: Case, targets: list[str], runtime_s: int) -> float:
    arguments = (
        f"--direct=1 --rw={case.rw} --bs={case.block_size} --ioengine=libaio --iodepth=16 "
        f"--runtime={runtime_s} --time_based --ramp_time=1"
    )
    for target in targets:
        arguments += f" --name={target} --filename=/dev/{target}"
    report = fio_json(client, VM, arguments, timeout=runtime_s + 120)
    key = "iops" if case.unit == "IOPS" else "bw_bytes"
    return sum(
        float(job[direction][key])
        for job in report["jobs"]
        for direction in ("read", "write")
        if case.measure in (direction, "total")
    )


def human(value: float, unit: str) -> str:
    return f"{value / MIB:.2f} MiB/s" if unit == "bytes/s" else f"{value:.1f} IOPS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", type=int, default=5, help="fio seconds per case")
    options = parser.parse_args()
    results: list[dict[str, Any]] = []
    pool_path = tmpfs_dir("bp-bench-qos")
    try:
        with bench_agent() as client:
            targets = prepare(client, pool_path)
            print(f"{'chain':8} {'case':28} {'configured':>14} {'achieved':>14} {'error':>8}")
            for case in cases():
                for group, limits in case.limits.items():
                    set_limits(client, group, limits)
                achieved = fio(client, case, targets[case.chain][: case.disks], options.runtime)
                error = (achieved - case.configured) / case.configured
                mark = "" if abs(error) <= GOAL else "  (outside 5%)"
                print(
                    f"{case.chain:8} {case.name:28} {human(case.configured, case.unit):>14} "
                    f"{human(achieved, case.unit):>14} {error:+8.1%}{mark}",
                    flush=True,
                )
                results.append(
                    {
                        "chain": case.chain,
                        "case": case.name,
                        "unit": case.unit,
                        "configured": case.configured,
                        "achieved": achieved,
                        "relative_error": error,
                    }
                )
    finally:
        shutil.rmtree(pool_path, ignore_errors=True)
    worst = max(abs(result["relative_error"]) for result in results)
    print(f"worst |error| {worst:.1%} over {len(results)} cases (goal {GOAL:.0%})")
    print(f"saved {save('throttle', {'runtime_s': options.runtime, 'cases': results})}")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
