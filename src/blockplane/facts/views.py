"""What ``GET /v1/facts`` answers: versions, the KVM probe, the accelerator chosen, the domain
capabilities and the capability matrix (``model.view``). ``blockplane facts --json`` prints it,
and ``vm migrate-check --to-facts`` reads it back from another host."""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.facts.accel import AccelChoice, KvmProbe
from blockplane.facts.capabilities import Capability
from blockplane.facts.rbd_capability import RbdDriverProbe
from blockplane.model.ceph import CephHealth
from blockplane.model.view import KEY_IF_SET
from blockplane.xml.domain_caps import DomainCapsFlags


@dataclass(frozen=True)
class QemuFactsView:
    version: str | None
    package_version: str | None
    binary: str | None


@dataclass(frozen=True)
class LibvirtFactsView:
    """``version`` gates features: the daemon's libvirt when known, else the library's."""

    version: str | None
    library_version: str | None
    daemon_version: str | None
    package_version: str | None
    uri: str


@dataclass(frozen=True)
class AgentAbout:
    """Which agent answered: ``peer show`` prints a peer's."""

    version: str
    hostname: str


@dataclass(frozen=True)
class CephFacts:
    pools: tuple[CephHealth, ...]


@dataclass(frozen=True)
class FactsView:
    qemu: QemuFactsView
    libvirt: LibvirtFactsView
    kvm: KvmProbe
    accel: AccelChoice
    cpus: int
    memory_bytes: int | None
    domain_capabilities: DomainCapsFlags | None
    capabilities: dict[str, Capability]
    #: The installed QEMU rbd block module, as ``rbd_multi_iothread`` judged it.
    rbd_driver: RbdDriverProbe | None = None
    #: Only in the API's answer, which knows which agent answered.
    agent: AgentAbout | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)
    #: Only in the API's answer: the health of each rbd pool's cluster (the last probe).
    ceph: CephFacts | None = field(default=None, kw_only=True, metadata=KEY_IF_SET)
