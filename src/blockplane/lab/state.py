"""The lab's state file (``lab.json``): everything ``up`` started, written before each step.

``down`` reads it to stop exactly that, so it is saved (atomically) as soon as a process is
started or a resource claimed, and a crashed ``up`` leaves a file that says how far it got.
Owns the file's format and the public view ``up`` prints; decides nothing.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockplane.errors import NotFound, OperationFailed
from blockplane.lab.layout import (
    AGENT_PORT,
    HOST_DATA_PATH,
    SHARED_PATH,
    HostLayout,
    LabLayout,
)
from blockplane.lab.processes import Recorded

FORMAT_VERSION = 1
_SAVING = threading.Lock()


@dataclass
class HostState:
    name: str
    index: int
    address: str
    root: Path
    host_uuid: str
    migration_ports: tuple[int, int]
    namespace: str | None = None  # mnt:[INODE] of the holder, once it runs
    holder: Recorded | None = None
    libvirtd: Recorded | None = None
    agent: Recorded | None = None
    mounts: list[str] = field(default_factory=list)  # targets inside the host's namespace
    peers: list[str] = field(default_factory=list)

    @property
    def layout(self) -> HostLayout:
        return HostLayout(self.root)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "address": self.address,
            "root": str(self.root),
            "host_uuid": self.host_uuid,
            "migration_ports": list(self.migration_ports),
            "namespace": self.namespace,
            "holder": self.holder.to_json() if self.holder else None,
            "libvirtd": self.libvirtd.to_json() if self.libvirtd else None,
            "agent": self.agent.to_json() if self.agent else None,
            "mounts": self.mounts,
            "peers": self.peers,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        def process(key: str) -> Recorded | None:
            value = data.get(key)
            return Recorded.from_json(value) if value else None

        low, high = data["migration_ports"]
        return cls(
            name=data["name"],
            index=int(data["index"]),
            address=data["address"],
            root=Path(data["root"]),
            host_uuid=data["host_uuid"],
            migration_ports=(int(low), int(high)),
            namespace=data.get("namespace"),
            holder=process("holder"),
            libvirtd=process("libvirtd"),
            agent=process("agent"),
            mounts=list(data.get("mounts", [])),
            peers=list(data.get("peers", [])),
        )


@dataclass
class LabState:
    root: Path
    base_address: str
    agents: bool
    images: Path
    status: str = "starting"  # starting -> up; "failed" when up gave up
    ca: Path | None = None
    claims: list[str] = field(default_factory=list)
    hosts: list[HostState] = field(default_factory=list)
    ceph: dict[str, Any] | None = None

    @property
    def layout(self) -> LabLayout:
        return LabLayout(self.root)

    def host(self, name: str) -> HostState:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(host.name for host in self.hosts)
        raise NotFound(f"the lab at {self.root} has no host {name!r} (it has {names})",
                       code="lab.host_not_found")

    def save(self) -> None:
        with _SAVING:  # hosts' agents and peers are started from several threads
            path = self.layout.state_file
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(json.dumps(self.to_json(), indent=2) + "\n")
            os.replace(temporary, path)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "root": str(self.root),
            "base_address": self.base_address,
            "agents": self.agents,
            "images": str(self.images),
            "status": self.status,
            "ca": str(self.ca) if self.ca else None,
            "claims": self.claims,
            "hosts": [host.to_json() for host in self.hosts],
            "ceph": self.ceph,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != FORMAT_VERSION:
            raise OperationFailed(
                f"lab state format {data.get('version')!r} is not {FORMAT_VERSION}",
                code="lab.state_unreadable",
            )
        return cls(
            root=Path(data["root"]),
            base_address=data["base_address"],
            agents=bool(data["agents"]),
            images=Path(data["images"]),
            status=data["status"],
            ca=Path(data["ca"]) if data.get("ca") else None,
            claims=list(data.get("claims", [])),
            hosts=[HostState.from_json(host) for host in data.get("hosts", [])],
            ceph=data.get("ceph"),
        )

    def public(self) -> dict[str, Any]:
        """What ``up`` and ``show`` print: how to reach each host, no secrets."""
        return {
            "dir": str(self.root),
            "status": self.status,
            "base_address": self.base_address,
            "ca": str(self.ca) if self.ca else None,
            "shared": str(SHARED_PATH),
            "shared_dir": str(self.layout.shared),
            "images": str(self.images),
            "hosts": [self._public_host(host) for host in self.hosts],
            "ceph": _public_ceph(self.ceph),
        }

    def _public_host(self, host: HostState) -> dict[str, Any]:
        layout = host.layout
        return {
            "name": host.name,
            "address": host.address,
            "home": str(HOST_DATA_PATH),
            "home_dir": str(layout.home),
            "api": f"https://{host.address}:{AGENT_PORT}" if self.agents else None,
            "token_file": str(layout.token_file) if self.agents else None,
            "tls_cert": str(layout.tls_dir / "agent.pem") if self.agents else None,
            "libvirt_uri": layout.libvirt_uri,
            "host_uuid": host.host_uuid,
            "migration_ports": list(host.migration_ports),
            "ns_pid": host.holder.pid if host.holder else None,
            "libvirtd_pid": host.libvirtd.pid if host.libvirtd else None,
            "agent_pid": host.agent.pid if host.agent else None,
            "libvirtd_log": str(layout.libvirtd_log),
            "peers": host.peers,
        }


def _public_ceph(ceph: dict[str, Any] | None) -> dict[str, Any] | None:
    if ceph is None:
        return None
    keys = ("conf", "admin_keyring", "workdir", "pids", "shared_pool")
    return {key: ceph.get(key) for key in keys}


def load(root: Path) -> LabState:
    """The state of the lab at ``root``; NotFound (lab.not_found) when there is none."""
    path = LabLayout(root).state_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"no lab at {root} (no {path.name})", code="lab.not_found") from None
    return LabState.from_json(json.loads(text))
