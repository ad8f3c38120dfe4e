"""The guided tour: every step is a real API call, printed as it happens.

It must stay a client of the API (like any management platform), never reach into services.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from blockplane.cli.client import AgentClient, CLIError, api_path

DEMO_POOL = "demo-pool"
DEMO_VM = "demo-vm"

console = Console(highlight=False)


@dataclass
class Tour:
    client: AgentClient
    results: list[tuple[str, str, float]] = field(default_factory=list)

    def step(self, title: str, action: Callable[[], str]) -> None:
        console.print(f"[bold cyan]==>[/bold cyan] {title}")
        started = time.monotonic()
        outcome = action()
        elapsed = time.monotonic() - started
        console.print(f"    {outcome}  [dim]({elapsed:.2f} s)[/dim]")
        self.results.append((title, outcome, elapsed))

    def exec(self, *argv: str) -> tuple[int, str]:
        result = self.client.request(
            "POST", api_path("vms", DEMO_VM, "exec"), {"argv": list(argv), "timeout": 300}
        )
        output = base64.b64decode(result["stdout_base64"]).decode(errors="replace")
        return int(result["exit_code"]), output

    def summary(self) -> None:
        table = Table(title="blockplane demo: summary")
        table.add_column("step")
        table.add_column("result")
        table.add_column("seconds", justify="right")
        for title, outcome, elapsed in self.results:
            table.add_row(title, outcome, f"{elapsed:.2f}")
        console.print(table)


def run_tour(client: AgentClient, keep: bool = False) -> None:
    tour = Tour(client)
    _clean(client)
    try:
        tour.step("Host facts", lambda: _facts(client))
        tour.step("Create a loop pool", lambda: _pool(client))
        tour.step("Create and boot a VM with the Linux test guest", lambda: _vm(client))
        tour.step(
            "Hotplug a 256 MiB qcow2 disk, 4 queues over 2 IOThreads", lambda: _attach(client)
        )
        tour.step("IOThread mapping, as QEMU and the guest see it", lambda: _iothreads(tour))
        tour.step("Write 32 MiB in the guest and read its checksum back", lambda: _checksum(tour))
    finally:
        if not keep:
            tour.step("Clean up", lambda: _clean(client))
    tour.summary()


def _facts(client: AgentClient) -> str:
    facts: dict[str, Any] = client.request("GET", "/v1/facts")
    supported = [name for name, entry in facts["capabilities"].items() if entry["supported"]]
    return (
        f"QEMU {facts['qemu']['version']}, libvirt {facts['libvirt']['version']}, "
        f"accel {facts['accel']['selected']}; supported: {', '.join(supported) or 'none'}"
    )


def _pool(client: AgentClient) -> str:
    pool = client.request("POST", "/v1/pools", {"name": DEMO_POOL, "type": "loop", "chunk": "256M"})
    return f"pool {pool['name']} at {pool['path']}"


def _vm(client: AgentClient) -> str:
    vm = client.request(
        "POST",
        "/v1/vms",
        {"name": DEMO_VM, "vcpus": 2, "memory": "512M", "guest": "linux", "start": True},
    )
    return f"VM {vm['name']} is {vm['state']}; its guest agent answers"


def _attach(client: AgentClient) -> str:
    disk = client.request(
        "POST",
        api_path("vms", DEMO_VM, "disks"),
        {"pool": DEMO_POOL, "size": "256M", "queues": 2, "io_threads": 2},
    )
    return f"{disk['target']} -> {disk['source']} ({disk['format']}); {disk['notes'][0]}"


def _iothreads(tour: Tour) -> str:
    report = tour.client.request("GET", api_path("vms", DEMO_VM, "iothreads"))
    mapping = "; ".join(
        f"IOThread {entry['id']} serves "
        + ", ".join(f"{s['disk']} queues {s['queues']}" for s in entry["serves"])
        for entry in report["iothreads"]
    )
    _code, output = tour.exec("/bin/sh", "-c", "ls /sys/block/vda/mq | wc -l")
    return f"{mapping}; the guest sees {output.strip()} queues on vda"


def _checksum(tour: Tour) -> str:
    code, output = tour.exec(
        "/bin/sh",
        "-c",
        "dd if=/dev/urandom of=/tmp/pattern bs=1M count=32 2>/dev/null && "
        "dd if=/tmp/pattern of=/dev/vda bs=1M oflag=direct 2>/dev/null && "
        "sha256sum /tmp/pattern | cut -d' ' -f1 && "
        "echo 3 > /proc/sys/vm/drop_caches; "
        "dd if=/dev/vda bs=1M count=32 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1",
    )
    lines = output.split()
    if code != 0 or len(lines) != 2:
        raise CLIError(f"guest write/read failed (exit {code}): {output}", 1)
    if lines[0] != lines[1]:
        raise CLIError(f"checksum mismatch: wrote {lines[0]}, read {lines[1]}", 1)
    return f"sha256 {lines[0][:16]}... written and read back identical"


def _clean(client: AgentClient) -> str:
    removed = []
    vms = {vm["name"]: vm for vm in client.request("GET", "/v1/vms")}
    if DEMO_VM in vms:
        if vms[DEMO_VM]["state"] not in ("shutoff", "crashed"):
            client.request("POST", api_path("vms", DEMO_VM, "destroy"))
        client.request("DELETE", api_path("vms", DEMO_VM))
        removed.append(f"VM {DEMO_VM}")
    if any(pool["name"] == DEMO_POOL for pool in client.request("GET", "/v1/pools")):
        client.request("DELETE", api_path("pools", DEMO_POOL))
        removed.append(f"pool {DEMO_POOL}")
    return "removed " + (", ".join(removed) if removed else "nothing (already clean)")
