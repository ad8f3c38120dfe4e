"""Helpers for the migration tests in the lab: the pools both hosts need, a VM with a thin
throttled disk and a mapped disk, migrating (CLI as a user would), and the check that after a
migration (or a fault) the VM runs on exactly one host, whose store, live XML and IOThread plan
agree and whose thin volumes are armed, while the other host has nothing of it left.

A host's store is read from its ``state.db`` (read-only) and its pool files from its own
directories, both as seen from the test's namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from tests.lab_support import Lab, LabHost, lab_command

FAST = "fast"  # a loop pool of the same name on every host, different files on each
SHARED = "shared"  # a dir pool both hosts see at the same path, on the same files
MIB = 1 << 20


def rows(host: LabHost, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    uri = f"file:{host.home_dir / 'state.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as connection:
        return list(connection.execute(sql, parameters).fetchall())


def ensure_pools(lab: Lab) -> None:
    """The pools every migration test uses, made once per lab (idempotent)."""
    for host in lab.hosts[:2]:
        names = {pool["name"] for pool in host.json("pool", "list")}
        if FAST not in names:
            host.ok("pool", "create", FAST, "--type", "loop", "--chunk", "64M")
        if SHARED not in names:
            host.ok("pool", "create", SHARED, "--type", "dir", "--path",
                    str(lab.shared / "pool"))


def qmp(host: LabHost, vm: str, command: dict[str, Any]) -> Any:
    return json.loads(host.virsh_ok("qemu-monitor-command", vm, json.dumps(command)))


def qemu_io(host: LabHost, vm: str, target: str, *commands: str) -> None:
    """QEMU writes into the running VM's disk itself (as its guest would), then flushes."""
    device = f"/machine/peripheral/ua-bp-{target}/virtio-backend"
    for command in (*commands, "flush"):
        answer = qmp(host, vm, {"execute": "human-monitor-command", "arguments": {
            "command-line": f'qemu-io -d {device} "{command}"'}})
        assert "error" not in json.dumps(answer).lower(), answer


class Reference:
    """A sparse raw file holding what a disk must read back."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        with path.open("wb") as handle:
            handle.truncate(size)

    def write(self, offset: int, length: int, pattern: int) -> None:
        self.write_bytes(offset, bytes([pattern]) * length)

    def write_bytes(self, offset: int, data: bytes) -> None:
        with self.path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(data)


def api(host: LabHost, method: str, path: str, body: Any = None) -> Any:
    """One request to ``host``'s agent over TLS (what the CLI sends, without its start-up)."""
    with host.http() as client:
        answer = client.request(method, f"/v1{path}", json=body)
    assert answer.status_code < 400, f"{host.name} {method} {path}: {answer.text}"
    return answer.json()


def make_vm(host: LabHost, name: str, *, thin_mib: int = 256, data_mib: int = 8,
            reference: Path | None = None, throttled: bool = True) -> Reference | None:
    """A no-OS VM with ``vda`` (thin, under a 2-filter throttle chain, so on one IOThread) and
    ``vdb`` (2 queues mapped over 2 IOThreads, unthrottled); ``data_mib`` written into vda."""
    api(host, "POST", "/vms", {"name": name, "vcpus": 2, "memory": "128M", "start": True})
    vda: dict[str, Any] = {"pool": FAST, "size": f"{thin_mib}M", "thin": True, "queues": 2}
    if throttled:
        for group, iops in (("tier1", 20000), ("tier2", 10000)):
            api(host, "PUT", f"/vms/{name}/throttle-groups/{group}",
                {"limits": {"total_iops_sec": iops}})
        vda["throttle_groups"] = ["tier1", "tier2"]
    api(host, "POST", f"/vms/{name}/disks", vda)
    api(host, "POST", f"/vms/{name}/disks",
        {"pool": FAST, "size": "64M", "queues": 2, "io_threads": 2})
    if not data_mib:
        return None
    qemu_io(host, name, "vda", f"write -P 0x5a 1M {data_mib}M")
    if reference is None:
        return None
    ref = Reference(reference, thin_mib * MIB)
    ref.write(MIB, data_mib * MIB, 0x5A)
    return ref


