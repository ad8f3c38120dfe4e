"""Pull backups read over NBD, side by side with the image file, and what they cost the guest.

A throwaway agent boots the bundled Linux guest with a DATA-sized qcow2 disk (dir pool, host
disk) filled with random bytes on the host before the VM starts. Then, in one run:

1. full read: ``qemu-img convert`` of the pull backup's NBD URL to a raw file on tmpfs, against
   ``qemu-img convert -U -T none`` of the disk's image file to the same place (the VM's disks are
   opened with O_DIRECT too); alternated, ``--repeat`` times, medians; ratio = file time / NBD
   time (NBD throughput as a share of the file's; goal >= 0.8); the same pair again with
   ``-m 16 -W`` on both sides (many requests in flight, as a backup application reads), and the
   CPU each NBD read costs by QEMU thread and in the client. A control in the same loop:
   ``qemu-nbd`` serving the same image file (read-only, O_DIRECT, nothing of the VM's in its
   path) read by the same ``qemu-img convert``: what any NBD export costs this client against
   the file, the bound on the first ratio. The reference pull client's full read (nbdcopy into
   a qcow2) is timed once as well.
2. incremental: the guest rewrites 5% of the disk (fio randwrite, 64 KiB blocks, no block twice:
   exactly CHANGED bytes), then the reference pull client reads the incremental export:
   bytes read over NBD / bytes changed (goal <= 1.1), and its time against the client's full read.
3. the guest's fio (4k random writes, O_DIRECT, iodepth 16, on a fresh region each time) with no
   backup, with an export open and idle, with an export open while ``qemu-img convert -r`` reads
   it for the whole run, and with no backup again: IOPS, and the ratio to the first. The first
   write to each cluster during an export costs a copy into the scratch image
   (copy-before-write).

    python -m bench.backup_pull [--data-mib 512] [--repeat 3] [--fio-runtime 10] [--io-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import bench_agent, fio_json, guest_run, save, tmpfs_dir, wait_for_block_device
from blockplane.backup.pull_client import wait_for_socket
from blockplane.cli.client import AgentClient, api_path

MIB = 1 << 20
VM = "pullbench"
PARALLEL = ("-m", "16", "-W")
REPO = Path(__file__).resolve().parent.parent


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - started


def convert(*source: str, out: Path) -> float:
    """Seconds for ``qemu-img convert`` of ``source`` (its options, then its name) to a raw
    ``out``, which is removed after."""
    seconds = timed(["qemu-img", "convert", *source[:-1], "-O", "raw", source[-1], str(out)])
    out.unlink()
    return seconds


def pull(client: AgentClient, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = client.request("POST", api_path("vms", VM, "backup", "pull"), body)
    return answer


def stop(client: AgentClient, job: str) -> None:
    client.request("POST", api_path("jobs", job, "stop"))
    deadline = time.monotonic() + 60
    while client.request("GET", api_path("jobs", job))["phase"] not in ("done", "failed",
                                                                         "aborted"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} did not end")
        time.sleep(0.2)


def pull_client(answer: dict[str, Any], out: Path) -> tuple[dict[str, Any], float]:
    target = answer["disks"][0]["target"]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "blockplane.backup.pull_client", "--answer",
                             "-", "--out", str(out)], input=json.dumps(answer), text=True,
                            capture_output=True, check=True, cwd=REPO)
    report: dict[str, Any] = json.loads(result.stdout)["disks"][target]
    return report, time.monotonic() - started


def fio_iops(client: AgentClient, device: str, offset_mib: int, region_mib: int,
             runtime: int) -> float:
    data = fio_json(client, VM, f"--name=w --filename={device} --rw=randwrite --bs=4k "
                                f"--direct=1 --ioengine=libaio --iodepth=16 "
                                f"--offset={offset_mib}M --size={region_mib}M --time_based "
                                f"--runtime={runtime} --ramp_time=1")
    return float(data["jobs"][0]["write"]["iops"])


@contextmanager
def plain_nbd_export(image: str, directory: Path) -> Iterator[str]:
    """``image`` served by ``qemu-nbd`` beside the running VM (read-only, sharing the VM's
    image without its locks, O_DIRECT and the thread pool as the VM's disk): an NBD export
    with no VM, no snapshot layer and no scratch image in its path."""
    socket = directory / "plain.sock"
    options = (f"driver=qcow2,cache.direct=on,file.driver=file,file.filename={image},"
               "file.locking=off,file.aio=threads")
    server = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", f"--socket={socket}",
                               "--image-opts", options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_socket(str(socket), server)
        yield f"nbd+unix:///?socket={socket}"
    finally:
        server.terminate()
        server.wait(10)


def qemu_pid(vm: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and f"guest={vm},".encode() in cmdline:
                return int(entry.name)
    return None


def threads_cpu_s(pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid``, summed by thread name."""
    ticks, seconds = os.sysconf("SC_CLK_TCK"), dict[str, float]()
    for task in Path(f"/proc/{pid}/task").glob("*") if pid else []:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        seconds[name] = seconds.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(data_mib: int, repeat: int, fio_runtime: int, io_threads: int | None,
        full_only: bool = False) -> dict[str, Any]:
    shm = tmpfs_dir("bp-pull-bench")
    results: dict[str, Any] = {"data_mib": data_mib, "io_threads": io_threads}
    with bench_agent() as client:
        client.request("POST", "/v1/pools", {"name": "pb", "type": "dir"})
        client.request("POST", "/v1/vms", {"name": VM, "vcpus": 2, "memory": "1G",
                                           "guest": "linux"})
        attach: dict[str, Any] = {"pool": "pb", "size": f"{data_mib}M"}
        if io_threads is not None:
            attach["io_threads"] = io_threads
        disk = client.request("POST", api_path("vms", VM, "disks"), attach)
        source = shm / "random.raw"
        subprocess.run(["dd", "if=/dev/urandom", f"of={source}", "bs=1M", f"count={data_mib}"],
                       check=True, capture_output=True)
        subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", str(source),
                        disk["source"]], check=True, capture_output=True)
        source.unlink()
        client.request("POST", api_path("vms", VM, "start"))
        wait_for_block_device(client, VM, disk["target"])
        device = f"/dev/{disk['target']}"
        try:
            run_cases(client, disk, device, data_mib, repeat, fio_runtime, shm, results,
                      full_only)
        finally:
            for job in client.request("GET", "/v1/jobs", vm=VM):
                if job["phase"] == "running":
                    stop(client, job["id"])
            shutil.rmtree(shm, ignore_errors=True)
    save("backup_pull" if io_threads is None else f"backup_pull-io{io_threads}", results)
    return results


