"""API overhead of the scale bench: ``disk attach`` through the agent against virsh by hand.

Embedded libvirt cannot be shared with virsh, so this runs on the system daemon
(``qemu:///system``; started here with ``virtlogd -d`` and ``libvirtd -d`` if it is not running,
and stopped again by pid if this bench started it). A second
agent points at it. Two running no-OS VMs get the same setup (IOThreads 101 and 102, group
``vmgroup``, one warm-up disk each), then per round:

- agent: ``POST /v1/vms/A/disks`` (qcow2, 4 queues over 2 IOThreads, a 2-filter chain: a
  per-disk group of 500 IOPS, then ``vmgroup``), over a kept connection;
- by hand on B: ``qemu-img create``, ``virsh domthrottlegroupset`` for the per-disk group and
  ``virsh attach-device`` of the same disk XML the agent sends (built by the same code, only
  the path and target differ). ``attach-device`` alone is reported too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scale_api import Api
from blockplane.cli.client import api_path, start_agent, stop_agent
from blockplane.config import load_settings
from blockplane.model.disk import DiskDevice
from blockplane.vms.disk_plan import with_io_policy
from blockplane.xml.disk import disk_element, to_xml

URI = "qemu:///system"
VIRSH = ["virsh", "-q", "-c", URI]
GROUP = "vmgroup"
PER_DISK_IOPS = 500
SIZE = 64 * 1024 * 1024


def _run(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - started


def _daemon_up() -> bool:
    probe = subprocess.run([*VIRSH, "version"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def _start_daemons() -> list[int]:
    """Start virtlogd and libvirtd unless libvirtd answers; the pids of what this call started."""
    if _daemon_up():
        return []
    subprocess.run(["virtlogd", "-d"], check=False, capture_output=True, timeout=30)
    subprocess.run(["libvirtd", "-d"], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while not _daemon_up():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not answer within 30 s")
        time.sleep(0.2)
    pids = []
    for pid_file in (Path("/run/libvirtd.pid"), Path("/run/virtlogd.pid")):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text().strip()))
    return pids


def _stop_daemons(pids: list[int]) -> None:
    """Stop the daemons this bench started, by their pids (domains defined in the system
    daemon before, by anyone, stay defined: their configuration is on disk)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _device_xml(target: str, path: Path, mapping: list[list[Any]]) -> str:
    device = DiskDevice(
        target=target,
        bus="virtio",
        source=str(path),
        source_kind="file",
        format="qcow2",
        queues=4,
        queue_mapping=tuple((int(iothread), tuple(queues)) for iothread, queues in mapping),
        throttle_groups=(f"bench-disk-{target}", GROUP),
    )
    return to_xml(disk_element(with_io_policy(device)))


def _agent_attach(api: Api, vm: str) -> tuple[float, dict[str, Any]]:
    seconds, disk = api.timed("POST", api_path("vms", vm, "disks"), {
        "pool": "ovh", "size": SIZE, "format": "qcow2", "queues": 4, "io_threads": 2,
        "limits": {"total_iops_sec": PER_DISK_IOPS}, "throttle_groups": [GROUP],
    })
    return seconds, disk


def _by_hand(
    vm: str, target: str, work: Path, mapping: list[list[Any]], iothreads: set[int]
) -> dict[str, float]:
    """The agent's work by hand: the IOThreads its plan added (a throttled disk gets one of
    its own), the image, the per-disk group, the attach."""
    added = 0.0
    for iothread, _queues in mapping:
        if int(iothread) not in iothreads:
            added += _run([*VIRSH, "iothreadadd", vm, str(iothread), "--live", "--config"])
            iothreads.add(int(iothread))
    image = work / f"{vm}-{target}.qcow2"
    xml_file = work / f"{vm}-{target}.xml"
    xml_file.write_text(_device_xml(target, image, mapping))
    create = _run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=off",
                   str(image), str(SIZE)])
    group = _run([*VIRSH, "domthrottlegroupset", vm, f"bench-disk-{target}",
                  "--total-iops-sec", str(PER_DISK_IOPS), "--live", "--config"])
    attach = _run([*VIRSH, "attach-device", vm, str(xml_file), "--live", "--config"])
    return {"iothread_add": added, "qemu_img": create, "group": group, "attach_device": attach,
            "total": added + create + group + attach}


def overhead(rounds: int, tag: str) -> dict[str, Any]:
    started_daemons = _start_daemons()
    home = Path(tempfile.mkdtemp(prefix="bp-ovh-", dir="/tmp"))
    home.chmod(0o711)  # QEMU runs as libvirt-qemu under the system daemon
    work = home / "by-hand"
    work.mkdir()
    work.chmod(0o755)
    settings = load_settings(home=home, libvirt_uri=URI)
    vm_agent, vm_hand = f"bpovh-{tag}-a", f"bpovh-{tag}-b"
    try:
        start_agent(settings)
        api = Api(settings)
        api.call("POST", "/v1/pools", {"name": "ovh", "type": "dir",
                                       "path": str(home / "pool")})
        for vm in (vm_agent, vm_hand):
            api.call("POST", "/v1/vms", {"name": vm, "vcpus": 1, "memory": "64M",
                                         "start": True})
            api.call("PUT", api_path("vms", vm, "throttle-groups", GROUP),
                     {"limits": {"total_iops_sec": 2000}})
        _, warm = _agent_attach(api, vm_agent)
        mapping = warm["plan"]["mapping"]
        iothreads: set[int] = set()
        _by_hand(vm_hand, "vda", work, mapping, iothreads)
        agent_s: list[float] = []
        hand: list[dict[str, float]] = []
        shape = [len(queues) for _iothread, queues in mapping]
        for index in range(rounds):
            seconds, disk = _agent_attach(api, vm_agent)
            agent_s.append(seconds)
            # The same plan each time, on a dedicated IOThread of its own (throttled disks).
            mapping = disk["plan"]["mapping"]
            assert [len(queues) for _iothread, queues in mapping] == shape, disk["plan"]
            hand.append(_by_hand(vm_hand, f"vd{chr(ord('b') + index)}", work, mapping,
                                 iothreads))
        return _summary(agent_s, hand, mapping)
    finally:
        api_cleanup(settings, (vm_agent, vm_hand))
        stop_agent(settings)
        shutil.rmtree(home, ignore_errors=True)
        _stop_daemons(started_daemons)


def api_cleanup(settings: Any, vms: tuple[str, ...]) -> None:
    api = Api(settings)
    for vm in vms:
        for action in (("POST", api_path("vms", vm, "destroy")), ("DELETE", api_path("vms", vm))):
            try:
                api.call(*action)
            except Exception:
                continue


def _summary(
    agent_s: list[float], hand: list[dict[str, float]], mapping: list[list[Any]]
) -> dict[str, Any]:
    agent = statistics.median(agent_s)
    parts = {key: statistics.median(h[key] for h in hand) for key in hand[0]}
    return {
        "rounds": len(agent_s),
        "mapping": mapping,
        "agent_api_median_s": round(agent, 4),
        "agent_api_max_s": round(max(agent_s), 4),
        "by_hand_median_s": {key: round(value, 4) for key, value in parts.items()},
        "ratio_vs_by_hand": round(agent / parts["total"], 3),
        "ratio_vs_attach_device_only": round(agent / parts["attach_device"], 3),
    }
