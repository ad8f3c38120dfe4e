"""Block-job throughput as a ratio to ``qemu-img convert`` of the same data, guest idle and writing.

A throwaway agent boots the bundled Linux guest. For each job a fresh disk is hotplugged from a
dir pool on the host disk and laid out so the job moves exactly DATA bytes (fio's non-zero
buffers, written by the guest with O_DIRECT):

- commit: base <- s1 (DATA) <- s2; commit s1 into base;
- active commit: base <- s1 (DATA); commit with pivot (time to DONE, pivot included);
- pull: base (DATA) <- s1; pull everything into s1;
- copy: base (DATA); full copy to a new volume, with pivot;
- backup: base (DATA); full push backup.

The job's time is the agent's own (``finished_at - created_at``: from the job's record to the
event that ended it). Just before each job, ``qemu-img convert`` copies the same layer(s) into a
new qcow2 in the same pool, once with the page cache and once with ``-t none -T none`` (O_DIRECT,
the cache mode the VM's disks use). "writing": during the converts and the job alike, the guest
writes elsewhere on the same disk with fio at a fixed rate, so both copy under the same load.
Results go to ``bench/out/chain.json``.

    python -m bench.chain [--data-mib 512] [--write-rate 32m] [--repeat 3] [--io-threads N]
                          [--guest LOAD] [--kind K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import bench_agent, guest_run, save, wait_for_block_device
from blockplane.cli.client import AgentClient, api_path

MIB = 1 << 20
VM = "chainbench"
KINDS = ("commit", "active_commit", "pull", "copy", "backup")
LOADS = ("idle", "writing", "writing-other-disk", "reading", "busy-cpu", "host-writing")


@dataclass
class Result:
    kind: str
    guest: str
    data_mib: int
    job_s: float
    convert_s: float
    convert_direct_s: float
    convert_direct_serial_s: float

    @property
    def job_mib_s(self) -> float:
        return self.data_mib / self.job_s

    @property
    def ratio(self) -> float:
        return self.convert_s / self.job_s

    @property
    def ratio_direct(self) -> float:
        return self.convert_direct_s / self.job_s

    @property
    def ratio_direct_serial(self) -> float:
        return self.convert_direct_serial_s / self.job_s


def request(client: AgentClient, method: str, path: str, body: Any = None) -> Any:
    return client.request(method, path, body)


def chain_paths(client: AgentClient, target: str) -> list[str]:
    chain = request(client, "GET", api_path("vms", VM, "disks", target, "chain"))
    return [element["path"] for element in chain["elements"]]


def snapshot(client: AgentClient, target: str, name: str) -> None:
    request(client, "POST", api_path("vms", VM, "snapshots"), {"name": name, "disks": [target]})


def fill(client: AgentClient, target: str, data_mib: int) -> None:
    guest_run(client, VM, f"fio --name=fill --filename=/dev/{target} --rw=write --bs=1M "
                          f"--direct=1 --size={data_mib}M --iodepth=4 --ioengine=libaio "
                          "--end_fsync=1 --output=/dev/null")


def start_writer(client: AgentClient, target: str, offset_mib: int, rate: str) -> None:
    guest_run(client, VM, f"fio --name=writer --filename=/dev/{target} --rw=randwrite "
                          f"--bs=64k --direct=1 --offset={offset_mib}M --size=256M "
                          f"--rate={rate} --time_based --runtime=600 --output=/dev/null "
                          "</dev/null >/dev/null 2>&1 &")


def start_reader(client: AgentClient, target: str, rate: str) -> None:
    guest_run(client, VM, f"fio --name=reader --filename=/dev/{target} --rw=randread "
                          f"--bs=64k --direct=1 --size=256M --rate={rate} --time_based "
                          "--runtime=600 --output=/dev/null </dev/null >/dev/null 2>&1 &")


def start_spinners(client: AgentClient) -> None:
    """Both vCPUs busy, no I/O."""
    guest_run(client, VM, "for vcpu in 1 2; do fio --name=spin --ioengine=cpuio --cpuload=100 "
                          "--time_based --runtime=600 --output=/dev/null "
                          "</dev/null >/dev/null 2>&1 & done")


def start_host_writer(scratch: Path, rate: str) -> subprocess.Popen[bytes]:
    """The guest's write load, from a process on the host instead, into the same pool."""
    return subprocess.Popen(["fio", "--name=host-writer", f"--filename={scratch}/host-load.raw",
                             "--rw=randwrite", "--bs=64k", "--direct=1", "--size=256M",
                             f"--rate={rate}", "--time_based", "--runtime=600",
                             "--output=/dev/null"])


