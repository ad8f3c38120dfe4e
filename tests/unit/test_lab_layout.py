"""The lab's pure parts: addresses and migration ports never collide, bad lab dirs and bases
are refused, the daemon's config keys are replaced rather than repeated, and a pid file is
trusted only for the process that wrote it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockplane.errors import InvalidInput
from blockplane.lab.hostsetup import _set_keys
from blockplane.lab.layout import (
    AUTO_BASES,
    DEFAULT_BASE_ADDRESS,
    MAX_HOSTS,
    check_base_address,
    check_lab_dir,
    host_address,
    migration_ports,
)
from blockplane.lab.processes import from_pid_file, record


def test_hosts_take_consecutive_addresses_after_the_base() -> None:
    assert [host_address(DEFAULT_BASE_ADDRESS, i) for i in (1, 2, 3)] == [
        "127.0.0.11",
        "127.0.0.12",
        "127.0.0.13",
    ]


def test_no_two_hosts_of_any_labs_share_an_address_or_a_migration_port() -> None:
    addresses = [
        host_address(base, index)
        for base in (DEFAULT_BASE_ADDRESS, *AUTO_BASES)
        for index in range(1, MAX_HOSTS + 1)
    ]
    assert len(set(addresses)) == len(addresses)
    ports = [port for address in addresses for port in range(migration_ports(address)[0],
                                                             migration_ports(address)[1] + 1)]
    assert len(set(ports)) == len(ports)
    # Below a system libvirtd's default migration range (49152-49215).
    assert min(ports) > 1024 and max(ports) < 49152


def test_auto_never_takes_the_default_block() -> None:
    default = {host_address(DEFAULT_BASE_ADDRESS, i) for i in range(1, MAX_HOSTS + 1)}
    for base in AUTO_BASES:
        assert default.isdisjoint({host_address(base, i) for i in range(1, MAX_HOSTS + 1)})


@pytest.mark.parametrize(
    ("base", "hosts"),
    [("10.0.0.10", 2), ("127.0.0.250", 5), ("127.0.0.0", 2), ("not-an-address", 1)],
)
def test_a_base_off_the_loopback_or_past_its_octet_is_refused(base: str, hosts: int) -> None:
    with pytest.raises(InvalidInput):
        check_base_address(base, hosts)


@pytest.mark.parametrize(
    "root",
    ["relative/lab", "/var/lib/blockplane/lab", "/var", "/run/libvirt/x",
     "/var/lib/blockplane-shared", "/tmp/" + "d" * 80],
)  # fmt: skip
def test_a_lab_dir_the_hosts_would_cover_or_too_deep_for_sockets_is_refused(root: str) -> None:
    with pytest.raises(InvalidInput):
        check_lab_dir(Path(root), 2)


def test_a_short_lab_dir_of_its_own_is_accepted() -> None:
    check_lab_dir(Path("/tmp/bp-lab-x1y2z3"), 16)


def test_config_keys_are_replaced_not_repeated(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text(
        '#stdio_handler = "logd"\nstdio_handler = "logd"\n'
        'cgroup_controllers = [ "cpu",\n  "devices" ]\nuser = "qemu"\n'
    )
    _set_keys(conf, {"stdio_handler": '"file"', "cgroup_controllers": "[ ]"}, "lab")
    lines = conf.read_text().splitlines()
    assert [line for line in lines if not line.startswith("#") and line] == [
        'user = "qemu"',
        'stdio_handler = "file"',
        "cgroup_controllers = [ ]",
    ]
    assert '#stdio_handler = "logd"' in lines


def test_a_pid_file_is_trusted_only_for_a_process_started_before_it_was_written(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert from_pid_file(pid_file) == record(os.getpid())
    # Written before this process started (in 1970): the PID was someone else's then.
    os.utime(pid_file, (0, 0))
    assert from_pid_file(pid_file) is None
    pid_file.write_text("not a pid")
    assert from_pid_file(pid_file) is None
