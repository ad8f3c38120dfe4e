"""Shared checks for the fault cases: restart with failpoints, and "is everything consistent?".

Consistent means what a user (or the next agent) relies on after a fault:
- no intent is left pending in the store;
- the store's disks of a VM are exactly the blockplane disks in libvirt's live XML (the
  persistent XML when the VM is not running), each on its recorded volume;
- every pool holds exactly the volumes the store records (nothing leaked, nothing lost): its
  files for dir and loop pools, its RBD images (listed as the pool's own cephx user) for rbd
  pools;
- every recorded qcow2 image passes ``qemu-img check`` (an rbd image is raw: nothing to check);
- every RBD snapshot of a recorded rbd image is a snapshot or backup blockplane finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from tests.harness import AgentUnderTest


def store_rows(agent: AgentUnderTest, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    uri = f"file:{agent.home / 'state.db'}?mode=ro"
    # closing(): sqlite3's own context manager ends the transaction, not the connection.
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        return list(connection.execute(sql, parameters).fetchall())


def api_get(agent: AgentUnderTest, path: str, **params: Any) -> Any:
    """A read through the API on the socket: what ``--json`` prints, without a CLI start-up
    (about half a second each on a loaded host), for the reads that poll."""
    with agent.http() as client:
        response = client.get(f"/v1{path}", params=params)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def events_of(agent: AgentUnderTest, kind: str, vm: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"type": kind, "limit": 10000}
    if vm is not None:
        params["vm"] = vm
    found: list[dict[str, Any]] = api_get(agent, "/events", **params)
    return found


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def failpoint_env(agent: AgentUnderTest, failpoints: str) -> dict[str, str]:
    return {**agent.env, "BLOCKPLANE_FAILPOINTS": failpoints}


def restart_with_failpoints(agent: AgentUnderTest, failpoints: str) -> dict[str, str]:
    """Restart the agent with ``failpoints`` armed; returns the environment it runs with."""
    agent.ok("agent", "stop")
    env = failpoint_env(agent, failpoints)
    subprocess.run([*agent.command, "agent", "start"], env=env, check=True, capture_output=True)
    return env


def agent_dead(agent: AgentUnderTest) -> bool:
    try:
        pid = agent.pid()
    except (FileNotFoundError, ValueError):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of ours still answers kill(0): look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


def run_until_killed(agent: AgentUnderTest, env: dict[str, str], *args: str) -> None:
    """Run one CLI request that reaches a kill failpoint; the agent must be gone after it."""
    died = subprocess.run(
        [*agent.command, "--no-autostart", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert died.returncode in (1, 3), (died.returncode, died.stdout, died.stderr)
    wait_for(lambda: agent_dead(agent), "the agent to die at its failpoint", 10)


def image_check(path: str) -> dict[str, Any]:
    """``qemu-img check`` of a qcow2 (``-U``: QEMU may hold it); asserts it is clean."""
    result = subprocess.run(
        ["qemu-img", "check", "-U", "--output=json", path],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"qemu-img check {path}: {result.stdout} {result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, report
    return report


def blockplane_disks(domain_xml: str) -> dict[str, str]:
    """Target -> source of every disk in ``domain_xml`` (file or block sources; an rbd network
    source as ``rbd:POOL/IMAGE``, the path blockplane records for it)."""
    root = etree.fromstring(domain_xml.encode())
    disks = {}
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or source is None:
            continue
        if source.get("protocol") == "rbd":
            disks[target.get("dev", "")] = f"rbd:{source.get('name', '')}"
            continue
        disks[target.get("dev", "")] = source.get("file") or source.get("dev") or ""
    return disks


def rbd_pool_images(agent: AgentUnderTest, pool: str) -> dict[str, list[str]]:
    """Image -> its RBD snapshots, of the RADOS pool behind rbd pool ``pool``, listed as the
    pool's own user (the access check's probe images left out)."""
    [(conf, user, keyring, ceph_pool)] = store_rows(
        agent, "SELECT conf, user, keyring, ceph_pool FROM rbd_pools WHERE name = ?", pool)
    base = ["rbd", "--conf", conf, "--id", user, "--keyring", keyring]
    listed = subprocess.run([*base, "ls", "-l", "--format", "json", "--pool", ceph_pool],
                            capture_output=True, text=True, check=True, timeout=60)
    images: dict[str, list[str]] = {}
    for entry in json.loads(listed.stdout):
        if entry["image"].startswith("blockplane-access-probe-"):
            continue
        snapshots = images.setdefault(entry["image"], [])
        if "snapshot" in entry:
            snapshots.append(entry["snapshot"])
    return images


def assert_rbd_pool_consistent(agent: AgentUnderTest, pool: str) -> None:
    """The RADOS pool holds exactly the recorded images, and their snapshots are all ones
    blockplane finished: a done snapshot record, or the checkpoint of a backup that is done."""
    images = rbd_pool_images(agent, pool)
    names = {name for (name,) in store_rows(
        agent, "SELECT name FROM volumes WHERE pool = ?", pool)}
    assert set(images) == names, f"rbd pool {pool}: images {set(images)} != records {names}"
    finished = {name for (name,) in store_rows(
        agent, "SELECT name FROM chain_snapshots WHERE state = 'done'")}
    for (spec,) in store_rows(agent, "SELECT spec_json FROM chain_jobs WHERE kind = 'backup' "
                              "AND phase = 'done'"):
        finished.add(json.loads(spec).get("checkpoint"))
    for image, snapshots in images.items():
        assert set(snapshots) <= finished, f"{pool}/{image}: stray snapshots {snapshots}"


def assert_consistent(agent: AgentUnderTest, vm: str) -> dict[str, Any]:
    """Store, libvirt and pools agree for ``vm`` and every pool; images check clean."""
    assert store_rows(agent, "SELECT kind, vm, target FROM pending_ops") == []
    shown = api_get(agent, f"/vms/{vm}")
    with agent.http() as client:
        xml = client.get(f"/v1/vms/{vm}/xml").text  # what `vm show --xml` prints
    live = blockplane_disks(xml)
    recorded = {
        target: (pool, volume, path)
        for target, pool, volume, path in store_rows(
            agent,
            "SELECT d.target, d.pool, d.volume, v.path FROM disks d "
            "JOIN volumes v ON v.pool = d.pool AND v.name = d.volume WHERE d.vm = ?",
            vm,
        )
    }
    assert set(store_rows(agent, "SELECT target FROM disks WHERE vm = ?", vm)) == {
        (target,) for target in recorded
    }, "a disk record without its volume record"
    pool_paths = [path + ("/" if path.startswith("rbd:") else "")
                  for (path,) in store_rows(agent, "SELECT path FROM pools")]
    managed = {
        target
        for target, source in live.items()
        if source.startswith("/dev/loop") or any(source.startswith(p) for p in pool_paths)
    }
    assert managed == set(recorded), (live, recorded)
    for target, (_pool, _volume, path) in recorded.items():
        assert live[target] == path, (target, live[target], path)
    for pool, pool_type, pool_path in store_rows(agent, "SELECT name, type, path FROM pools"):
        names = {name for (name,) in store_rows(
            agent, "SELECT name FROM volumes WHERE pool = ?", pool)}
        if pool_type in ("loop", "dir"):
            files = {entry.stem for entry in Path(pool_path).iterdir() if entry.is_file()}
            assert files == names, f"pool {pool}: files {files} != records {names}"
        if pool_type == "rbd":
            assert_rbd_pool_consistent(agent, pool)
    for path, image_format in store_rows(agent, "SELECT path, format FROM volumes"):
        if image_format == "qcow2":
            image_check(path)
    return {"state": shown["state"], "disks": recorded}