def stop_guest_load(client: AgentClient) -> None:
    guest_run(client, VM, "killall fio 2>/dev/null; while pidof fio >/dev/null; do "
                          "sleep 0.1; done; true")


def wait_done(client: AgentClient, job_id: str) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = request(client, "GET", api_path("jobs", job_id))
        if job["phase"] in ("done", "failed", "aborted"):
            if job["phase"] != "done":
                raise RuntimeError(f"job {job_id} ended {job['phase']}: {job['error']}")
            return job
        time.sleep(0.05)


def convert_seconds(source: str, scratch: Path, direct: bool, in_flight: int = 8) -> float:
    """``in_flight`` is convert's ``-m`` (8 is its default); 1 copies like commit and stream."""
    destination = scratch / "converted.qcow2"
    destination.unlink(missing_ok=True)
    caching = ["-t", "none", "-T", "none"] if direct else []
    started = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-U", *caching, "-m", str(in_flight), "-O", "qcow2",
                    source, str(destination)], check=True, capture_output=True)
    seconds = time.monotonic() - started
    destination.unlink()
    return seconds


def layer_only(path: str) -> str:
    """A qemu-img filename that opens one chain layer without its backing."""
    return "json:" + json.dumps({"driver": "qcow2", "backing": None,
                                 "file": {"driver": "file", "filename": path}})


def run_case(client: AgentClient, kind: str, guest: str, data_mib: int, rate: str,
             pool: str, scratch: Path, run: int, io_threads: int | None,
             other_disk: str | None) -> Result:
    wanted: dict[str, Any] = {"pool": pool, "size": f"{data_mib + 512}M"}
    if io_threads is not None:
        wanted["io_threads"] = io_threads
    disk = request(client, "POST", api_path("vms", VM, "disks"), wanted)
    target = disk["target"]
    wait_for_block_device(client, VM, target)
    if kind in ("commit", "active_commit"):
        snapshot(client, target, f"{kind}-{guest}-{run}-s1")
    fill(client, target, data_mib)
    if kind in ("commit", "pull"):
        snapshot(client, target, f"{kind}-{guest}-{run}-s2")
    paths = chain_paths(client, target)
    # The layer holding the data: s1 for the commits (vda[1] or the top), the base otherwise.
    if kind == "commit":
        source = layer_only(paths[1])
    elif kind in ("active_commit", "pull"):
        source = layer_only(paths[0] if kind == "active_commit" else paths[-1])
    else:
        source = paths[0]
    # Under the same load as the job, and before it: a job drops the layers it merged.
    host_writer = None
    if guest == "writing":
        start_writer(client, target, data_mib + 64, rate)
    elif guest == "writing-other-disk" and other_disk is not None:
        start_writer(client, other_disk, 0, rate)
    elif guest == "reading":
        start_reader(client, target, rate)
    elif guest == "busy-cpu":
        start_spinners(client)
    elif guest == "host-writing":
        host_writer = start_host_writer(scratch, rate)
    convert_s = convert_seconds(source, scratch, False)
    convert_direct_s = convert_seconds(source, scratch, True)
    convert_direct_serial_s = convert_seconds(source, scratch, True, in_flight=1)
    body: dict[str, Any]
    if kind == "commit":
        job = request(client, "POST", api_path("vms", VM, "disks", target, "commit"),
                      {"top": f"{target}[1]", "base": f"{target}[2]"})
    elif kind == "active_commit":
        job = request(client, "POST", api_path("vms", VM, "disks", target, "commit"),
                      {"pivot": True})
    elif kind == "pull":
        job = request(client, "POST", api_path("vms", VM, "disks", target, "pull"), {})
    elif kind == "copy":
        body = {"pool": pool, "pivot": True}
        job = request(client, "POST", api_path("vms", VM, "disks", target, "copy"), body)
    else:
        body = {"dest": str(scratch / f"backup-{guest}"), "disks": [target]}
        job = request(client, "POST", api_path("vms", VM, "backup"), body)
    ended = wait_done(client, job["id"])
    if host_writer is not None:
        host_writer.terminate()
        host_writer.wait()
        (scratch / "host-load.raw").unlink()
    elif guest != "idle":
        stop_guest_load(client)
    job_s = float(ended["finished_at"]) - float(ended["created_at"])
    result = Result(kind, guest, data_mib, job_s, convert_s, convert_direct_s,
                    convert_direct_serial_s)
    request(client, "DELETE", api_path("vms", VM, "disks", target))
    if kind == "backup":
        subprocess.run(["rm", "-rf", str(scratch / f"backup-{guest}")], check=True)
    return result