def migrate(host: LabHost, vm: str, to: str, *args: str, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    """``vm migrate --wait``; never starting an agent of its own if the host's died (one
    without the lab's TLS listener would take the host's place)."""
    return host.cli("--no-autostart", "vm", "migrate", vm, "--to", to, "--wait", "--json",
                    *args, timeout=timeout)


def migrated(host: LabHost, vm: str, to: str, *args: str) -> dict[str, Any]:
    """Migrate and return the job as it ended; it must be done."""
    result = migrate(host, vm, to, *args)
    assert result.returncode == 0, f"{result.returncode}: {result.stderr}\n{result.stdout}"
    job: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert job["phase"] == "done", job
    return job


def waited(host: LabHost, *args: str, timeout: float = 300) -> dict[str, Any]:
    """A command run with ``--wait --json``: the job as it ended (its last JSON line)."""
    output = host.ok(*args, "--wait", "--json", timeout=timeout)
    job: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return job


def job_of(host: LabHost, job_id: str) -> dict[str, Any]:
    with host.http() as client:
        answer = client.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def jobs_of(host: LabHost, vm: str) -> list[dict[str, Any]]:
    with host.http() as client:
        answer = client.get("/v1/jobs", params={"vm": vm})
    assert answer.status_code == 200, answer.text
    return [job for job in answer.json() if job["kind"] == "migrate"]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def wait_ended(host: LabHost, job_id: str, timeout: float = 180) -> dict[str, Any]:
    ended: dict[str, Any] = {}

    def over() -> bool:
        try:
            ended.update(job_of(host, job_id))
        except Exception:  # the agent is starting again
            return False
        return ended["phase"] in ("done", "failed", "aborted")

    wait_for(over, f"migration {job_id} to end", timeout)
    return ended


def running_vms(host: LabHost) -> set[str]:
    return set(host.virsh_ok("list", "--name").split())


def defined_vms(host: LabHost) -> set[str]:
    return set(host.virsh_ok("list", "--all", "--name").split())


def pool_files(lab: Lab, host: LabHost, pool: str) -> set[str]:
    """The volume files in ``pool`` on ``host`` (a loop pool's backing files by volume name)."""
    found = rows(host, "SELECT type, path FROM pools WHERE name = ?", pool)
    if not found:
        return set()
    pool_type, path = found[0]
    root = (lab.shared_dir / Path(path).relative_to(lab.shared) if Path(path).is_relative_to(
        lab.shared) else host.home_dir / Path(path).relative_to("/var/lib/blockplane"))
    suffix = ".img" if pool_type == "loop" else ""
    return {entry.name.removesuffix(suffix) for entry in root.iterdir()
            if entry.is_file() and not entry.name.startswith(".")}


def live_disks(xml: str) -> dict[str, tuple[str, list[list[Any]]]]:
    """Target -> (source, IOThread mapping) in a live domain XML."""
    disks: dict[str, tuple[str, list[list[Any]]]] = {}
    root = etree.fromstring(xml.encode())
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        if target is None or source is None or driver is None:
            continue
        mapping = [[int(node.get("id", "0")), [int(q.get("id", "0")) for q in node]]
                   for node in driver.iterfind("iothreads/iothread")]
        if not mapping and driver.get("iothread"):
            queues = int(driver.get("queues") or 1)
            mapping = [[int(driver.get("iothread", "0")), list(range(queues))]]
        where = source.get("dev") or source.get("file") or ""
        if source.get("protocol") == "rbd":
            where = f"rbd:{source.get('name')}"  # the path blockplane records for an image
        disks[target.get("dev", "")] = (where, mapping)
    return disks


def assert_holds(lab: Lab, host: LabHost, vm: str) -> dict[str, Any]:
    """``vm`` runs on ``host``: live XML = store = plan; thin armed; pools = records; images
    check clean; no intent or live migration left."""
    assert vm in running_vms(host), f"{vm} does not run on {host.name}"
    assert rows(host, "SELECT kind FROM pending_ops") == []
    assert rows(host, "SELECT id, role, phase FROM migrations WHERE phase NOT IN "
                "('done', 'failed', 'aborted', 'rolled_back')") == []
    assert rows(host, "SELECT name FROM vms WHERE name = ?", vm) == [(vm,)]
    live = live_disks(host.virsh_ok("dumpxml", vm))
    stored = {target: (path, json.loads(plan)["mapping"]) for target, path, plan in rows(
        host, "SELECT d.target, v.path, d.plan_json FROM disks d JOIN volumes v "
        "ON v.pool = d.pool AND v.name = d.volume WHERE d.vm = ?", vm)}
    assert stored == live, f"{host.name}: store {stored} != live {live}"
    report = api(host, "GET", f"/vms/{vm}/iothreads")
    assert report["disagreements"] == [], report["disagreements"]
    thin = [row for row in api(host, "GET", f"/thin?vm={vm}")]
    assert thin, "no thin volume monitored"
    rbd = {name for (name,) in rows(host, "SELECT name FROM pools WHERE type = 'rbd'")}
    for row in thin:
        if row["pool"] in rbd:  # an image: listed, with why nothing monitors it
            assert row["state"] == "not_monitored" and row["reason"], row
            continue
        assert row["state"] == "set" and row["threshold"] == row["armed_threshold"], row
    for pool in (FAST, SHARED):
        if pool in rbd:
            continue
        recorded = {name for (name,) in rows(host, "SELECT name FROM volumes WHERE pool = ?",
                                            pool)}
        if pool == FAST:
            assert pool_files(lab, host, pool) == recorded, (host.name, pool)
        else:
            assert recorded <= pool_files(lab, host, pool), (host.name, pool)
    for path, image_format in rows(host, "SELECT path, format FROM volumes"):
        if image_format == "qcow2":
            check = subprocess.run(["qemu-img", "check", "-U", str(_outside(lab, host, path))],
                                   capture_output=True, text=True, check=False)
            assert check.returncode == 0, (path, check.stdout, check.stderr)
    return {"live": live, "thin": thin}


def assert_gone(lab: Lab, host: LabHost, vm: str, volumes: set[str]) -> None:
    """``host`` has nothing of ``vm`` left: no domain, records, volumes or intents."""
    assert vm not in defined_vms(host), f"{vm} is still defined on {host.name}"
    assert rows(host, "SELECT name FROM vms WHERE name = ?", vm) == []
    assert rows(host, "SELECT target FROM disks WHERE vm = ?", vm) == []
    assert rows(host, "SELECT kind FROM pending_ops") == []
    assert rows(host, "SELECT id, role, phase FROM migrations WHERE phase NOT IN "
                "('done', 'failed', 'aborted', 'rolled_back')") == []
    left = {name for (name,) in rows(host, "SELECT name FROM volumes WHERE pool = ?", FAST)}
    assert not (left & volumes), f"{host.name} kept {left & volumes}"
    assert pool_files(lab, host, FAST) == left, f"{host.name}: pool files != records"


def _outside(lab: Lab, host: LabHost, path: str) -> Path:
    """A host path as the test sees it (loop devices are the machine's own)."""
    inside = Path(path)
    if inside.is_relative_to(lab.shared):
        return lab.shared_dir / inside.relative_to(lab.shared)
    if inside.is_relative_to("/var/lib/blockplane"):
        return host.home_dir / inside.relative_to("/var/lib/blockplane")
    return inside


def disk_path(lab: Lab, host: LabHost, vm: str, target: str) -> Path:
    (path,) = rows(host, "SELECT v.path FROM disks d JOIN volumes v ON v.pool = d.pool AND "
                   "v.name = d.volume WHERE d.vm = ? AND d.target = ?", vm, target)[0]
    return _outside(lab, host, path)


def same_content(reference: Path, image: Path) -> bool:
    result = subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2",
                             str(reference), str(image)], capture_output=True, text=True,
                            check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


