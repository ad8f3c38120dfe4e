"""The Ceph cluster failing under a Linux guest that writes to an rbd disk.

A cluster of its own (bluestore OSD: its data survives a SIGKILL, unlike memstore's). Two
faults, each while the guest writes a slice of a random seed with ``oflag=direct``:

- the monitor stopped (SIGSTOP) for at least 10 s, then continued;
- the OSD SIGKILLed, then started again on the same data.

Meanwhile blockplane reports the cluster unhealthy (``facts``, ``pool show``, the
``blockplane_ceph_pool_healthy`` metric) and answers every request within its deadline: reads
at once from the last probe, and a change that needs the cluster fails with a code instead of
hanging. Afterwards the guest's write ends with no error, the disk holds the seed, the pool is
healthy again, and the store, libvirt and the pool agree.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockplane.lab.ceph import CephCluster, start_cluster
from tests.ceph_support import requires_ceph
from tests.faults.consistency import api_get, assert_consistent, wait_for
from tests.harness import AgentUnderTest, requires_guest
from tests.rbd_support import RadosPool, create_rbd_pool, new_rados_pool

pytestmark = [pytest.mark.faults, requires_ceph, requires_guest]

VM = "rbdguest"
SEED_MIB = 24
FREEZE_S = 10.0


@pytest.fixture(scope="module")
def bluestore() -> Iterator[CephCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="bp-cephb-", dir="/tmp"))
    try:
        cluster = start_cluster(workdir, objectstore="bluestore", osd_bytes=3 * 1024**3)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def guest(agent: AgentUnderTest, bluestore: CephCluster) -> dict[str, Any]:
    rados: RadosPool = new_rados_pool(bluestore)
    create_rbd_pool(agent, "blue", rados)
    agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux",
             "--start")
    sh(agent, f"dd if=/dev/urandom of=/tmp/seed bs=1M count={SEED_MIB} 2>/dev/null")
    disk: dict[str, Any] = agent.json("disk", "attach", VM, "--pool", "blue", "--size", "256M")
    device = f"/dev/{disk['target']}"
    wait_for(lambda: "yes" in sh(agent, f"test -b {device} && echo yes || true"),
             f"{device} in the guest", 60)
    wait_for(lambda: healthy(agent) is True, "the first probe of the pool", 30)
    return disk


def sh(agent: AgentUnderTest, script: str, timeout: float = 120) -> str:
    return agent.ok("guest", "exec", VM, "--timeout", str(timeout), "--", "/bin/sh", "-c",
                    script, timeout=timeout + 30)


def healthy(agent: AgentUnderTest) -> bool | None:
    verdicts = {entry["pool"]: entry for entry in api_get(agent, "/facts")["ceph"]["pools"]}
    verdict: bool | None = verdicts["blue"]["healthy"]
    return verdict


def metric(agent: AgentUnderTest) -> str:
    with agent.http() as client:
        text = client.get("/v1/metrics").text
    line = next(line for line in text.splitlines()
                if line.startswith('blockplane_ceph_pool_healthy{pool="blue"}'))
    return line.split()[-1]


def start_write(agent: AgentUnderTest, device: str, offset_mib: int) -> None:
    script = (f"dd if=/tmp/seed of={device} bs=1M seek={offset_mib} count={SEED_MIB} "
              "oflag=direct conv=notrunc,fsync 2>/tmp/dd.err; echo $? >/tmp/dd.rc")
    sh(agent, f"rm -f /tmp/dd.rc; ( {script} ) >/dev/null 2>&1 &")


def write_result(agent: AgentUnderTest) -> str:
    result = agent.cli("guest", "exec", VM, "--", "/bin/sh", "-c",
                       "cat /tmp/dd.rc 2>/dev/null || true")
    return result.stdout.strip() if result.returncode == 0 else ""


def verify(agent: AgentUnderTest, device: str, offset_mib: int) -> None:
    wait_for(lambda: write_result(agent) != "", "the guest's write to end", 180)
    assert write_result(agent) == "0", sh(agent, "cat /tmp/dd.err")
    seed = sh(agent, "sha256sum /tmp/seed").split()[0]
    read = sh(agent, f"dd if={device} bs=1M skip={offset_mib} count={SEED_MIB} iflag=direct "
              "2>/dev/null | sha256sum").split()[0]
    assert read == seed


def while_unhealthy(agent: AgentUnderTest) -> None:
    """What a user sees while the cluster does not answer: reported, and nothing hangs."""
    wait_for(lambda: healthy(agent) is False, "the pool to be reported unhealthy", 30)
    assert metric(agent) == "0.0"
    shown = agent.json("pool", "show", "blue")
    assert shown["rbd"]["health"]["healthy"] is False
    assert shown["rbd"]["cluster"]["used_bytes"] is None
    # Answered from the last probe: the cluster was not asked (nothing to wait on).
    assert "not asked" in shown["rbd"]["cluster"]["capacity_reason"]
    attach = agent.cli("--timeout", "20", "disk", "attach", VM, "--pool", "blue", "--size",
                       "8M", timeout=60)
    assert attach.returncode == 1, attach.stderr
    assert "[ceph.unreachable]" in attach.stderr or "[timeout." in attach.stderr


def test_the_monitor_stopped_stalls_nothing_it_needs_not_and_is_reported(
    agent: AgentUnderTest, guest: dict[str, Any], bluestore: CephCluster,
) -> None:
    device = f"/dev/{guest['target']}"
    frozen_at = time.monotonic()
    bluestore.signal_daemon("mon.a", signal.SIGSTOP)
    try:
        start_write(agent, device, 0)  # written while the monitor does not answer
        while_unhealthy(agent)
        time.sleep(max(0.0, FREEZE_S - (time.monotonic() - frozen_at)))
    finally:
        bluestore.signal_daemon("mon.a", signal.SIGCONT)
    verify(agent, device, 0)
    wait_for(lambda: healthy(agent) is True, "the pool to be healthy again", 60)
    assert metric(agent) == "1.0"
    assert_consistent(agent, VM)


def test_the_osd_killed_and_restarted_stalls_the_guest_without_an_error(
    agent: AgentUnderTest, guest: dict[str, Any], bluestore: CephCluster,
) -> None:
    device = f"/dev/{guest['target']}"
    bluestore.stop_daemon("osd.0", kill=True)
    try:
        start_write(agent, device, 64)
        while_unhealthy(agent)
        assert write_result(agent) == ""  # the guest's write waits for the OSD
    finally:
        bluestore.start_daemon("osd.0")
    verify(agent, device, 64)
    wait_for(lambda: healthy(agent) is True, "the pool to be healthy again", 90)
    assert_consistent(agent, VM)
