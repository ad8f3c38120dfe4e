"""A two-host lab for the benchmarks, and the ways they drive a host: its agent's API over
TLS (as a management platform would), its ``blockplane`` CLI and any command inside its
namespace, and its libvirtd with ``virsh`` from the machine itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blockplane.lab import host_command, load

LAB = [sys.executable, "-m", "blockplane.lab"]


@dataclass(frozen=True)
class BenchHost:
    lab_dir: Path
    name: str
    api: str
    libvirt_uri: str
    token: str
    ca: Path
    home_dir: Path

    def run(self, *argv: str, timeout: float = 600) -> str:
        command, environment = host_command(load(self.lab_dir), self.name, list(argv))
        result = subprocess.run(command, env=environment, capture_output=True, text=True,
                                timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: {argv}: {result.returncode}: {result.stderr}")
        return result.stdout

    def cli(self, *args: str, timeout: float = 600) -> str:
        return self.run(sys.executable, "-m", "blockplane", *args, timeout=timeout)

    def virsh(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(["virsh", "-c", self.libvirt_uri, *args], capture_output=True,
                                text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: virsh {args}: {result.stderr}")
        return result.stdout

    def api_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, verify=str(self.ca), timeout=600,
                            headers={"Authorization": f"Bearer {self.token}"})

    def request(self, method: str, path: str, body: Any = None) -> Any:
        with self.api_client() as client:
            answer = client.request(method, path, json=body)
        if answer.status_code >= 400:
            raise RuntimeError(f"{self.name}: {method} {path}: {answer.text}")
        return answer.json()

    def qmp(self, vm: str, command: dict[str, Any]) -> Any:
        return json.loads(self.virsh("qemu-monitor-command", vm, json.dumps(command)))

    def qemu_io(self, vm: str, device: str, command: str) -> None:
        """QEMU writes into ``device`` of the running VM (a guest's view of its disk)."""
        for line in (command, "flush"):
            self.qmp(vm, {"execute": "human-monitor-command", "arguments": {
                "command-line": f'qemu-io -d {device} "{line}"'}})


@contextmanager
def two_hosts() -> Iterator[tuple[BenchHost, BenchHost]]:
    root = Path(tempfile.mkdtemp(prefix="bp-blab-", dir="/tmp"))
    root.rmdir()
    up = subprocess.run([*LAB, "up", "--dir", str(root), "--base-address", "auto"],
                        capture_output=True, text=True, timeout=600, check=False)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"lab up: {up.stderr}")
        view = json.loads(up.stdout)
        hosts = tuple(
            BenchHost(root, host["name"], host["api"], host["libvirt_uri"],
                      Path(host["token_file"]).read_text().strip(), Path(view["ca"]),
                      Path(host["home_dir"]))
            for host in view["hosts"]
        )
        yield hosts[0], hosts[1]
    finally:
        subprocess.run([*LAB, "down", "--dir", str(root)], capture_output=True, timeout=600,
                       check=False)
        shutil.rmtree(root, ignore_errors=True)


def wait(check: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)
