"""Live migration: blockplane's ``vm migrate`` against a plain ``virsh migrate`` of a twin VM.

In a two-host lab (``scripts/lab``), side by side in one run:
- blockplane: a VM made by blockplane (a dir pool, so the disk is a qcow2 file, as the twin's),
  migrated with ``POST /v1/vms/{vm}/migrate`` (check, destination prepare, libvirt's peer-to-peer
  migration with the NBD copy, finish there, cleanup here), timed by the job's record from its
  creation (the start of the check) to ``done``, with the job's own per-phase times and downtime
  (libvirt's job statistics on the destination);
- virsh: its twin (the same domain XML: vCPUs, memory, IOThreads, the disk's driver settings;
  the disk a qcow2 file at a path of its own, the destination image pre-created by hand, empty,
  same size), ``virsh migrate --live --p2p --copy-storage-all --persistent --undefinesource``,
  timed around the command, downtime from ``virsh domjobinfo --completed`` on the destination.
Both disks hold the same DATA (a pattern QEMU writes through the running VM). "idle": no-OS
VMs; "writing": Linux guests writing 1 MiB every 0.1 s (O_DIRECT) while they migrate. Each
VM migrates there and back, the two tools taking turns first. Then N VMs one after another and
M at once, per-VM medians. Results go to ``bench/out/migrate.json``.

    python -m bench.migrate [--data-mib 1024] [--rounds 2] [--sequential 10] [--concurrent 4]
                            [--scenario idle|writing ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from lxml import etree

from bench.common import save
from bench.lab_hosts import BenchHost, two_hosts, wait
from blockplane.xml.parser import parse_xml

MIB = 1 << 20
POOL = "bfile"
TWINS = "/var/lib/blockplane/bench"
DEVICE = "/machine/peripheral/ua-bp-vda/virtio-backend"
WRITER = ("head -c 1048576 /dev/urandom > /tmp/c; i=0; while true; do dd if=/tmp/c of=/dev/vda "
          "bs=1M seek=$(({base} + i % 256)) count=1 oflag=direct conv=notrunc 2>/dev/null; "
          "i=$((i+1)); sleep 0.1; done")


@dataclass
class Sample:
    tool: str
    scenario: str
    direction: str
    total_s: float
    downtime_ms: int | None
    phases: dict[str, float] = field(default_factory=dict)
    #: libvirt's own time for the migration job (``domjobinfo --completed`` on the
    #: destination, "Time elapsed"): places a gap inside or around libvirt's job.
    libvirt_elapsed_ms: int | None = None


def completed_job(destination: BenchHost, vm: str) -> dict[str, int]:
    """Total downtime and time elapsed of the last migration that landed ``vm`` there."""
    info = destination.virsh("domjobinfo", vm, "--completed")
    found = {}
    for key, label in (("downtime_ms", "Total downtime"), ("elapsed_ms", "Time elapsed")):
        match = re.search(rf"^{label}:\s+(\d+)", info, re.MULTILINE)
        if match:
            found[key] = int(match.group(1))
    return found


def make_bp_vm(host: BenchHost, name: str, guest: str, disk_mib: int, data_mib: int) -> None:
    memory = "512M" if guest == "linux" else "256M"
    host.cli("vm", "create", name, "--vcpus", "2", "--memory", memory, "--guest", guest,
             "--start")
    host.cli("disk", "attach", name, "--pool", POOL, "--size", f"{disk_mib}M")
    fill(host, name, data_mib)


def fill(host: BenchHost, vm: str, data_mib: int) -> None:
    for offset in range(0, data_mib, 256):
        size = min(256, data_mib - offset)
        host.qemu_io(vm, DEVICE, f"write -P 0x5a {offset}M {size}M")


def twin_xml(host: BenchHost, vm: str, twin: str) -> str:
    root = parse_xml(host.virsh("dumpxml", "--inactive", vm))
    name = root.find("name")
    assert name is not None
    name.text = twin
    for uuid in root.findall("uuid"):
        root.remove(uuid)
    disk = root.find("devices/disk[@device='disk']")
    assert disk is not None
    source = disk.find("source")
    assert source is not None
    source.set("file", f"{TWINS}/{twin}.qcow2")
    for serial in root.iterfind("devices/serial/source"):
        serial.set("path", f"{TWINS}/{twin}.console.log")
    return etree.tostring(root, encoding="unicode")


def make_twin(one: BenchHost, two: BenchHost, vm: str, twin: str, disk_mib: int,
              data_mib: int, guest: str) -> None:
    for host in (one, two):
        host.run("mkdir", "-p", TWINS)
        host.run("rm", "-f", f"{TWINS}/{twin}.qcow2")
        host.run("qemu-img", "create", "-q", "-f", "qcow2", f"{TWINS}/{twin}.qcow2",
                 f"{disk_mib}M")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as xml:
        xml.write(twin_xml(one, vm, twin))
        xml.flush()
        one.virsh("define", xml.name)
    one.virsh("start", twin)
    if guest == "linux":
        wait(lambda: _agent_answers(one, twin), f"the guest agent of {twin}")
    fill(one, twin, data_mib)


def _agent_answers(host: BenchHost, vm: str) -> bool:
    try:
        host.virsh("qemu-agent-command", vm, '{"execute":"guest-ping"}', timeout=10)
    except RuntimeError:
        return False
    return True


def start_writer(host: BenchHost, vm: str, twin: bool, base_mib: int) -> None:
    script = f"( {WRITER.format(base=base_mib)} ) >/dev/null 2>&1 &"
    if twin:
        host.virsh("qemu-agent-command", vm, json.dumps({
            "execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script]}}))
    else:
        host.cli("guest", "exec", vm, "--", "/bin/sh", "-c", script)


def bp_migrate(source: BenchHost, destination: BenchHost, vm: str, scenario: str) -> Sample:
    """Timed by the job's own record, from its creation (the request's check) to ``done``;
    polled once a second, so that the polling itself takes no CPU from the migration (on a
    2-core TCG host, 20 TLS requests a second slowed it measurably)."""
    with source.api_client() as client:
        answer = client.post(f"/v1/vms/{vm}/migrate", json={"to": destination.name})
        if answer.status_code >= 400:
            raise RuntimeError(f"migrate {vm}: {answer.text}")
        job = answer.json()
        while job["phase"] not in ("done", "failed", "aborted"):
            time.sleep(1.0)
            job = client.get(f"/v1/jobs/{job['id']}").json()
    if job["phase"] != "done":
        raise RuntimeError(f"migration of {vm} ended {job['phase']}: {job['error']}")
    total = float(job["finished_at"]) - float(job["created_at"])
    elapsed = completed_job(destination, vm).get("elapsed_ms")
    return Sample("blockplane", scenario, f"{source.name}->{destination.name}", total,
                  job["downtime_ms"], dict(job["phase_seconds"]), elapsed)


def virsh_migrate(source: BenchHost, destination: BenchHost, twin: str,
                  scenario: str) -> Sample:
    started = time.perf_counter()
    source.virsh("migrate", "--live", "--p2p", "--copy-storage-all", "--persistent",
                 "--undefinesource", twin, destination.libvirt_uri)
    total = time.perf_counter() - started
    job = completed_job(destination, twin)
    return Sample("virsh", scenario, f"{source.name}->{destination.name}", total,
                  job.get("downtime_ms"), libvirt_elapsed_ms=job.get("elapsed_ms"))


def ready_twin_destination(host: BenchHost, twin: str, disk_mib: int) -> None:
    """The empty image a plain ``virsh migrate --copy-storage-all`` needs there first."""
    host.run("rm", "-f", f"{TWINS}/{twin}.qcow2")
    host.run("qemu-img", "create", "-q", "-f", "qcow2", f"{TWINS}/{twin}.qcow2", f"{disk_mib}M")


def side_by_side(one: BenchHost, two: BenchHost, scenario: str, data_mib: int,
                 rounds: int) -> list[Sample]:
    guest = "linux" if scenario == "writing" else "none"
    disk_mib = 2 * data_mib
    vm, twin = f"bp-{scenario}", f"virsh-{scenario}"
    make_bp_vm(one, vm, guest, disk_mib, data_mib)
    make_twin(one, two, vm, twin, disk_mib, data_mib, guest)
    if scenario == "writing":
        start_writer(one, vm, False, data_mib + 64)
        start_writer(one, twin, True, data_mib + 64)
        time.sleep(2)
    samples = []
    try:
        for _ in range(rounds):  # there and back, each tool first once
            samples.append(bp_migrate(one, two, vm, scenario))
            samples.append(virsh_migrate(one, two, twin, scenario))
            ready_twin_destination(one, twin, disk_mib)
            samples.append(virsh_migrate(two, one, twin, scenario))
            samples.append(bp_migrate(two, one, vm, scenario))
            ready_twin_destination(two, twin, disk_mib)
    finally:
        remove(one, two, [vm], [twin])
    return samples


def remove(one: BenchHost, two: BenchHost, vms: list[str], twins: list[str]) -> None:
    for host in (one, two):
        running = set(host.virsh("list", "--all", "--name").split())
        for vm in vms:
            if vm in running:
                _quietly(host.cli, "vm", "destroy", vm)
                _quietly(host.cli, "vm", "delete", vm)
        for twin in twins:
            if twin in running:
                _quietly(host.virsh, "destroy", twin)
                _quietly(host.virsh, "undefine", twin)
            _quietly(host.run, "rm", "-f", f"{TWINS}/{twin}.qcow2")


def _quietly(call: Any, *args: str) -> None:
    with contextlib.suppress(RuntimeError):
        call(*args)


def many(one: BenchHost, two: BenchHost, sequential: int, concurrent: int,
         data_mib: int) -> dict[str, list[Sample]]:
    """``sequential`` VMs of each kind one after another (the tools taking turns, so a change
    in the machine's load falls on both), then ``concurrent`` at once, each group once first."""
    disk_mib = 2 * data_mib
    count = max(sequential, concurrent)
    vms = [f"bp-seq{i}" for i in range(count)]
    twins = [f"virsh-seq{i}" for i in range(count)]
    results: dict[str, list[Sample]] = {"sequential": [], "concurrent": []}
    try:
        for vm, twin in zip(vms, twins, strict=True):
            make_bp_vm(one, vm, "none", disk_mib, data_mib)
            make_twin(one, two, vm, twin, disk_mib, data_mib, "none")
        for index, (vm, twin) in enumerate(zip(vms, twins, strict=True)):
            if index >= sequential:  # only there for the concurrent part, not measured
                bp_migrate(one, two, vm, "moved")
                virsh_migrate(one, two, twin, "moved")
                continue
            pair = [partial(bp_migrate, one, two, vm, "sequential"),
                    partial(virsh_migrate, one, two, twin, "sequential")]
            for call in pair if index % 2 == 0 else reversed(pair):
                results["sequential"].append(call())
        for twin in twins[:concurrent]:
            ready_twin_destination(one, twin, disk_mib)
        results["concurrent"] += _at_once(
            [partial(bp_migrate, two, one, vm, "concurrent") for vm in vms[:concurrent]])
        results["concurrent"] += _at_once(
            [partial(virsh_migrate, two, one, twin, "concurrent") for twin in twins[:concurrent]])
        for twin in twins[:concurrent]:
            ready_twin_destination(two, twin, disk_mib)
        results["concurrent"] += _at_once(
            [partial(virsh_migrate, one, two, twin, "concurrent") for twin in twins[:concurrent]])
        results["concurrent"] += _at_once(
            [partial(bp_migrate, one, two, vm, "concurrent") for vm in vms[:concurrent]])
    finally:
        remove(one, two, vms, twins)
    return results


def _at_once(calls: list[Callable[[], Sample]]) -> list[Sample]:
    samples: list[Sample] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], Sample]) -> None:
        try:
            samples.append(call())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(samples: list[Sample]) -> dict[str, Any]:
    bp = [s for s in samples if s.tool == "blockplane"]
    vs = [s for s in samples if s.tool == "virsh"]
    bp_total, virsh_total = median([s.total_s for s in bp]), median([s.total_s for s in vs])
    downtimes = {tool: [s.downtime_ms for s in group if s.downtime_ms is not None]
                 for tool, group in (("blockplane", bp), ("virsh", vs))}
    phases = {name: round(median([s.phases.get(name, 0.0) for s in bp]), 3)
              for name in ("check", "prepare", "migrate", "finish", "cleanup")}
    # Until the VM runs there and is recorded there: everything but this host's cleanup.
    landed = median([s.total_s - s.phases.get("cleanup", 0.0) for s in bp])
    return {
        "blockplane_s": round(bp_total, 2), "virsh_s": round(virsh_total, 2),
        "ratio": round(bp_total / virsh_total, 3),
        "blockplane_landed_s": round(landed, 2), "landed_ratio": round(landed / virsh_total, 3),
        "blockplane_downtime_ms": median([float(d) for d in downtimes["blockplane"]]),
        "virsh_downtime_ms": median([float(d) for d in downtimes["virsh"]]),
        "phases_s": phases, "samples": len(bp),
        "blockplane_libvirt_elapsed_ms": median(
            [float(s.libvirt_elapsed_ms) for s in bp if s.libvirt_elapsed_ms is not None]),
        "virsh_libvirt_elapsed_ms": median(
            [float(s.libvirt_elapsed_ms) for s in vs if s.libvirt_elapsed_ms is not None]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--many-data-mib", type=int, default=256)
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="Round trips per scenario.")
    parser.add_argument("--scenario", action="append", choices=["idle", "writing"])
    args = parser.parse_args()
    scenarios = args.scenario or ["idle", "writing"]
    report: dict[str, Any] = {"data_mib": args.data_mib}
    every: list[Sample] = []
    with two_hosts() as (one, two):
        for host in (one, two):
            host.cli("pool", "create", POOL, "--type", "dir")
        for scenario in scenarios:
            samples = side_by_side(one, two, scenario, args.data_mib, args.rounds)
            every += samples
            report[scenario] = summary(samples)
            print(scenario, report[scenario], flush=True)
        if args.sequential or args.concurrent:
            groups = many(one, two, args.sequential, args.concurrent, args.many_data_mib)
            for name, samples in groups.items():
                every += samples
                report[name] = summary(samples)
                print(name, report[name], flush=True)
    report["all"] = [asdict(sample) for sample in every]
    print(f"results: {save('migrate', report)}")


if __name__ == "__main__":
    main()
