"""rbd disks side by side with local ones, in one run, on one throwaway agent and Linux guest.

- fio in the guest: 4k random read and write IOPS (iodepth 16) and 1M sequential read and write
  bandwidth (iodepth 4), direct I/O, on a raw RBD image and on a raw volume of a dir pool on the
  host disk, both served by one IOThread (an rbd disk gets one here anyway: QEMU 10.0.2 lacks
  the rbd multiqueue fix);
- ``copy`` of a local raw disk into the rbd pool (time to READY, the mirror in step) against
  ``qemu-img convert`` of the same file into a new RBD image, with its default caching and with
  ``-t none -T none`` (no cache either side, as the VM's disk runs), as MiB/s and their ratio
  (goal >= 0.8);
- hotplug latency: ``disk attach`` of a new rbd disk against a new local qcow2 disk, median of N
  (the agent's own ``seconds``, and the client's wall time).

The cluster is the lab's one-node cluster started here (memstore OSD by default: data in RAM,
on the same 2 cores as the guest), so the rbd figures are a floor for a real cluster, not a
prediction. Results go to ``bench/out/rbd.json``.

    python -m bench.rbd [--data-mib 256] [--runtime 8] [--attaches 5] [--objectstore memstore]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_agent, fio_json, guest_run, save, wait_for_block_device
from blockplane.cli.client import AgentClient, api_path
from blockplane.lab.ceph import CephCluster, start_cluster

MIB = 1 << 20
VM = "rbdbench"
USER = "bench"


def attach(client: AgentClient, pool: str, size: str, **extra: Any) -> dict[str, Any]:
    disk: dict[str, Any] = client.request("POST", api_path("vms", VM, "disks"),
                                          {"pool": pool, "size": size, **extra})
    return disk


def detach(client: AgentClient, target: str) -> None:
    client.request("DELETE", api_path("vms", VM, "disks", target))


def fio(client: AgentClient, target: str, rw: str, bs: str, depth: int, runtime: int) -> float:
    """IOPS (4k) or MiB/s (1M) of one fio job on the whole disk."""
    report = fio_json(client, VM, f"--name={rw} --filename=/dev/{target} --rw={rw} --bs={bs} "
                      f"--direct=1 --ioengine=libaio --iodepth={depth} --runtime={runtime} "
                      "--time_based --ramp_time=1")
    side = report["jobs"][0]["read" if "read" in rw else "write"]
    return float(side["iops"]) if bs == "4k" else float(side["bw_bytes"]) / MIB


def fill(client: AgentClient, target: str, data_mib: int) -> None:
    guest_run(client, VM, f"fio --name=fill --filename=/dev/{target} --rw=write --bs=1M "
                          f"--direct=1 --size={data_mib}M --iodepth=4 --ioengine=libaio "
                          "--end_fsync=1 --output=/dev/null")


def fio_side_by_side(client: AgentClient, disks: dict[str, str], data_mib: int,
                     runtime: int) -> list[dict[str, Any]]:
    for target in disks.values():
        fill(client, target, data_mib)  # reads then hit written data on both
    cases = [("randread", "4k", 16, "IOPS"), ("randwrite", "4k", 16, "IOPS"),
             ("read", "1M", 4, "MiB/s"), ("write", "1M", 4, "MiB/s")]
    rows = []
    for rw, bs, depth, unit in cases:
        row: dict[str, Any] = {"case": f"{bs} {rw}", "unit": unit}
        for kind, target in disks.items():
            row[kind] = round(fio(client, target, rw, bs, depth, runtime), 1)
        row["rbd_vs_local"] = round(row["rbd"] / row["local"], 3) if row["local"] else None
        rows.append(row)
        print(f"  {row['case']:>12}: rbd {row['rbd']:9.1f} {unit}, local {row['local']:9.1f} "
              f"{unit}, ratio {row['rbd_vs_local']}")
    return rows


def rbd_source(cluster: CephCluster, keyring: Path, image: str) -> str:
    return f"rbd:rbd/{image}:id={USER}:conf={cluster.conf}:keyring={keyring}"


def copy_vs_convert(client: AgentClient, cluster: CephCluster, keyring: Path,
                    data_mib: int) -> dict[str, Any]:
    local = attach(client, "local", f"{data_mib}M", format="raw", io_threads=0)
    target = local["target"]
    wait_for_block_device(client, VM, target)
    fill(client, target, data_mib)
    image = "bench-convert"
    converts: dict[str, float] = {}
    for name, caching in (("convert", []), ("convert_direct", ["-t", "none", "-T", "none"])):
        cluster.run("rbd", "create", "--size", f"{data_mib}M", f"rbd/{image}")
        started = time.monotonic()
        subprocess.run(["qemu-img", "convert", "-U", "-n", *caching, "-f", "raw", "-O", "raw",
                        local["source"], rbd_source(cluster, keyring, image)], check=True,
                       capture_output=True)
        converts[name] = time.monotonic() - started
        cluster.run("rbd", "rm", "--no-progress", f"rbd/{image}")
    convert_s = converts["convert"]
    started = time.monotonic()
    job = client.request("POST", api_path("vms", VM, "disks", target, "copy"), {"pool": "ceph"})
    while True:
        shown = client.request("GET", api_path("jobs", job["id"]))
        if shown["ready"] or shown["phase"] in ("done", "failed", "aborted"):
            break
        time.sleep(0.02)
    copy_s = time.monotonic() - started
    if shown["phase"] in ("failed", "aborted"):
        raise RuntimeError(f"copy ended {shown['phase']}: {shown['error']}")
    client.request("POST", api_path("jobs", job["id"], "abort"))
    while client.request("GET", api_path("jobs", job["id"]))["phase"] not in (
            "done", "failed", "aborted"):
        time.sleep(0.05)
    destination = shown["spec"]["destination"]
    client.request("DELETE", api_path("pools", "ceph", "volumes", destination["volume"]))
    detach(client, target)
    direct_s = converts["convert_direct"]
    result = {"data_mib": data_mib, "copy_s": round(copy_s, 3),
              "convert_s": round(convert_s, 3), "convert_direct_s": round(direct_s, 3),
              "copy_mib_s": round(data_mib / copy_s, 1),
              "convert_mib_s": round(data_mib / convert_s, 1),
              "convert_direct_mib_s": round(data_mib / direct_s, 1),
              "copy_vs_convert": round(convert_s / copy_s, 3),
              "copy_vs_convert_direct": round(direct_s / copy_s, 3)}
    print(f"  copy into rbd {result['copy_mib_s']} MiB/s, qemu-img convert "
          f"{result['convert_mib_s']} MiB/s (-t none: {result['convert_direct_mib_s']}): "
          f"ratio {result['copy_vs_convert']} / {result['copy_vs_convert_direct']} "
          "(goal >= 0.8)")
    return result


def attach_latency(client: AgentClient, attaches: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {}
    for _ in range(attaches):
        for kind, pool, extra in (("rbd", "ceph", {}), ("local_qcow2", "local",
                                                         {"format": "qcow2"})):
            started = time.monotonic()
            disk = attach(client, pool, "64M", **extra)
            wall = time.monotonic() - started
            entry = samples.setdefault(kind, {"agent_s": [], "wall_s": []})
            entry["agent_s"].append(float(disk["seconds"]))
            entry["wall_s"].append(wall)
            wait_for_block_device(client, VM, disk["target"])
            detach(client, disk["target"])
    result: dict[str, Any] = {
        kind: {key: round(statistics.median(values), 4) for key, values in entry.items()}
        for kind, entry in samples.items()}
    result["rbd_vs_local"] = round(result["rbd"]["agent_s"] / result["local_qcow2"]["agent_s"],
                                   3)
    print(f"  attach: rbd {result['rbd']['agent_s'] * 1000:.0f} ms, local qcow2 "
          f"{result['local_qcow2']['agent_s'] * 1000:.0f} ms (agent's own, median of "
          f"{attaches}); ratio {result['rbd_vs_local']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--runtime", type=int, default=8)
    parser.add_argument("--attaches", type=int, default=5)
    parser.add_argument("--objectstore", choices=("memstore", "bluestore"), default="memstore")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bp-cephbench-", dir="/tmp"))
    cluster = start_cluster(workdir, objectstore=args.objectstore, osd_bytes=4 * 1024**3)
    try:
        user = cluster.create_user(USER)
        with bench_agent() as client:
            client.request("POST", "/v1/pools", {
                "name": "ceph", "type": "rbd", "ceph_conf": str(cluster.conf),
                "rbd_pool": "rbd", "ceph_user": USER, "ceph_keyring": str(user.keyring)})
            client.request("POST", "/v1/pools", {"name": "local", "type": "dir"})
            client.request("POST", "/v1/vms", {"name": VM, "vcpus": 2, "memory": "512M",
                                               "guest": "linux", "start": True})
            size = f"{args.data_mib + 64}M"
            rbd = attach(client, "ceph", size, io_threads=1)
            local = attach(client, "local", size, format="raw", io_threads=1)
            disks = {"rbd": rbd["target"], "local": local["target"]}
            for target in disks.values():
                wait_for_block_device(client, VM, target)
            print(f"fio ({args.runtime} s each, rbd {rbd['plan']['mode']} / local "
                  f"{local['plan']['mode']} IOThread):")
            fio_rows = fio_side_by_side(client, disks, args.data_mib, args.runtime)
            for target in disks.values():
                detach(client, target)
            print("copy into rbd:")
            copy = copy_vs_convert(client, cluster, user.keyring, args.data_mib)
            print("hotplug:")
            latency = attach_latency(client, args.attaches)
        path = save("rbd", {"objectstore": args.objectstore, "data_mib": args.data_mib,
                            "runtime_s": args.runtime, "fio": fio_rows, "copy": copy,
                            "attach": latency})
        print(f"results: {path}")
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
