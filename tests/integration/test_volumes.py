"""``volume list|delete`` on real pools: a volume in use (a disk, a backing chain, a job) is
refused with ``volume.in_use`` and kept; the point-in-time copy an abort after READY leaves is
deleted, with its file (dir) or backing file and loop device (loop), its record and its share of
the pool's use; names that are not plain volume names, or that resolve outside the pool, are
refused before anything is touched.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.chain_helpers import chain_paths, wait_phase
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration

VM = "vv"


def volumes(agent: AgentUnderTest, pool: str) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in agent.json("volume", "list", pool)}


def used_bytes(agent: AgentUnderTest, pool: str) -> int:
    return int(agent.json("pool", "show", pool)["used_bytes"])


def point_in_time_copy(agent: AgentUnderTest, target: str, pool: str) -> dict[str, Any]:
    """Copy ``target`` into ``pool``, wait for READY, abort: the copy stays, out of any chain."""
    job = agent.json("copy", VM, target, "--pool", pool)
    wait_phase(agent, job["id"], ("ready",))
    agent.json("job", "abort", job["id"])
    ended = wait_phase(agent, job["id"], ("aborted", "failed", "done"))
    assert ended["phase"] == "aborted" and ended["point_in_time_copy"] is True
    destination: dict[str, Any] = ended["spec"]["destination"]
    return destination


def refused_in_use(agent: AgentUnderTest, pool: str, name: str, user: str) -> None:
    result = agent.cli("volume", "delete", pool, name)
    assert result.returncode == 2 and "in use" in result.stderr and user in result.stderr
    with agent.http() as http:
        response = http.delete(f"/v1/pools/{pool}/volumes/{name}")
        assert response.status_code == 409
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "volume.in_use"
    assert name in volumes(agent, pool)


@pytest.fixture(scope="module")
def pools(agent: AgentUnderTest) -> dict[str, str]:
    agent.ok("pool", "create", "vf", "--type", "dir")
    agent.ok("pool", "create", "vl", "--type", "loop", "--chunk", "16M")
    agent.json("vm", "create", VM, "--vcpus", "1", "--memory", "256M")
    agent.json("disk", "attach", VM, "--pool", "vf", "--size", "32M")
    agent.json("disk", "attach", VM, "--pool", "vl", "--size", "32M", "--thin")
    agent.ok("vm", "start", VM)
    return {p["name"]: p["path"] for p in agent.json("pool", "list")}


def test_disks_and_chains_keep_their_volumes(agent: AgentUnderTest,
                                             pools: dict[str, str]) -> None:
    listed = volumes(agent, "vf")
    assert set(listed) == {f"{VM}-vda"}
    vda = listed[f"{VM}-vda"]
    assert vda["in_use"] and f"disk {VM}/vda" in vda["used_by"]
    assert vda["format"] == "qcow2" and vda["virtual_bytes"] == 32 << 20
    refused_in_use(agent, "vf", f"{VM}-vda", f"disk {VM}/vda")

    agent.json("snapshot", "create", VM, "--name", "s1", "--disk", "vdb")
    thin = volumes(agent, "vl")
    assert set(thin) == {f"{VM}-vdb", f"{VM}-vdb-s1"} and all(v["thin"] for v in thin.values())
    # The old top is no disk's volume any more, but still the overlay's backing image.
    assert thin[f"{VM}-vdb"]["used_by"] == [f"the backing chain of {VM}/vdb",
                                            f"the backing chain of VM {VM}"]
    refused_in_use(agent, "vl", f"{VM}-vdb", "backing chain")
    refused_in_use(agent, "vl", f"{VM}-vdb-s1", f"disk {VM}/vdb")
    assert len(chain_paths(agent, VM, "vdb")) == 2
    human = agent.ok("volume", "list", "vl")
    assert f"{VM}-vdb-s1" in human


def test_a_jobs_destination_is_kept_until_the_job_ends(agent: AgentUnderTest,
                                                       pools: dict[str, str]) -> None:
    job = agent.json("copy", VM, "vda", "--pool", "vf", "--bandwidth", "1M")
    try:
        name = job["spec"]["destination"]["volume"]
        assert f"copy job {job['id']} of {VM}" in volumes(agent, "vf")[name]["used_by"]
        refused_in_use(agent, "vf", name, f"copy job {job['id']}")
    finally:
        agent.json("job", "abort", job["id"])
    ended = wait_phase(agent, job["id"], ("aborted", "failed", "done"))
    if ended["point_in_time_copy"]:  # READY came before the abort: the copy is now free
        assert volumes(agent, "vf")[name]["used_by"] == []
        agent.ok("volume", "delete", "vf", name)
    assert name not in volumes(agent, "vf")


def test_delete_a_point_in_time_copy_on_a_dir_pool(agent: AgentUnderTest,
                                                   pools: dict[str, str]) -> None:
    used_before = used_bytes(agent, "vf")
    copy = point_in_time_copy(agent, "vda", "vf")
    assert os.path.isfile(copy["path"]) and used_bytes(agent, "vf") > used_before
    listed = volumes(agent, "vf")[copy["volume"]]
    assert listed["in_use"] is False and listed["used_by"] == []

    deleted = agent.json("volume", "delete", "vf", copy["volume"])
    assert deleted["deleted"] and deleted["path"] == copy["path"]
    assert not os.path.exists(copy["path"])
    assert copy["volume"] not in volumes(agent, "vf")
    assert used_bytes(agent, "vf") == used_before
    again = agent.cli("volume", "delete", "vf", copy["volume"])
    assert again.returncode == 2 and "no volume" in again.stderr


def test_delete_a_point_in_time_copy_on_a_loop_pool(agent: AgentUnderTest,
                                                    pools: dict[str, str]) -> None:
    used_before = used_bytes(agent, "vl")
    copy = point_in_time_copy(agent, "vdb", "vl")
    backing = os.path.join(pools["vl"], f"{copy['volume']}.img")
    assert copy["path"].startswith("/dev/loop") and os.path.isfile(backing)
    with agent.http() as http:
        listed = http.get("/v1/pools/vl/volumes")
        assert listed.status_code == 200
        assert {v["name"] for v in listed.json()} >= {copy["volume"]}
        response = http.delete(f"/v1/pools/vl/volumes/{copy['volume']}")
        assert response.status_code == 200 and response.json()["freed_bytes"] > 0
    assert not os.path.exists(backing)
    attached = subprocess.run(["losetup", "--noheadings", "--associated", backing],
                              capture_output=True, text=True, check=False).stdout
    assert attached.strip() == ""
    assert copy["volume"] not in volumes(agent, "vl")
    assert used_bytes(agent, "vl") == used_before


def test_names_outside_the_pool_are_refused(agent: AgentUnderTest,
                                            pools: dict[str, str]) -> None:
    outside = os.path.join(os.path.dirname(pools["vf"]), "outside-target")
    with open(outside, "w") as handle:
        handle.write("keep me")
    os.symlink(outside, os.path.join(pools["vf"], "planted"))
    try:
        for name in ("planted", "..", "../vl", ".hidden", "a/b"):
            result = agent.cli("volume", "delete", "vf", name)
            assert result.returncode == 2, (name, result.stderr)
        with agent.http() as http:
            escape = http.delete("/v1/pools/vf/volumes/planted")
            assert escape.status_code == 400 and escape.json()["code"] == "path.escape"
            unknown = http.delete("/v1/pools/vf/volumes/no-such-volume")
            assert unknown.status_code == 404 and unknown.json()["code"] == "volume.not_found"
            pool = http.get("/v1/pools/no-such-pool/volumes")
            assert pool.status_code == 404 and pool.json()["code"] == "pool.not_found"
        with open(outside) as handle:
            assert handle.read() == "keep me"
        assert agent.cli("volume", "list", "no-such-pool").returncode == 2
    finally:
        os.unlink(os.path.join(pools["vf"], "planted"))
        os.unlink(outside)
