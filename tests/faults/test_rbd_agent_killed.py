"""The agent SIGKILLed half-way through an attach onto an rbd pool, an RBD snapshot of two
disks, and a copy into rbd; then started again.

Whatever step it died at, the restarted agent completes or undoes the change, and the usual
consistency check holds with the pool's RBD images in place of pool files: no pending intent,
the store agrees with the live XML, the RADOS pool holds exactly the recorded images (nothing
leaked, nothing lost), and every RBD snapshot left belongs to a finished snapshot or backup.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.ceph_support import ceph_cluster, requires_ceph
from tests.chain_helpers import wait_phase
from tests.faults.consistency import (
    api_get,
    assert_consistent,
    restart_with_failpoints,
    run_until_killed,
    wait_for,
)
from tests.harness import AgentUnderTest
from tests.rbd_support import RadosPool, create_rbd_pool, module_rados_pool

__all__ = ["ceph_cluster", "module_rados_pool"]

pytestmark = [pytest.mark.faults, requires_ceph]

VM = "rbdfault"


@pytest.fixture(scope="module")
def fault_vm(agent: AgentUnderTest, module_rados_pool: RadosPool) -> str:
    create_rbd_pool(agent, "rp", module_rados_pool)
    agent.ok("pool", "create", "lp", "--type", "dir")
    agent.json("vm", "create", VM, "--vcpus", "2", "--memory", "128M", "--start")
    agent.json("disk", "attach", VM, "--pool", "rp", "--size", "16M")
    return VM


def restart_clean(agent: AgentUnderTest) -> None:
    agent.ok("agent", "start")  # recovery and a reconcile pass run before it serves


@pytest.mark.parametrize(
    "failpoint", ["attach.after_volume", "attach.after_iothreads", "attach.after_device"])
def test_killed_mid_attach_onto_rbd(agent: AgentUnderTest, fault_vm: str,
                                    module_rados_pool: RadosPool, failpoint: str) -> None:
    before = set(module_rados_pool.images())
    env = restart_with_failpoints(agent, failpoint)
    run_until_killed(agent, env, "disk", "attach", VM, "--pool", "rp", "--size", "8M",
                     "--queues", "2", "--io-threads", "2")
    restart_clean(agent)
    state = assert_consistent(agent, VM)
    after = set(module_rados_pool.images())
    made = after - before
    # Completed (the device reached libvirt) or rolled back: never an image without its disk.
    assert len(made) <= 1
    assert made == {volume for _pool, volume, _path in state["disks"].values()} - before


def test_killed_mid_rbd_snapshot_of_two_disks(agent: AgentUnderTest, fault_vm: str,
                                              module_rados_pool: RadosPool) -> None:
    agent.json("disk", "attach", VM, "--pool", "rp", "--size", "8M")
    env = restart_with_failpoints(agent, "snapshot.rbd.after_one")
    run_until_killed(agent, env, "snapshot", "create", VM, "--name", "half")
    restart_clean(agent)
    # The reconcile undid the half-taken snapshot: no record, no RBD snapshot left.
    wait_for(lambda: not [s for s in api_get(agent, f"/vms/{VM}/snapshots")
                          if s["name"] == "half"], "the half snapshot to be undone", 60)
    # The VM was paused for the instant of the snapshots: it runs again.
    wait_for(lambda: api_get(agent, f"/vms/{VM}")["state"] == "running", "the VM to run", 30)
    assert_consistent(agent, VM)
    taken = agent.json("snapshot", "create", VM, "--name", "whole")
    assert taken["state"] == "done" and len(taken["disks"]) >= 2
    assert_consistent(agent, VM)


@pytest.mark.parametrize("failpoint", ["job.copy.after_destination", "job.after_libvirt_start"])
def test_killed_mid_copy_into_rbd(agent: AgentUnderTest, fault_vm: str,
                                  module_rados_pool: RadosPool, failpoint: str) -> None:
    # One context for the disk (the VM's IOThread pool is shared, so --io-threads 1 would not
    # do once a disk asked for two): what a pivot into rbd needs on this QEMU.
    local: dict[str, Any] = agent.json("disk", "attach", VM, "--pool", "lp", "--size", "8M",
                                       "--io-threads", "0")
    env = restart_with_failpoints(agent, failpoint)
    run_until_killed(agent, env, "copy", VM, local["target"], "--pool", "rp", "--pivot")
    restart_clean(agent)
    [job] = [j for j in api_get(agent, "/jobs", vm=VM)
             if j["kind"] == "copy" and j["target"] == local["target"]]
    ended = wait_phase(agent, job["id"], ("done", "failed", "aborted"))
    wait_for(lambda: not [row for row in api_get(agent, "/jobs", vm=VM)
                          if row["phase"] not in ("done", "failed", "aborted")],
             "every job to end", 60)
    state = assert_consistent(agent, VM)
    pool, _volume, path = state["disks"][local["target"]]
    if ended["phase"] == "done":  # the copy ran on in libvirt and pivoted after the restart
        assert pool == "rp" and path.startswith("rbd:")
    else:  # it never reached libvirt: the destination image was discarded
        assert pool == "lp"
