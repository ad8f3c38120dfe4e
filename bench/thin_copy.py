"""Copy throughput into a thin loop pool against a fully allocated destination, without a guest.

``bench.chain --kind thin_copy`` measures the same under the Linux guest, where TCG's share of a
loaded 2-core host scatters single runs by 2-5x. Here a no-OS VM has a disk on a dir pool with
DATA MiB written by ``qemu-io`` before it starts, and each pair copies it (no pivot) into a thin
loop pool (64 MiB chunks at 20%) and into a loop pool whose chunk is larger than the disk, so
that ``fill_size`` makes that destination at its full size; the order alternates. A copy's time
is the agent's, from the job's record to its READY event; the job is then aborted and the kept
copy deleted. Reported: each pair's ratio full / thin (goal >= 0.9), the median of them, and the
thin destination's physical size against QEMU's allocation of it at READY (goal: at most 2
chunks above). Results go to ``bench/out/thin_copy.json``.

    python -m bench.thin_copy [--data-mib 512] [--pairs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import bench_agent, save
from blockplane.cli.client import AgentClient, api_path

MIB = 1 << 20
VM = "thincopybench"
CHUNK_MIB = 64


@dataclass
class Copy:
    pool: str
    seconds: float
    physical: int
    allocation: int


def copy_to_ready(client: AgentClient, pool: str) -> Copy:
    job = client.request("POST", api_path("vms", VM, "disks", "vda", "copy"), {"pool": pool})
    while True:
        shown = client.request("GET", api_path("jobs", job["id"]))
        if shown["phase"] == "ready":
            break
        if shown["phase"] in ("done", "failed", "aborted"):
            raise RuntimeError(f"copy into {pool} ended {shown['phase']}: {shown['error']}")
        time.sleep(0.05)
    [ready] = [event for event in client.request("GET", api_path("events"), vm=VM,
                                                 type="job.ready", limit=10000)
               if event.get("job") == job["id"]]
    volume = job["spec"]["destination"]["volume"]
    [row] = [r for r in client.request("GET", api_path("thin"), vm=VM) if r["volume"] == volume]
    client.request("POST", api_path("jobs", job["id"], "abort"))
    while client.request("GET", api_path("jobs", job["id"]))["phase"] != "aborted":
        time.sleep(0.05)
    client.request("DELETE", api_path("pools", pool, "volumes", volume))
    return Copy(pool, float(ready["at"]) - float(job["created_at"]), int(row["physical"]),
                int(row["allocation"] or 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=10)
    arguments = parser.parse_args()
    pairs: list[dict[str, Any]] = []
    with bench_agent() as client:
        client.request("POST", "/v1/pools", {"name": "src", "type": "dir"})
        client.request("POST", "/v1/pools", {"name": "thin", "type": "loop",
                                             "chunk": f"{CHUNK_MIB}M", "utilization": 20})
        client.request("POST", "/v1/pools", {"name": "full", "type": "loop",
                                             "chunk": f"{arguments.data_mib + 4096}M"})
        client.request("POST", "/v1/vms", {"name": VM, "vcpus": 1, "memory": "256M"})
        disk = client.request("POST", api_path("vms", VM, "disks"),
                              {"pool": "src", "size": f"{arguments.data_mib + 512}M"})
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -P 0x5a 0 {arguments.data_mib}M", disk["source"]],
                       check=True, capture_output=True)
        client.request("POST", api_path("vms", VM, "start"))
        for number in range(arguments.pairs):
            order = ("full", "thin") if number % 2 == 0 else ("thin", "full")
            copies = {pool: copy_to_ready(client, pool) for pool in order}
            thin, full = copies["thin"], copies["full"]
            pair = {"thin": asdict(thin), "full": asdict(full),
                    "ratio": full.seconds / thin.seconds,
                    "slack_chunks": (thin.physical - thin.allocation) / (CHUNK_MIB * MIB)}
            pairs.append(pair)
            print(f"pair {number + 1:2}: thin {thin.seconds:5.2f} s "
                  f"({arguments.data_mib / thin.seconds:5.0f} MiB/s)  full {full.seconds:5.2f} s "
                  f"({arguments.data_mib / full.seconds:5.0f} MiB/s)  ratio {pair['ratio']:4.2f}"
                  f"  thin physical {thin.physical / MIB:6.1f} MiB, allocation "
                  f"{thin.allocation / MIB:6.1f} MiB (+{pair['slack_chunks']:4.2f} chunks)",
                  flush=True)
    ratios = [pair["ratio"] for pair in pairs]
    print(f"median ratio {statistics.median(ratios):4.2f} over {len(ratios)} pairs "
          f"(min {min(ratios):4.2f}, max {max(ratios):4.2f}); median thin "
          f"{statistics.median(p['thin']['seconds'] for p in pairs):5.2f} s, full "
          f"{statistics.median(p['full']['seconds'] for p in pairs):5.2f} s")
    path = save("thin_copy", {"data_mib": arguments.data_mib, "chunk_mib": CHUNK_MIB,
                              "pairs": pairs})
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