def report(result: Result) -> None:
    print(f"{result.kind:14} {result.guest:8} job {result.job_s:6.2f} s "
          f"({result.job_mib_s:6.0f} MiB/s)  convert {result.convert_s:5.2f} s"
          f" / -t none {result.convert_direct_s:5.2f} s / -t none -m 1 "
          f"{result.convert_direct_serial_s:5.2f} s  ratio {result.ratio:4.2f} / "
          f"{result.ratio_direct:4.2f} / {result.ratio_direct_serial:4.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--write-rate", default="32m",
                        help="fio --rate of the writing and reading loads")
    parser.add_argument("--io-threads", type=int, default=None,
                        help="the disks' io_threads (default: the agent's automatic mapping)")
    parser.add_argument("--guest", choices=LOADS, action="append",
                        help="only these loads (default: idle and writing). Diagnostics: "
                             "writing-other-disk writes to a second disk of the VM, reading "
                             "reads the job's disk at the same rate, busy-cpu spins both vCPUs "
                             "without I/O, host-writing runs the same writes from fio on the "
                             "host into the pool instead of from the guest")
    parser.add_argument("--kind", choices=KINDS, action="append",
                        help="only these jobs (default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per case; the medians are reported")
    arguments = parser.parse_args()
    loads = arguments.guest or ["idle", "writing"]
    kinds = arguments.kind or list(KINDS)
    results: list[Result] = []
    with bench_agent() as client:
        request(client, "POST", "/v1/pools", {"name": "bench", "type": "dir"})
        pool_path = Path(next(p["path"] for p in request(client, "GET", "/v1/pools")))
        scratch = pool_path / "scratch"
        scratch.mkdir(mode=0o711)
        request(client, "POST", "/v1/vms", {"name": VM, "vcpus": 2, "memory": "1G",
                                             "guest": "linux", "start": True})
        other_disk = None
        if "writing-other-disk" in loads:
            other = request(client, "POST", api_path("vms", VM, "disks"),
                            {"pool": "bench", "size": "512M"})
            other_disk = other["target"]
            wait_for_block_device(client, VM, other_disk)
        for run in range(arguments.repeat):
            for guest in loads:
                for kind in kinds:
                    result = run_case(client, kind, guest, arguments.data_mib,
                                      arguments.write_rate, "bench", scratch, run,
                                      arguments.io_threads, other_disk)
                    results.append(result)
                    report(result)
        subprocess.run(["rm", "-rf", str(scratch)], check=True)
    if arguments.repeat > 1:
        print("medians:")
        for guest in loads:
            for kind in kinds:
                runs = [r for r in results if (r.kind, r.guest) == (kind, guest)]
                report(Result(kind, guest, arguments.data_mib,
                              statistics.median(r.job_s for r in runs),
                              statistics.median(r.convert_s for r in runs),
                              statistics.median(r.convert_direct_s for r in runs),
                              statistics.median(r.convert_direct_serial_s for r in runs)))
    path = save("chain", {"data_mib": arguments.data_mib, "write_rate": arguments.write_rate,
                          "io_threads": arguments.io_threads,
                          "results": [asdict(r) | {"job_mib_s": r.job_mib_s, "ratio": r.ratio,
                                                   "ratio_direct": r.ratio_direct,
                                                   "ratio_direct_serial": r.ratio_direct_serial}
                                      for r in results]})
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
