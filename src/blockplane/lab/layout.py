"""Where a lab keeps things, and the fixed paths every simulated host sees.

Pure path and address arithmetic: nothing here touches the disk or starts anything. A lab dir
holds ``lab.json`` (the state), ``ca/`` (the lab CA), ``shared/`` (one directory every host sees
at :data:`SHARED_PATH`) and one ``hostN/`` per host, whose subdirectories are bound over the
daemon's fixed paths inside that host's mount namespace.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from blockplane.errors import InvalidInput

DEFAULT_LAB_DIR = Path("/var/lib/blockplane-lab")
DEFAULT_BASE_ADDRESS = "127.0.0.10"
# `--base-address auto` looks for a free block here, and never takes the default block, so a
# test session's lab and a user's `scripts/lab up` do not meet.
AUTO_BASES = tuple(f"127.0.0.{octet}" for octet in range(30, 231, 20))
MAX_HOSTS = 16
AGENT_PORT = 8640

# Inside every host the same paths resolve to that host's own files, as on real hosts.
HOST_DATA_PATH = Path("/var/lib/blockplane")  # the host's BLOCKPLANE_HOME and pool roots
SHARED_PATH = Path("/var/lib/blockplane-shared")  # the same files on every host
# The daemon's fixed paths, each bound to a private directory: (path, name under hostN/).
LIBVIRT_PATHS = (
    (Path("/run/libvirt"), "run"),
    (Path("/etc/libvirt"), "etc"),
    (Path("/var/lib/libvirt"), "lib"),
    (Path("/var/log/libvirt"), "log"),
    (Path("/var/cache/libvirt"), "cache"),
)
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL

# Each host's migration (and NBD copy) ports, from its address's last octet: distinct across
# hosts and labs, and below 49152 where a system libvirtd's default range starts.
MIGRATION_PORT_BASE = 40000
MIGRATION_PORTS_PER_HOST = 32

STATE_FILE = "lab.json"


@dataclass(frozen=True)
class HostLayout:
    """One host's directories in the lab dir (as seen from the root namespace)."""

    root: Path

    @property
    def home(self) -> Path:
        """Bound at :data:`HOST_DATA_PATH` inside the host."""
        return self.root / "blockplane"

    def libvirt_dir(self, name: str) -> Path:
        return self.root / name

    @property
    def libvirt_socket(self) -> Path:
        return self.libvirt_dir("run") / "libvirt-sock"

    @property
    def libvirtd_pid_file(self) -> Path:
        return self.libvirt_dir("run") / "libvirtd.pid"

    @property
    def libvirtd_log(self) -> Path:
        return self.libvirt_dir("log") / "libvirtd.log"

    @property
    def holder_pid_file(self) -> Path:
        return self.root / "holder.pid"

    @property
    def agent_pid_file(self) -> Path:
        return self.home / "agent.pid"

    @property
    def token_file(self) -> Path:
        return self.home / "token"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def libvirt_uri(self) -> str:
        return f"qemu+unix:///system?socket={self.libvirt_socket}"


@dataclass(frozen=True)
class LabLayout:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def ceph_dir(self) -> Path:
        return self.root / "ceph"

    def host(self, name: str) -> HostLayout:
        return HostLayout(self.root / name)


def host_name(index: int) -> str:
    return f"host{index}"


def host_address(base: str, index: int) -> str:
    return str(ipaddress.IPv4Address(base) + index)


def migration_ports(address: str) -> tuple[int, int]:
    octet = int(ipaddress.IPv4Address(address)) & 0xFF
    low = MIGRATION_PORT_BASE + octet * MIGRATION_PORTS_PER_HOST
    return low, low + MIGRATION_PORTS_PER_HOST - 1


def check_base_address(base: str, hosts: int) -> None:
    """Refuse a base whose hosts would leave 127.0.0.0/8's last octet or the loopback."""
    try:
        address = ipaddress.IPv4Address(base)
    except ValueError:
        raise InvalidInput(f"--base-address {base!r} is not an IPv4 address") from None
    if address not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise InvalidInput(f"--base-address {base} is not on the loopback (127.0.0.0/8)")
    last = int(address) & 0xFF
    if last < 1 or last + hosts > 254:
        raise InvalidInput(
            f"--base-address {base} with {hosts} hosts needs last octets {last + 1}.."
            f"{last + hosts}; they must stay within 2..254"
        )


def check_lab_dir(root: Path, hosts: int) -> None:
    """Refuse a lab dir the hosts' own bind mounts would cover, or one too deep for sockets."""
    if not root.is_absolute():
        raise InvalidInput(f"--dir {root} must be an absolute path")
    covered = [HOST_DATA_PATH, SHARED_PATH, *(path for path, _name in LIBVIRT_PATHS)]
    for path in covered:
        if root == path or root.is_relative_to(path) or path.is_relative_to(root):
            raise InvalidInput(
                f"--dir {root} overlaps {path}, which every lab host binds to its own files"
            )
    longest = LabLayout(root).host(host_name(hosts)).libvirt_socket
    if len(str(longest).encode()) > SOCKET_PATH_MAX:
        raise InvalidInput(
            f"--dir {root} is too deep: {longest} would exceed the {SOCKET_PATH_MAX}-byte "
            "UNIX socket path limit"
        )