def run_cases(client: AgentClient, disk: dict[str, Any], device: str, data_mib: int,
              repeat: int, fio_runtime: int, shm: Path, results: dict[str, Any],
              full_only: bool) -> None:
    # 1. full read, NBD against the image file
    answer = pull(client)
    url = answer["disks"][0]["url"]
    out = shm / "out.raw"
    nbd_s, file_s = [], []
    # Where the NBD reads' CPU goes: the VM's QEMU by thread (main loop, IOThreads, vCPUs)
    # and the client, per read.
    qemu = qemu_pid(VM)
    qemu_cpu: dict[str, float] = {}
    client_cpu = 0.0
    parallel_nbd_s, parallel_file_s, plain_nbd_s = [], [], []
    nbd = ("-f", "raw", url)
    image = ("-U", "-T", "none", "-f", "qcow2", disk["source"])
    with plain_nbd_export(disk["source"], shm) as plain_url:
        for _ in range(repeat):
            before, client_before = threads_cpu_s(qemu), children_cpu_s()
            nbd_s.append(convert(*nbd, out=out))
            client_cpu += children_cpu_s() - client_before
            for name, seconds in threads_cpu_s(qemu).items():
                qemu_cpu[name] = qemu_cpu.get(name, 0.0) + seconds - before.get(name, 0.0)
            file_s.append(convert(*image, out=out))
            # The same pair as a backup application reads: many requests in flight, written
            # out of order (convert's -m 16 -W), on both sides alike.
            parallel_nbd_s.append(convert(*PARALLEL, *nbd, out=out))
            parallel_file_s.append(convert(*PARALLEL, *image, out=out))
            plain_nbd_s.append(convert("-f", "raw", plain_url, out=out))
    full_report, full_client_s = pull_client(answer, shm / "full")
    subprocess.run(["rm", "-rf", str(shm / "full")], check=True)
    stop(client, answer["job"])
    results["full"] = {
        "nbd_s": statistics.median(nbd_s), "file_s": statistics.median(file_s),
        "ratio": statistics.median(file_s) / statistics.median(nbd_s),
        "nbd_mib_s": data_mib / statistics.median(nbd_s),
        "file_mib_s": data_mib / statistics.median(file_s),
        "client_s": full_client_s, "client_bytes_read": full_report["bytes_read"],
        "best_ratio": min(file_s) / min(nbd_s),
        "runs": {"nbd_s": nbd_s, "file_s": file_s, "parallel_nbd_s": parallel_nbd_s,
                 "parallel_file_s": parallel_file_s, "plain_nbd_s": plain_nbd_s},
        "plain_nbd_mib_s": data_mib / statistics.median(plain_nbd_s),
        "plain_ratio": statistics.median(file_s) / statistics.median(plain_nbd_s),
        "pull_vs_plain": statistics.median(plain_nbd_s) / statistics.median(nbd_s),
        "parallel_ratio": statistics.median(parallel_file_s) / statistics.median(parallel_nbd_s),
        "parallel_nbd_mib_s": data_mib / statistics.median(parallel_nbd_s),
        "parallel_file_mib_s": data_mib / statistics.median(parallel_file_s),
        "cpu_s_per_nbd_read": {"client": round(client_cpu / repeat, 3), **{
            f"qemu {name}": round(seconds / repeat, 3) for name, seconds in qemu_cpu.items()
            if seconds > 0}},
    }
    if full_only:
        return

    # 2. incremental after 5% changed
    changed = (data_mib * MIB // 20) // (64 * 1024) * (64 * 1024)
    guest_run(client, VM, f"fio --name=c --filename={device} --rw=randwrite --bs=64k "
                          f"--direct=1 --ioengine=psync --size={data_mib}M "
                          f"--io_size={changed} --randrepeat=0 >/dev/null")
    answer = pull(client, incremental="auto")
    report, inc_client_s = pull_client(answer, shm / "inc")
    subprocess.run(["rm", "-rf", str(shm / "inc")], check=True)
    stop(client, answer["job"])
    results["incremental"] = {
        "changed_bytes": changed, "bytes_read": report["bytes_read"],
        "extents": report["extents"], "read_per_changed": report["bytes_read"] / changed,
        "client_s": inc_client_s, "full_client_s": full_client_s,
        "time_vs_full": inc_client_s / full_client_s,
    }

    # 3. guest fio during an export
    region = max(16, data_mib // 8)
    iops = {"none": fio_iops(client, device, 0, region, fio_runtime)}
    answer = pull(client)
    iops["export_idle"] = fio_iops(client, device, region, region, fio_runtime)
    rate = max(1, data_mib // (fio_runtime + 2))  # MiB/s: the read lasts the whole fio run
    reader = subprocess.Popen(["qemu-img", "convert", "-r", f"{rate}M", "-f", "raw", "-O",
                               "raw", answer["disks"][0]["url"], str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    iops["export_read"] = fio_iops(client, device, 2 * region, region, fio_runtime)
    reader_done = reader.poll() is not None
    reader.wait()
    out.unlink(missing_ok=True)
    stop(client, answer["job"])
    iops["none_after"] = fio_iops(client, device, 3 * region, region, fio_runtime)
    results["guest"] = {
        "iops": iops, "vs_none": {k: v / iops["none"] for k, v in iops.items()},
        "region_mib": region, "reader_finished_during_fio": reader_done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fio-runtime", type=int, default=10)
    parser.add_argument("--io-threads", type=int, default=None,
                        help="IOThreads of the disk (default: blockplane's policy; 0: none)")
    parser.add_argument("--full-only", action="store_true",
                        help="only the full read (no incremental, no guest fio)")
    options = parser.parse_args()
    results = run(options.data_mib, options.repeat, options.fio_runtime, options.io_threads,
                  options.full_only)
    full = results["full"]
    print(f"full read, {options.data_mib} MiB: NBD {full['nbd_s']:.2f} s "
          f"({full['nbd_mib_s']:.0f} MiB/s), image file {full['file_s']:.2f} s "
          f"({full['file_mib_s']:.0f} MiB/s): ratio {full['ratio']:.2f} (goal >= 0.8), best "
          f"runs {full['best_ratio']:.2f}; "
          f"reference client (nbdcopy) {full['client_s']:.2f} s")
    print(f"  with {' '.join(PARALLEL)} on both sides: NBD {full['parallel_nbd_mib_s']:.0f} "
          f"MiB/s, image file {full['parallel_file_mib_s']:.0f} MiB/s: ratio "
          f"{full['parallel_ratio']:.2f}")
    print(f"  control, qemu-nbd of the image file: NBD {full['plain_nbd_mib_s']:.0f} MiB/s: "
          f"ratio {full['plain_ratio']:.2f} against the file; the pull export reads at "
          f"{full['pull_vs_plain']:.2f} of it")
    print("CPU s per NBD read: " + ", ".join(
        f"{name} {seconds:.2f}" for name, seconds in full["cpu_s_per_nbd_read"].items()))
    if options.full_only:
        return
    inc, guest = results["incremental"], results["guest"]
    print(f"incremental, {inc['changed_bytes'] / MIB:.1f} MiB changed in {inc['extents']} "
          f"extents: read {inc['bytes_read'] / MIB:.1f} MiB, ratio "
          f"{inc['read_per_changed']:.3f} (goal <= 1.1); {inc['client_s']:.2f} s, "
          f"{inc['time_vs_full']:.2f} of the full read")
    print("guest 4k randwrite IOPS: " + ", ".join(
        f"{name} {value:.0f} ({guest['vs_none'][name]:.2f})"
        for name, value in guest["iops"].items()))


if __name__ == "__main__":
    main()
