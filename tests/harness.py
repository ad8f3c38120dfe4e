"""Test harness: a real agent on a throwaway BLOCKPLANE_HOME, driven through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

IMAGES = Path(os.environ.get("BLOCKPLANE_IMAGES", "/var/lib/blockplane/images"))
BLOCKPLANE = [sys.executable, "-m", "blockplane"]


@dataclass
class AgentUnderTest:
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "BLOCKPLANE_HOME": str(self.home), "BLOCKPLANE_IMAGES": str(IMAGES)}

    @property
    def command(self) -> list[str]:
        return list(BLOCKPLANE)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BLOCKPLANE, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 300) -> str:
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, f"{args} -> {result.returncode}: {result.stderr}"
        return result.stdout

    def json(self, *args: str, timeout: float = 300) -> Any:
        return json.loads(self.ok(*args, "--json", timeout=timeout))

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def http(self, token: str | None = "valid") -> httpx.Client:
        headers = {}
        if token == "valid":
            headers["Authorization"] = f"Bearer {self.token}"
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        transport = httpx.HTTPTransport(uds=str(self.home / "agent.sock"))
        return httpx.Client(
            transport=transport, base_url="http://blockplane", headers=headers, timeout=120
        )

    def pid(self) -> int:
        return int((self.home / "agent.pid").read_text())

    def qmp(self, vm: str, *commands: dict[str, Any]) -> list[Any]:
        """QEMU's own answers to ``commands`` (QMP), for checking what libvirt applied.

        The agent is stopped meanwhile (only one process may hold an embed root); VMs keep
        running, and the agent is started again afterwards.
        """
        self.ok("agent", "stop")
        try:
            probe = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.qmp_probe",
                    str(self.home / "libvirt"),
                    vm,
                    json.dumps(list(commands)),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=self.env,
            )
        finally:
            self.ok("agent", "start")
        assert probe.returncode == 0, probe.stderr
        replies: list[Any] = [reply["return"] for reply in json.loads(probe.stdout)]
        return replies

    def kill_9(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


def validate_domain_xml(domain_xml: str, what: str) -> str | None:
    """What ``virt-xml-validate`` (libvirt's schema) says against ``domain_xml``; None if valid."""
    with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix="bp-validate-") as document:
        document.write(domain_xml)
        document.flush()
        result = subprocess.run(
            ["virt-xml-validate", document.name, "domain"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode == 0:
        return None
    return f"{what}: {(result.stderr or result.stdout).strip()}"


def invalid_domains(agent: AgentUnderTest) -> list[str]:
    """Every managed VM's current domain XML that libvirt's own schema refuses."""
    problems = []
    with agent.http() as client:
        response = client.get("/v1/vms")
        if response.status_code != 200:
            return [f"GET /v1/vms answered {response.status_code}: {response.text}"]
        for vm in response.json():
            if not vm.get("managed") or vm.get("state") == "undefined":
                continue
            xml = client.get(f"/v1/vms/{quote(vm['name'], safe='')}/xml")
            if xml.status_code != 200:
                continue  # gone meanwhile
            problem = validate_domain_xml(xml.text, f"VM {vm['name']}")
            if problem is not None:
                problems.append(problem)
    return problems


def cleanup_agent(agent: AgentUnderTest) -> None:
    """Stop what the test left, after checking every domain XML it left behind against
    libvirt's schema (``virt-xml-validate``): an invalid one fails the module's teardown."""
    problems: list[str] = []
    if agent.cli("agent", "status").returncode == 0:
        problems = invalid_domains(agent)
        for vm in agent.json("vm", "list"):
            if vm["state"] not in ("shutoff", "crashed"):
                agent.cli("vm", "destroy", vm["name"])
            agent.cli("vm", "delete", vm["name"])
        agent.cli("agent", "stop")
    pools = agent.home / "pools"
    if pools.exists():
        listing = subprocess.run(
            ["losetup", "-a", "-O", "NAME,BACK-FILE", "-n"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for line in listing.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[1].strip().startswith(str(pools)):
                subprocess.run(["losetup", "-d", parts[0]], check=False)
    shutil.rmtree(agent.home, ignore_errors=True)
    assert not problems, "domain XML refused by virt-xml-validate:\n" + "\n".join(problems)


def linux_guest_available() -> bool:
    return (IMAGES / "vmlinuz").exists() and (IMAGES / "initramfs.img").exists()


requires_guest = pytest.mark.skipif(
    not linux_guest_available(),
    reason=f"the Linux test guest is not built in {IMAGES} (run `make setup`)",
)
