"""Shared helpers for the benchmarks: a throwaway agent and a Linux guest to measure in."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from blockplane.cli.client import AgentClient, api_path, start_agent, stop_agent
from blockplane.config import load_settings

OUT = Path(__file__).parent / "out"


@contextmanager
def bench_agent() -> Iterator[AgentClient]:
    home = Path(tempfile.mkdtemp(prefix="bp-bench-", dir="/tmp"))
    settings = load_settings(home=home)
    start_agent(settings)
    client = AgentClient(settings, autostart=False)
    try:
        yield client
    except BaseException:
        keep_logs(home, settings.paths.libvirt_root)
        raise
    finally:
        for vm in client.request("GET", "/v1/vms"):
            if vm["state"] not in ("shutoff", "crashed"):
                client.request("POST", api_path("vms", vm["name"], "destroy"))
            client.request("DELETE", api_path("vms", vm["name"]))
        for pool in client.request("GET", "/v1/pools"):
            client.request("DELETE", api_path("pools", pool["name"]))
        stop_agent(settings)
        shutil.rmtree(home, ignore_errors=True)


def keep_logs(home: Path, libvirt_root: Path) -> None:
    """A failed run's agent log and QEMU logs, kept under bench/out before the home goes."""
    kept = OUT / f"failed-{home.name}"
    kept.mkdir(parents=True, exist_ok=True)
    for log in [home / "agent.log", *(libvirt_root / "log" / "qemu").glob("*.log")]:
        if log.is_file():
            shutil.copy(log, kept / log.name)
    print(f"logs of the failed run: {kept}")


def guest_run(client: AgentClient, vm: str, script: str, timeout: float = 600) -> str:
    result = client.request(
        "POST",
        api_path("vms", vm, "exec"),
        {"argv": ["/bin/sh", "-c", script], "timeout": timeout},
    )
    output = base64.b64decode(result["stdout_base64"]).decode(errors="replace")
    if result["exit_code"] != 0:
        error = base64.b64decode(result["stderr_base64"]).decode(errors="replace")
        raise RuntimeError(f"guest command failed ({result['exit_code']}): {error}")
    return output


def fio_json(client: AgentClient, vm: str, arguments: str, timeout: float = 600) -> Any:
    return json.loads(guest_run(client, vm, f"fio --output-format=json {arguments}", timeout))


def save(name: str, data: Any) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path


def tmpfs_dir(prefix: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    path = base / f"{prefix}-{os.getpid()}"
    path.mkdir(mode=0o711, exist_ok=True)
    return path


def wait_for_block_device(client: AgentClient, vm: str, target: str) -> None:
    guest_run(
        client,
        vm,
        f"i=0; while [ ! -b /dev/{target} ] && [ $i -lt 100 ]; do "
        "sleep 0.2; i=$((i+1)); done; test -b /dev/" + target,
    )


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


def run_quiet(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def force_cleanup(home: Path, pool_dir: Path) -> list[str]:
    """After a teardown that failed: stop the QEMU processes of VMs under ``home`` (by PID) and
    detach the loop devices backed by files in ``pool_dir``; returns what was done."""
    done = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in command and str(home).encode() in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                done.append(f"killed QEMU {entry.name}")
    listing = subprocess.run(["losetup", "-a", "-n", "-O", "NAME,BACK-FILE"],
                             capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        device, _, backing = line.strip().partition(" ")
        if backing.strip().startswith(f"{pool_dir}/"):
            subprocess.run(["losetup", "-d", device], check=False)
            done.append(f"detached {device}")
    return done
