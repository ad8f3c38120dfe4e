"""rbd pools on the one-node lab cluster, through the CLI and the API of a real agent.

``pool create --type rbd`` records nothing until the cluster answered and the user wrote to the
pool; a bad ceph.conf, a dead monitor, a wrong key, a user without caps and a missing pool are
refused with their codes. The cephx key goes into a libvirt secret (embedded here; the system
daemon in ``test_rbd_system_daemon``) and never into output, events or logs. Disks on the pool
are raw RBD images attached as network disks, thin by nature (``thin status`` says why), with
I/O limits changed live and the IOThread mapping gated on QEMU's rbd fix. Detach, VM delete and
``volume delete`` remove an image only once nothing references it.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from blockplane.lab.ceph import CephCluster, keyring_text, new_cephx_key
from blockplane.xml.disk import parse_disks
from tests.ceph_support import ceph_cluster, requires_ceph
from tests.conftest import CAPABILITIES
from tests.harness import AgentUnderTest
from tests.rbd_support import (
    RadosPool,
    agent_log,
    create_rbd_pool,
    module_rados_pool,
    new_rados_pool,
)

__all__ = ["ceph_cluster", "module_rados_pool"]

pytestmark = [pytest.mark.integration, requires_ceph]

VM = "rbdvm"
MIB = 1024**2


@pytest.fixture(scope="module")
def pool(agent: AgentUnderTest, module_rados_pool: RadosPool) -> str:
    create_rbd_pool(agent, "ceph", module_rados_pool)
    return "ceph"


@pytest.fixture(scope="module")
def vm(agent: AgentUnderTest, pool: str) -> str:
    agent.json("vm", "create", VM, "--vcpus", "2", "--memory", "128M", "--start")
    return VM


def failure(agent: AgentUnderTest, *args: str) -> tuple[int, str]:
    result = agent.cli(*args)
    return result.returncode, result.stdout + result.stderr


def pool_names(agent: AgentUnderTest) -> set[str]:
    return {pool["name"] for pool in agent.json("pool", "list")}


def secret_files(agent: AgentUnderTest) -> list[Path]:
    return sorted((agent.home / "libvirt" / "etc" / "secrets").glob("*.xml"))


def live_disk(agent: AgentUnderTest, vm: str, target: str, inactive: bool = False) -> Any:
    flags = ["--xml"]
    xml = agent.ok("vm", "show", vm, *flags)
    return next(disk for disk in parse_disks(xml) if disk.target == target)


def stop(agent: AgentUnderTest, vm: str) -> None:
    if agent.json("vm", "show", vm)["state"] == "running":
        agent.ok("vm", "destroy", vm)


# -- refused before anything is recorded ----------------------------------------------------


def test_a_missing_ceph_conf_is_refused_as_bad_input(agent: AgentUnderTest,
                                                    module_rados_pool: RadosPool) -> None:
    code, output = failure(agent, "pool", "create", "x", "--type", "rbd", "--ceph-conf",
                           "/nonexistent/ceph.conf", "--rbd-pool", module_rados_pool.name)
    assert code == 2 and "[ceph.conf_invalid]" in output
    code, output = failure(agent, "pool", "create", "x", "--type", "rbd",
                           "--rbd-pool", module_rados_pool.name)
    assert code == 2 and "--ceph-conf" in output
    assert "x" not in pool_names(agent)


def test_a_cluster_that_does_not_answer_is_unreachable_and_nothing_is_recorded(
    agent: AgentUnderTest, module_rados_pool: RadosPool, tmp_path: Path,
) -> None:
    cluster = module_rados_pool.cluster
    dead = tmp_path / "dead.conf"
    text = cluster.conf.read_text().replace(cluster.mon_host, "[v2:127.0.0.1:9,v1:127.0.0.1:7]")
    dead.write_text(text)
    secrets_before = secret_files(agent)
    code, output = failure(agent, "pool", "create", "x", "--type", "rbd", "--ceph-conf",
                           str(dead), "--rbd-pool", module_rados_pool.name, "--ceph-user",
                           module_rados_pool.user.name)
    assert code == 1 and "[ceph.unreachable]" in output
    assert "x" not in pool_names(agent)
    assert secret_files(agent) == secrets_before


def test_a_wrong_key_and_a_user_without_caps_are_refused_as_auth(
    agent: AgentUnderTest, module_rados_pool: RadosPool, tmp_path: Path,
) -> None:
    cluster = module_rados_pool.cluster
    wrong = tmp_path / "wrong.keyring"
    wrong.write_text(keyring_text(f"client.{module_rados_pool.user.name}", new_cephx_key(), {}))
    code, output = failure(agent, "pool", "create", "x", "--type", "rbd", "--ceph-conf",
                           str(cluster.conf), "--rbd-pool", module_rados_pool.name,
                           "--ceph-user", module_rados_pool.user.name,
                           "--ceph-keyring", str(wrong))
    assert code == 2 and "[ceph.auth]" in output
    # A real user whose caps cover another pool only.
    other = new_rados_pool(cluster, prefix="other")
    code, output = failure(agent, "pool", "create", "x", "--type", "rbd", "--ceph-conf",
                           str(cluster.conf), "--rbd-pool", module_rados_pool.name,
                           "--ceph-user", other.user.name)
    assert code == 2 and "[ceph.auth]" in output
    assert "x" not in pool_names(agent)


def test_a_missing_rados_pool_is_refused(agent: AgentUnderTest,
                                         module_rados_pool: RadosPool) -> None:
    code, output = failure(agent, "pool", "create", "x", "--type", "rbd", "--ceph-conf",
                           str(module_rados_pool.cluster.conf), "--rbd-pool", "nosuchpool",
                           "--ceph-user", "admin")
    assert code == 2 and "[ceph.pool_missing]" in output
    assert "x" not in pool_names(agent)


# -- the pool ----------------------------------------------------------------------------------


def test_the_pool_keeps_its_key_in_a_private_libvirt_secret_and_nowhere_else(
    agent: AgentUnderTest, pool: str, module_rados_pool: RadosPool,
) -> None:
    shown = agent.json("pool", "show", pool)
    rbd = shown["rbd"]
    assert shown["type"] == "rbd" and shown["shared"] is True
    assert rbd["rbd_pool"] == module_rados_pool.name
    assert rbd["ceph_user"] == module_rados_pool.user.name
    assert rbd["monitors"] == [{"host": "127.0.0.1",
                                "port": module_rados_pool.cluster.v2_port}]
    secret = agent.home / "libvirt" / "etc" / "secrets" / f"{rbd['secret_uuid']}.xml"
    document = secret.read_text()
    assert "<usage type='ceph'>" in document and "private='yes'" in document
    key = module_rados_pool.user.key
    stored = (secret.parent / f"{rbd['secret_uuid']}.base64").read_text().strip()
    assert base64.b64decode(stored) == base64.b64decode(key)  # libvirt holds the raw secret
    everything = agent_log(agent) + json.dumps(shown) + agent.ok("pool", "list", "--json")
    everything += (agent.home / "state.db").read_bytes().decode(errors="replace")
    assert key not in everything and stored not in everything


def test_pool_show_reports_the_clusters_usage_and_says_why_there_is_no_capacity(
    agent: AgentUnderTest, pool: str,
) -> None:
    cluster = agent.json("pool", "show", pool)["rbd"]["cluster"]
    # The lab cluster runs no ceph-mgr, so ceph df is empty: usage from rbd du, no capacity.
    assert cluster["usage_source"] == "rbd du"
    assert cluster["max_avail_bytes"] is None and "ceph-mgr" in cluster["capacity_reason"]
    assert isinstance(cluster["provisioned_bytes"], int)


def test_facts_and_metrics_report_the_clusters_health(agent: AgentUnderTest, pool: str) -> None:
    facts = agent.json("facts")
    verdicts = {entry["pool"]: entry for entry in facts["ceph"]["pools"]}
    assert verdicts[pool]["healthy"] in (True, None)  # None: not probed yet
    with agent.http() as http:
        metrics = http.get("/v1/metrics").text
    deadline_pass = 'blockplane_ceph_pool_healthy{pool="ceph"} 1.0' in metrics
    assert deadline_pass or verdicts[pool]["healthy"] is None


def test_the_mapping_gate_falls_back_to_one_iothread_and_says_why(
    agent: AgentUnderTest, vm: str, pool: str,
) -> None:
    capability = agent.json("facts")["capabilities"]["rbd_multi_iothread"]
    assert capability["supported"] is False  # QEMU 10.0.2 here, the fix is in 10.0.7
    assert "89d22536d1a1" in capability["reason"] and "10.0.7" in capability["needs"]
    attached = agent.json("disk", "attach", vm, "--pool", pool, "--size", "32M",
                          "--queues", "2", "--io-threads", "2")
    try:
        assert attached["plan"]["mode"] == "single"
        assert any("rbd multiqueue fix" in note for note in attached["notes"])
        disk = live_disk(agent, vm, attached["target"])
        assert disk.queues == 2 and disk.iothread is not None and disk.queue_mapping == ()
    finally:
        stop(agent, vm)
        agent.json("disk", "detach", vm, attached["target"])
        agent.ok("vm", "start", vm)


def test_attach_makes_a_raw_image_as_a_network_disk_and_detach_removes_it(
    agent: AgentUnderTest, vm: str, pool: str, module_rados_pool: RadosPool,
) -> None:
    attached = agent.json("disk", "attach", vm, "--pool", pool, "--size", "48M")
    target, volume = attached["target"], attached["volume"]
    assert volume == f"{vm}-{target}" and attached["format"] == "raw"
    assert attached["source"] == f"rbd:{module_rados_pool.name}/{volume}"
    assert volume in module_rados_pool.images()
    disk = live_disk(agent, vm, target)
    assert disk.source_kind == "network" and disk.network is not None
    assert disk.network.name == f"{module_rados_pool.name}/{volume}"
    assert disk.network.auth_username == module_rados_pool.user.name
    assert disk.network.secret_uuid == agent.json("pool", "show", pool)["rbd"]["secret_uuid"]
    rows = [row for row in agent.json("thin", "status", vm) if row["disk"] == target]
    assert rows and rows[0]["state"] == "not_monitored" and "thin by nature" in rows[0]["reason"]
    code, output = failure(agent, "pool", "delete", pool)
    assert code == 2 and "[pool.in_use]" in output
    code, output = failure(agent, "volume", "delete", pool, volume)
    assert code == 2 and "[volume.in_use]" in output
    stop(agent, vm)  # a no-OS guest does not release a hot-unplugged disk
    detached = agent.json("disk", "detach", vm, target)
    assert detached["volume_deleted"] == volume
    assert volume not in module_rados_pool.images()
    agent.ok("vm", "start", vm)


def test_an_rbd_disk_survives_a_restart_of_its_vm(agent: AgentUnderTest, vm: str,
                                                  pool: str) -> None:
    attached = agent.json("disk", "attach", vm, "--pool", pool, "--size", "16M")
    stop(agent, vm)
    agent.ok("vm", "start", vm)  # QEMU reads the key from the secret again
    assert live_disk(agent, vm, attached["target"]).network is not None
    stop(agent, vm)
    agent.json("disk", "detach", vm, attached["target"])
    agent.ok("vm", "start", vm)


def test_qcow2_and_thin_are_refused_on_rbd_before_anything_is_made(
    agent: AgentUnderTest, vm: str, pool: str, module_rados_pool: RadosPool,
) -> None:
    before = module_rados_pool.images()
    code, output = failure(agent, "disk", "attach", vm, "--pool", pool, "--size", "8M",
                           "--format", "qcow2")
    assert code == 2 and "[volume.invalid]" in output
    code, output = failure(agent, "disk", "attach", vm, "--pool", pool, "--size", "8M",
                           "--thin")
    assert code == 2 and "thin by nature" in output
    assert module_rados_pool.images() == before


def test_limits_change_live_on_an_rbd_disk(agent: AgentUnderTest, vm: str, pool: str) -> None:
    agent.ok("throttle", "set", vm, "rbdgold", "--total-iops-sec", "800")
    attached = agent.json("disk", "attach", vm, "--pool", pool, "--size", "16M",
                          "--throttle-groups", "rbdgold", "--total-iops-sec", "500")
    target = attached["target"]
    try:
        disk = live_disk(agent, vm, target)
        assert disk.network is not None and "rbdgold" in disk.throttle_groups
        assert len(disk.throttle_groups) == 2  # the VM group and the disk's own
        agent.ok("throttle", "set", vm, "rbdgold", "--total-iops-sec", "300", "--live")
        info = agent.json("throttle", "info", vm, "rbdgold")
        assert info["limits"]["total_iops_sec"] == 300 and info["definition"] == "live"
        assert [disk["target"] for disk in info["disks"]] == [target]
        assert live_disk(agent, vm, target).throttle_groups == disk.throttle_groups
    finally:
        stop(agent, vm)
        agent.json("disk", "detach", vm, target)
        agent.ok("vm", "start", vm)


def test_vm_delete_removes_its_images(agent: AgentUnderTest, pool: str,
                                      module_rados_pool: RadosPool) -> None:
    agent.json("vm", "create", "rbdgone", "--vcpus", "1", "--memory", "128M")
    attached = agent.json("disk", "attach", "rbdgone", "--pool", pool, "--size", "8M")
    assert attached["volume"] in module_rados_pool.images()
    deleted = agent.json("vm", "delete", "rbdgone")
    assert deleted["volumes_deleted"] == [attached["volume"]]
    assert attached["volume"] not in module_rados_pool.images()


def test_deleting_the_pool_removes_its_secret(agent: AgentUnderTest,
                                              ceph_cluster: CephCluster) -> None:
    other = new_rados_pool(ceph_cluster, prefix="del")
    created = create_rbd_pool(agent, "doomed", other)
    secret = agent.home / "libvirt" / "etc" / "secrets" / f"{created['rbd']['secret_uuid']}.xml"
    assert secret.exists()
    agent.json("pool", "delete", "doomed")
    assert not secret.exists()
    assert "doomed" not in pool_names(agent)


def test_the_same_cluster_and_user_get_the_same_secret_uuid_on_every_host(
    agent: AgentUnderTest, pool: str, module_rados_pool: RadosPool, capabilities_cache: Path,
) -> None:
    """Another host (another agent home) that adds the cluster as the same user gets the same
    UUID, which the VM's XML names when it migrates there."""
    # Short path (UNIX socket names), with the QEMU capabilities the first agent probed.
    home = Path(tempfile.mkdtemp(prefix="bp-rh2-", dir="/tmp"))
    shutil.copytree(capabilities_cache, home / CAPABILITIES)
    other = AgentUnderTest(home)
    other.ok("agent", "start")
    try:
        created = create_rbd_pool(other, "ceph", module_rados_pool)
        mine = agent.json("pool", "show", pool)["rbd"]["secret_uuid"]
        assert created["rbd"]["secret_uuid"] == mine
        pinned = create_rbd_pool(other, "pinned", module_rados_pool, "--secret-uuid",
                                 "0d9c9f5e-0000-4000-8000-00000000abcd")
        assert pinned["rbd"]["secret_uuid"] == "0d9c9f5e-0000-4000-8000-00000000abcd"
    finally:
        other.ok("agent", "stop")
        shutil.rmtree(other.home, ignore_errors=True)


def test_a_stopped_vm_with_a_local_qcow2_disk_does_not_hold_a_detached_rbd_image(
    agent: AgentUnderTest, pool: str, module_rados_pool: RadosPool,
) -> None:
    """A stopped VM's definition names its qcow2 disk's chain only in part: that must not keep
    an rbd image (never a backing file) from going with its detach."""
    agent.ok("pool", "create", "side", "--type", "dir")
    agent.json("vm", "create", "rbdmixed", "--vcpus", "1", "--memory", "128M")
    agent.json("disk", "attach", "rbdmixed", "--pool", "side", "--size", "8M")
    attached = agent.json("disk", "attach", "rbdmixed", "--pool", pool, "--size", "8M")
    detached = agent.json("disk", "detach", "rbdmixed", attached["target"])
    assert detached["volume_deleted"] == attached["volume"] and "volume_kept" not in detached
    assert attached["volume"] not in module_rados_pool.images()
    agent.json("vm", "delete", "rbdmixed")
