"""The lab cluster's pure parts: cephx keys, keyrings and the ceph.conf it writes."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from blockplane.lab.ceph import (
    CephCluster,
    CephUser,
    ObjectStore,
    conf_text,
    keyring_text,
    new_cephx_key,
)


def test_a_cephx_key_has_ceph_authtools_layout() -> None:
    key = new_cephx_key(secret=bytes(range(16)), created=1_700_000_000)
    raw = base64.b64decode(key)
    assert struct.unpack("<HIIH", raw[:12]) == (1, 1_700_000_000, 0, 16)
    assert raw[12:] == bytes(range(16))
    assert len(key) == 40 and key.startswith("AQ")
    assert new_cephx_key() != new_cephx_key()


def test_keyring_text() -> None:
    text = keyring_text("client.admin", "KEY", {"mon": "allow *", "osd": "allow *"})
    assert text == '[client.admin]\n\tkey = KEY\n\tcaps mon = "allow *"\n\tcaps osd = "allow *"\n'


def test_conf_keeps_every_daemon_path_in_the_work_directory() -> None:
    workdir = Path("/tmp/bp-ceph-x")
    stores: tuple[tuple[ObjectStore, str], ...] = (
        ("memstore", "memstore device bytes = 2147483648"),
        ("bluestore", "bluestore block size = 2147483648"),
    )
    for store, line in stores:
        text = conf_text(_cluster(workdir), 2 * 1024**3, store)
        assert "mon host = [v2:127.0.0.1:40000,v1:127.0.0.1:40001]" in text
        assert f"osd objectstore = {store}" in text and line in text
        assert "osd pool default size = 1" in text and "auth cluster required = cephx" in text
        paths = [line.split("=", 1)[1].strip() for line in text.splitlines() if "= /" in line]
        assert paths and all(path.startswith(f"{workdir}/") for path in paths)
        assert "/var/" not in text and "/etc/" not in text


def _cluster(workdir: Path) -> CephCluster:
    return CephCluster(
        workdir=workdir,
        conf=workdir / "ceph.conf",
        admin_keyring=workdir / "ceph.client.admin.keyring",
        fsid="f",
        address="127.0.0.1",
        v2_port=40000,
        v1_port=40001,
    )


def test_cluster_commands_and_env_point_at_its_own_files() -> None:
    cluster = _cluster(Path("/w"))
    assert cluster.command("rbd", "ls") == [
        "rbd", "--conf", "/w/ceph.conf", "--keyring", "/w/ceph.client.admin.keyring",
        "--id", "admin", "ls",
    ]  # fmt: skip
    assert cluster.env() == {
        "CEPH_CONF": "/w/ceph.conf",
        "CEPH_ARGS": "--keyring /w/ceph.client.admin.keyring --id admin",
    }
    assert cluster.mon_address == "v2:127.0.0.1:40000"


def test_a_users_key_stays_out_of_its_repr() -> None:
    user = CephUser(name="bp", keyring=Path("/w/k"), key="AQSECRET")
    assert "AQSECRET" not in repr(user) and user.entity == "client.bp"