#: The hosts whose agent runs with failpoints armed (see ``restart_agent``).
ARMED: set[str] = set()


def restart_agent(lab: Lab, host: LabHost, failpoints: str | None = None) -> None:
    """Start ``host``'s agent again (stopping it first if it runs), with ``failpoints``."""
    env = {key: value for key, value in os.environ.items() if key != "BLOCKPLANE_FAILPOINTS"}
    if failpoints:
        env["BLOCKPLANE_FAILPOINTS"] = failpoints
    result = lab_command("restart", "--dir", str(lab.dir), host.name, "agent", env=env)
    assert result.returncode == 0, result.stderr
    if failpoints:
        ARMED.add(host.name)
    else:
        ARMED.discard(host.name)


def agents_as_they_were(lab: Lab) -> None:
    """Every host's agent up and without failpoints (restarting only those that need it)."""
    for host in lab.hosts:
        if host.name in ARMED or not agent_alive(lab, host):
            restart_agent(lab, host)


def agent_pid(lab: Lab, host: LabHost) -> int:
    return int(json.loads(lab_command("show", "--dir", str(lab.dir)).stdout)["hosts"][
        int(host.name.removeprefix("host")) - 1]["agent_pid"])


def agent_alive(lab: Lab, host: LabHost) -> bool:
    try:
        with host.http() as client:
            return client.get("/v1/health", timeout=2).status_code == 200
    except Exception:
        return False


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def destroy_everywhere(lab: Lab, vm: str) -> None:
    """Best-effort cleanup of a test VM on every host (records through the agent)."""
    for host in lab.hosts:
        with host.http() as client:
            if vm in running_vms(host):
                client.post(f"/v1/vms/{vm}/destroy")
            if rows(host, "SELECT name FROM vms WHERE name = ?", vm):
                client.delete(f"/v1/vms/{vm}")
            elif vm in defined_vms(host):
                host.virsh("undefine", vm)
