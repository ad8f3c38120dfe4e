"""The lab's one-node Ceph cluster and the RBD client, against real Ceph daemons and real QEMU."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockplane.lab.ceph import CephCluster, recorded_pids, start_cluster, stop_cluster
from blockplane.storage.ceph import CephClient, CephConnection
from blockplane.storage.ceph_errors import (
    CephAuthFailed,
    CephImageBusy,
    CephImageNotFound,
    CephPoolMissing,
    CephUnreachable,
)
from tests.ceph_support import ceph_cluster, rbd_user, requires_ceph

__all__ = ["ceph_cluster"]  # the shared fixture, imported for this module

pytestmark = [pytest.mark.integration, requires_ceph]

MIB = 1024**2


def _client(
    cluster: CephCluster, user: str = "blockplane", *, timeout_s: float = 10.0
) -> CephClient:
    """A client as blockplane will be one: a cephx user with profile rbd, its keyring file."""
    created = rbd_user(cluster, user)
    return CephClient(
        CephConnection(conf=cluster.conf, user=user, keyring=created.keyring, timeout_s=timeout_s)
    )


def _qemu_io(cluster: CephCluster, user: str, image: str, *commands: str) -> str:
    # QEMU finds the user's keyring through the cluster's ceph.conf ([client] keyring = ...).
    spec = (
        f"driver=raw,file.driver=rbd,file.pool=rbd,file.image={image},"
        f"file.conf={cluster.conf},file.user={user}"
    )
    arguments = ["qemu-io", "--image-opts", spec]
    for command in commands:
        arguments += ["-c", command]
    completed = subprocess.run(arguments, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "failed" not in completed.stdout + completed.stderr, completed.stdout + completed.stderr
    return completed.stdout


def _export(cluster: CephCluster, image: str, destination: Path) -> bytes:
    cluster.run("rbd", "export", "--no-progress", f"rbd/{image}", str(destination))
    return destination.read_bytes()


def test_qemu_writes_through_rbd_as_a_cephx_user_and_reads_it_back(
    ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    client = _client(ceph_cluster)
    client.create_image("rbd", "qemu-roundtrip", 8 * MIB)

    _qemu_io(ceph_cluster, "blockplane", "qemu-roundtrip", "write -P 0x5a 1M 2M")
    output = _qemu_io(ceph_cluster, "blockplane", "qemu-roundtrip", "read -P 0x5a 1M 2M")

    assert "read 2097152/2097152 bytes at offset 1048576" in output
    exported = _export(ceph_cluster, "qemu-roundtrip", tmp_path / "image.raw")
    assert exported == bytes(MIB) + b"\x5a" * (2 * MIB) + bytes(5 * MIB)
    usage = client.du("rbd", "qemu-roundtrip")
    assert usage.provisioned_bytes == 8 * MIB
    assert usage.used_bytes > 0
    client.remove_image("rbd", "qemu-roundtrip")


def test_an_image_lives_through_resize_snapshot_rollback_and_removal(
    ceph_cluster: CephCluster,
) -> None:
    client = _client(ceph_cluster)
    created = client.create_image("rbd", "lifecycle", 4 * MIB)
    assert (created.name, created.size_bytes) == ("lifecycle", 4 * MIB)
    assert "lifecycle" in {entry.name for entry in client.list_images("rbd")}

    _qemu_io(ceph_cluster, "blockplane", "lifecycle", "write -P 0x11 0 1M")
    snapshot = client.create_snapshot("rbd", "lifecycle", "before")
    assert (snapshot.name, snapshot.size_bytes, snapshot.protected) == ("before", 4 * MIB, False)
    _qemu_io(ceph_cluster, "blockplane", "lifecycle", "write -P 0x22 0 1M")

    client.rollback_snapshot("rbd", "lifecycle", "before")
    _qemu_io(ceph_cluster, "blockplane", "lifecycle", "read -P 0x11 0 1M")

    assert client.resize_image("rbd", "lifecycle", 16 * MIB).size_bytes == 16 * MIB
    with pytest.raises(CephImageBusy) as has_snapshots:
        client.remove_image("rbd", "lifecycle")
    assert has_snapshots.value.code == "ceph.image_busy"
    client.remove_snapshot("rbd", "lifecycle", "before")
    assert client.list_snapshots("rbd", "lifecycle") == ()
    client.remove_image("rbd", "lifecycle")

    with pytest.raises(CephImageNotFound):
        client.image_info("rbd", "lifecycle")
    assert "lifecycle" not in {entry.name for entry in client.list_images("rbd")}


def test_access_check_and_pool_usage_for_a_user_that_may_write(ceph_cluster: CephCluster) -> None:
    client = _client(ceph_cluster)
    assert client.check_access("rbd").pool == "rbd"
    # The probe image is gone again.
    names = [entry.name for entry in client.list_images("rbd")]
    assert not [name for name in names if name.startswith("blockplane-access-probe")]

    client.create_image("rbd", "usage", 12 * MIB)
    usage = client.pool_usage("rbd")
    assert usage.provisioned_bytes >= 12 * MIB
    # The lab runs no manager, so the cluster reports no capacity: stated, not invented.
    assert (usage.stats_reported, usage.max_avail_bytes) == (False, None)
    client.remove_image("rbd", "usage")


@contextlib.contextmanager
def _silent_monitor() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word, like a hung monitor."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.mark.timeout(60)
def test_an_unanswering_monitor_is_ceph_unreachable(
    ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    user = rbd_user(ceph_cluster, "blockplane")
    with _silent_monitor() as port:
        conf = tmp_path / "ceph.conf"
        conf.write_text(f"[global]\nmon host = 127.0.0.1:{port}\n")
        client = CephClient(
            CephConnection(conf=conf, user=user.name, keyring=user.keyring, timeout_s=2)
        )
        with pytest.raises(CephUnreachable) as unreachable:
            client.check_access("rbd")
        with pytest.raises(CephUnreachable):
            client.df()
    assert unreachable.value.code == "ceph.unreachable"
    assert unreachable.value.details["timeout_s"] == 2


def test_a_wrong_key_is_ceph_auth_and_never_shown(
    ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    user = rbd_user(ceph_cluster, "blockplane")
    wrong_key = "AQBuvjNpAAAAABAAgBcaDkFNRu8omPoe5jJXKg=="
    keyring = tmp_path / "wrong.keyring"
    keyring.write_text(f"[client.blockplane]\n\tkey = {wrong_key}\n")
    client = CephClient(CephConnection(conf=ceph_cluster.conf, user="blockplane", keyring=keyring))

    with pytest.raises(CephAuthFailed) as refused:
        client.check_access("rbd")
    with pytest.raises(CephAuthFailed):
        client.df()

    assert refused.value.code == "ceph.auth"
    shown = f"{refused.value} {refused.value.details}"
    assert wrong_key not in shown and user.key not in shown
    assert user.key not in repr(user)


def test_a_user_without_caps_on_the_pool_is_ceph_auth(ceph_cluster: CephCluster) -> None:
    ceph_cluster.create_pool("other")
    other = rbd_user(ceph_cluster, "other-only", pools=("other",))
    client = CephClient(
        CephConnection(conf=ceph_cluster.conf, user=other.name, keyring=other.keyring)
    )
    assert client.check_access("other").pool == "other"
    with pytest.raises(CephAuthFailed) as refused:
        client.check_access("rbd")
    assert refused.value.code == "ceph.auth"


def test_a_missing_pool_is_ceph_pool_missing(ceph_cluster: CephCluster) -> None:
    client = _client(ceph_cluster)
    for call in (client.check_access, client.list_images, client.du):
        with pytest.raises(CephPoolMissing) as missing:
            call("no-such-pool")
        assert missing.value.code == "ceph.pool_missing"


def test_a_second_cluster_runs_beside_the_first_and_stops_without_a_trace(
    ceph_cluster: CephCluster,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bp-ceph2-", dir="/tmp"))
    second = start_cluster(workdir, pool=None)
    try:
        assert {second.v1_port, second.v2_port}.isdisjoint(
            {ceph_cluster.v1_port, ceph_cluster.v2_port}
        )
        assert second.fsid != ceph_cluster.fsid
        assert json.loads(second.run("ceph", "fsid", "--format", "json"))["fsid"] == second.fsid
        assert json.loads(ceph_cluster.run("ceph", "fsid", "--format", "json"))["fsid"] == (
            ceph_cluster.fsid
        )
        pids = recorded_pids(workdir)
        assert set(pids) == {"mon.a", "osd.0"} and pids == dict(second.pids)
    finally:
        second.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert [pid for pid in pids.values() if _alive(pid)] == []
    stop_cluster(workdir)  # a second stop is harmless
    # The shared cluster is untouched.
    assert _client(ceph_cluster).check_access("rbd").pool == "rbd"


CRASH_DURING_START = """
import os, sys
from pathlib import Path
import blockplane.lab.ceph as lab
lab._wait_listening = lambda pid, ports, deadline: os._exit(3)  # die right after the monitor
lab.start_cluster(Path(sys.argv[1]))
"""


def test_stop_cleans_up_after_the_starter_died_mid_start() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bp-ceph3-", dir="/tmp"))
    try:
        died = subprocess.run(
            [sys.executable, "-c", CRASH_DURING_START, str(workdir)], timeout=60, check=False
        )
        assert died.returncode == 3
        pids = recorded_pids(workdir)
        assert list(pids) == ["mon.a"] and _alive(pids["mon.a"])

        stop_cluster(workdir)

        assert not _alive(pids["mon.a"])
    finally:
        stop_cluster(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(120)
def test_a_frozen_monitor_is_unreachable_within_the_timeout_and_answers_once_thawed(
    ceph_cluster: CephCluster,
) -> None:
    client = _client(ceph_cluster, timeout_s=2)
    ceph_cluster.signal_daemon("mon.a", signal.SIGSTOP)
    try:
        with pytest.raises(CephUnreachable) as frozen:
            client.list_images("rbd")
    finally:
        ceph_cluster.signal_daemon("mon.a", signal.SIGCONT)
    assert frozen.value.code == "ceph.unreachable"
    assert _client(ceph_cluster).check_access("rbd").pool == "rbd"


@pytest.mark.timeout(360)
def test_a_bluestore_osd_keeps_its_data_through_sigkill_and_restart(tmp_path: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bp-ceph4-", dir="/tmp"))
    cluster = start_cluster(workdir, objectstore="bluestore", osd_bytes=1024**3)
    try:
        client = _client(cluster)
        client.create_image("rbd", "durable", 4 * MIB)
        _qemu_io(cluster, "blockplane", "durable", "write -P 0x77 0 4M")
        old_osd = cluster.pids["osd.0"]

        cluster.stop_daemon("osd.0", kill=True)
        assert not _alive(old_osd)
        new_osd = cluster.start_daemon("osd.0")

        assert new_osd != old_osd and cluster.pids["osd.0"] == new_osd
        cluster.wait_healthy(150)  # booted, up and peered: the read is served, not queued
        _qemu_io(cluster, "blockplane", "durable", "read -P 0x77 0 4M")
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
