"""Block-job throughput as a ratio to ``qemu-img convert`` of the same data, guest idle and writing.

A throwaway agent boots the bundled Linux guest. For each job a fresh disk is hotplugged from a
dir pool on the host disk and laid out so the job moves exactly DATA bytes (fio's non-zero
buffers, written by the guest with O_DIRECT):

- commit: base <- s1 (DATA) <- s2; commit s1 into base;
- active commit: base <- s1 (DATA); commit with pivot (time to DONE, pivot included);
- pull: base (DATA) <- s1; pull everything into s1;
- copy: base (DATA); full copy to a new volume, with pivot;
- backup: base (DATA); full push backup;
- thin_copy: base (DATA) copied with pivot into a thin loop pool (64 MiB chunks at 20%), and the
  same into a loop pool whose chunk is larger than the disk, so that its destination is made
  fully allocated: the ratio is the full copy's time / the thin copy's (goal >= 0.9), and the thin
  destination's final physical size is compared with QEMU's allocation of it (goal: at most
  2 chunks above).

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
KINDS = ("commit", "active_commit", "pull", "copy", "backup", "thin_copy")
THIN_CHUNK_MIB = 64
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


@dataclass
class ThinCopyResult:
    guest: str
    data_mib: int
    thin_s: float
    full_s: float
    thin_ready_s: float
    full_ready_s: float
    physical: int
    allocation: int
    extends: int
    restarts: int

    @property
    def ratio(self) -> float:
        """Thin throughput / full-size throughput (goal >= 0.9)."""
        return self.full_s / self.thin_s

    @property
    def slack_chunks(self) -> float:
        """(final physical - allocation) in chunks (goal <= 2)."""
        return (self.physical - self.allocation) / (THIN_CHUNK_MIB * MIB)


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


def copy_into(client: AgentClient, guest: str, data_mib: int, rate: str, source_pool: str,
              pool: str, io_threads: int | None) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """A fresh disk with DATA, copied with pivot into ``pool`` under the load ``guest``: the
    job's seconds, the job, and the thin monitor's row of the destination at the end."""
    wanted: dict[str, Any] = {"pool": source_pool, "size": f"{data_mib + 512}M"}
    if io_threads is not None:
        wanted["io_threads"] = io_threads
    target = request(client, "POST", api_path("vms", VM, "disks"), wanted)["target"]
    wait_for_block_device(client, VM, target)
    fill(client, target, data_mib)
    if guest == "writing":
        start_writer(client, target, data_mib + 64, rate)
    job = request(client, "POST", api_path("vms", VM, "disks", target, "copy"),
                  {"pool": pool, "pivot": True})
    ended = wait_done(client, job["id"])
    if guest == "writing":
        stop_guest_load(client)
    ready = [event for event in client.request("GET", api_path("events"), vm=VM,
                                               type="job.ready", limit=10000)
             if event.get("job") == job["id"]]
    ended["ready_s"] = float(ready[0]["at"]) - float(ended["created_at"]) if ready else None
    volume = ended["spec"]["destination"]["volume"]
    rows = client.request("GET", api_path("thin"), vm=VM)
    [row] = [r for r in rows if r["volume"] == volume]
    request(client, "DELETE", api_path("vms", VM, "disks", target))
    return float(ended["finished_at"]) - float(ended["created_at"]), ended, row


def run_thin_copy(client: AgentClient, guest: str, data_mib: int, rate: str, run: int,
                  io_threads: int | None) -> ThinCopyResult:
    """The same copy into the full-size pool and into the thin one; the order alternates."""
    order = ("full", "thin") if run % 2 == 0 else ("thin", "full")
    seconds: dict[str, float] = {}
    to_ready: dict[str, float] = {}
    thin_job: dict[str, Any] = {}
    thin_row: dict[str, Any] = {}
    for pool in order:
        seconds[pool], job, row = copy_into(client, guest, data_mib, rate, "bench",
                                            f"{pool}-loop", io_threads)
        to_ready[pool] = job["ready_s"] or seconds[pool]
        if pool == "thin":
            thin_job, thin_row = job, row
    return ThinCopyResult(guest, data_mib, seconds["thin"], seconds["full"], to_ready["thin"],
                          to_ready["full"], int(thin_row["physical"]),
                          int(thin_row["allocation"] or 0),
                          int(thin_row["extends"]), int(thin_job.get("restarts", 0)))


def report_thin_copy(result: ThinCopyResult) -> None:
    print(f"{'thin_copy':14} {result.guest:8} thin {result.thin_s:6.2f} s "
          f"({result.data_mib / result.thin_s:6.0f} MiB/s, READY at {result.thin_ready_s:5.2f})"
          f"  full-size {result.full_s:6.2f} s ({result.data_mib / result.full_s:6.0f} MiB/s, "
          f"READY at {result.full_ready_s:5.2f})  ratio {result.ratio:4.2f}  "
          f"physical {result.physical / MIB:7.1f} MiB allocation "
          f"{result.allocation / MIB:7.1f} MiB (+{result.slack_chunks:4.2f} chunks)  "
          f"{result.extends} extends {result.restarts} restarts", flush=True)


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
    thin_results: list[ThinCopyResult] = []
    with bench_agent() as client:
        request(client, "POST", "/v1/pools", {"name": "bench", "type": "dir"})
        if "thin_copy" in kinds:
            request(client, "POST", "/v1/pools", {"name": "thin-loop", "type": "loop",
                                                 "chunk": f"{THIN_CHUNK_MIB}M",
                                                 "utilization": 20})
            # A chunk past the disk's qcow2 ceiling: fill_size makes the destination full size.
            request(client, "POST", "/v1/pools", {"name": "full-loop", "type": "loop",
                                                 "chunk": f"{arguments.data_mib + 4096}M"})
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
                    if kind == "thin_copy":
                        thin = run_thin_copy(client, guest, arguments.data_mib,
                                             arguments.write_rate, run, arguments.io_threads)
                        thin_results.append(thin)
                        report_thin_copy(thin)
                        continue
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
                if kind == "thin_copy":
                    copies = [r for r in thin_results if r.guest == guest]
                    report_thin_copy(ThinCopyResult(
                        guest, arguments.data_mib,
                        statistics.median(r.thin_s for r in copies),
                        statistics.median(r.full_s for r in copies),
                        statistics.median(r.thin_ready_s for r in copies),
                        statistics.median(r.full_ready_s for r in copies),
                        int(statistics.median(r.physical for r in copies)),
                        int(statistics.median(r.allocation for r in copies)),
                        int(statistics.median(r.extends for r in copies)),
                        max(r.restarts for r in copies)))
                    print(f"{'':14} {guest:8} median of the runs' ratios "
                          f"{statistics.median(r.ratio for r in copies):4.2f}", flush=True)
                    continue
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
                                      for r in results],
                          "thin_copy": [asdict(r) | {"ratio": r.ratio,
                                                     "slack_chunks": r.slack_chunks}
                                        for r in thin_results],
                          "thin_chunk_mib": THIN_CHUNK_MIB})
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
