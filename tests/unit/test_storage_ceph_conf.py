"""Reading a ceph.conf's monitors and a keyring's key (no cluster needed)."""

from __future__ import annotations

import pytest

from blockplane.lab.ceph import keyring_text, new_cephx_key
from blockplane.model.ceph import Monitor
from blockplane.storage.ceph_conf import parse_keyring_key, parse_mon_host
from blockplane.storage.ceph_errors import CephConfInvalid
from blockplane.storage.rbd_pools import secret_usage_name, secret_uuid_for


@pytest.mark.parametrize(
    ("value", "monitors"),
    [
        ("[v2:127.0.0.1:33813,v1:127.0.0.1:56559]", [("127.0.0.1", 33813)]),
        ("[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0] [v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0]",
         [("10.0.0.1", 3300), ("10.0.0.2", 3300)]),
        ("10.0.0.1:6789,10.0.0.2", [("10.0.0.1", 6789), ("10.0.0.2", None)]),
        ("mon-a, mon-b:3300", [("mon-a", None), ("mon-b", 3300)]),
        ("[v1:10.0.0.3]", [("10.0.0.3", 6789)]),
        ("[v2:[::1]:3300,v1:[::1]:6789]", [("::1", 3300)]),
    ],
)
def test_mon_host_forms(value: str, monitors: list[tuple[str, int | None]]) -> None:
    assert parse_mon_host(value) == tuple(Monitor(host, port) for host, port in monitors)


@pytest.mark.parametrize("value", ["", "   ", "[v2:1.2.3.4:99999]"])
def test_bad_mon_hosts_are_refused(value: str) -> None:
    with pytest.raises(CephConfInvalid):
        parse_mon_host(value)


def test_the_key_of_the_users_section_and_nothing_else() -> None:
    key = new_cephx_key()
    text = keyring_text("client.admin", new_cephx_key(), {}) + keyring_text(
        "client.web", key, {"mon": "profile rbd"})
    assert parse_keyring_key(text, "client.web") == key
    with pytest.raises(CephConfInvalid) as missing:
        parse_keyring_key(text, "client.other")
    assert key not in missing.value.message
    with pytest.raises(CephConfInvalid) as garbled:
        parse_keyring_key("[client.web]\n\tkey = not-a-key\n", "client.web")
    assert "not a cephx key" in garbled.value.message


def test_the_secret_uuid_is_the_same_for_the_same_cluster_and_user_only() -> None:
    fsid = "b6638092-6af5-45fc-8dc4-6f0cb6a27b45"
    assert secret_uuid_for(fsid, "web") == secret_uuid_for(fsid.upper(), "web")
    assert secret_uuid_for(fsid, "web") != secret_uuid_for(fsid, "db")
    uuid = secret_uuid_for(fsid, "web")
    assert secret_usage_name(fsid, "web", uuid) != secret_usage_name(fsid, "web", "x")
