"""Helpers for tests of rbd pools: a RADOS pool and cephx user per module, the blockplane pool
made from them, and looks at the cluster as its admin sees it.

Use with the session's ``ceph_cluster`` (``tests.ceph_support``): each module gets its own
RADOS pool (``module_rados_pool``), so image names never meet across modules.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blockplane.lab.ceph import CephCluster, CephLabError, CephUser
from tests.ceph_support import rbd_user
from tests.harness import AgentUnderTest


@dataclass(frozen=True)
class RadosPool:
    cluster: CephCluster
    name: str
    user: CephUser

    def images(self) -> list[str]:
        listed: list[dict[str, Any]] = json.loads(
            self.cluster.run("rbd", "ls", "-l", "--format", "json", "--pool", self.name))
        return sorted({entry["image"] for entry in listed if "snapshot" not in entry})

    def snapshots(self, image: str) -> list[str]:
        listed = json.loads(self.cluster.run("rbd", "snap", "ls", "--format", "json",
                                             f"{self.name}/{image}"))
        return [str(entry["name"]) for entry in listed]

    def export(self, image: str, destination: Path) -> Path:
        self.cluster.run("rbd", "export", "--no-progress", f"{self.name}/{image}",
                         str(destination), timeout_s=300)
        return destination


def new_rados_pool(cluster: CephCluster, prefix: str = "bp") -> RadosPool:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    cluster.create_pool(name)
    user = rbd_user(cluster, f"u{name}", pools=(name,))
    return RadosPool(cluster, name, user)


@pytest.fixture(scope="module")
def module_rados_pool(ceph_cluster: CephCluster) -> Iterator[RadosPool]:
    pool = new_rados_pool(ceph_cluster)
    try:
        yield pool
    finally:
        # Images a failed test left (one a VM still holds open is left to the agent's cleanup,
        # which deletes its VMs); the pool itself stays (deleting pools needs a mon flag).
        for image in pool.images():
            with contextlib.suppress(CephLabError):
                ceph_cluster.run("rbd", "snap", "purge", "--no-progress", f"{pool.name}/{image}")
                ceph_cluster.run("rbd", "rm", "--no-progress", f"{pool.name}/{image}")


def create_rbd_pool(agent: AgentUnderTest, name: str, pool: RadosPool,
                    *extra: str) -> dict[str, Any]:
    created: dict[str, Any] = agent.json(
        "pool", "create", name, "--type", "rbd", "--ceph-conf", str(pool.cluster.conf),
        "--rbd-pool", pool.name, "--ceph-user", pool.user.name, *extra)
    return created


def agent_log(agent: AgentUnderTest) -> str:
    """Everything the agent wrote: its log and its event log as the API serves it."""
    logs = [path.read_text(errors="replace") for path in agent.home.glob("*.log")]
    events = agent.ok("events")
    return "\n".join([*logs, events])
