"""``HostFacts``: everything ``blockplane facts`` reports about this host, and how it is gathered.

Owns the frozen facts values, their ``to_json`` (the SPEC's ``facts --json`` shape), the pure
``build_host_facts`` that tests call with literals, and ``gather_host_facts``, the one function
that runs the probes. It never imports libvirt: the hypervisor layer fills ``LibvirtRuntime`` and
passes the domain capabilities XML as a string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockplane.errors import InvalidInput
from blockplane.facts import probe
from blockplane.facts.accel import AccelChoice, KvmProbe, choose_accel
from blockplane.facts.capabilities import Capability, capability_matrix
from blockplane.facts.kernel_probe import ProbeKernel
from blockplane.facts.rbd_capability import RbdDriverProbe, probe_rbd_driver
from blockplane.facts.versions import Version, parse_version, version_from_libvirt_int
from blockplane.facts.views import FactsView, LibvirtFactsView, QemuFactsView
from blockplane.xml.domain_caps import DomainCapsFlags, parse_domain_caps


@dataclass(frozen=True)
class LibvirtRuntime:
    """What the hypervisor layer knows about libvirt, as strings.

    ``library_version``: ``libvirt.getVersion()`` (the client library), ``daemon_version``:
    ``conn.getLibVersion()`` (the libvirt that runs the QEMU driver; the same library for
    ``qemu:///embed``), ``None`` when there is no connection. Either may be dotted (``11.3.0``)
    or libvirt's integer form (``11003000``).
    """

    library_version: str
    daemon_version: str | None
    uri: str


@dataclass(frozen=True)
class QemuFacts:
    version: Version | None
    package_version: str | None
    binary: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _str_or_none(self.version),
            "package_version": self.package_version,
            "binary": self.binary,
        }


@dataclass(frozen=True)
class LibvirtFacts:
    """``version`` gates features: the daemon's libvirt when known, else the library's."""

    version: Version | None
    library_version: Version | None
    daemon_version: Version | None
    package_version: str | None
    uri: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _str_or_none(self.version),
            "library_version": _str_or_none(self.library_version),
            "daemon_version": _str_or_none(self.daemon_version),
            "package_version": self.package_version,
            "uri": self.uri,
        }


@dataclass(frozen=True)
class HostFacts:
    qemu: QemuFacts
    libvirt: LibvirtFacts
    kvm: KvmProbe
    accel: AccelChoice
    cpus: int
    memory_bytes: int | None
    domain_caps: DomainCapsFlags | None = None
    rbd_driver: RbdDriverProbe | None = None

    @property
    def capabilities(self) -> dict[str, Capability]:
        return capability_matrix(self.qemu.version, self.libvirt.version, self.domain_caps,
                                 self.rbd_driver)

    def view(self) -> FactsView:
        """The facts as ``GET /v1/facts`` answers them (the same document as ``to_json``)."""
        return FactsView(
            qemu=QemuFactsView(_str_or_none(self.qemu.version), self.qemu.package_version,
                               self.qemu.binary),
            libvirt=LibvirtFactsView(
                version=_str_or_none(self.libvirt.version),
                library_version=_str_or_none(self.libvirt.library_version),
                daemon_version=_str_or_none(self.libvirt.daemon_version),
                package_version=self.libvirt.package_version,
                uri=self.libvirt.uri,
            ),
            kvm=self.kvm,
            accel=self.accel,
            cpus=self.cpus,
            memory_bytes=self.memory_bytes,
            domain_capabilities=self.domain_caps,
            capabilities=self.capabilities,
            rbd_driver=self.rbd_driver,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "qemu": self.qemu.to_json(),
            "libvirt": self.libvirt.to_json(),
            "kvm": self.kvm.to_json(),
            "accel": self.accel.to_json(),
            "cpus": self.cpus,
            "memory_bytes": self.memory_bytes,
            "domain_capabilities": (
                self.domain_caps.to_json() if self.domain_caps is not None else None
            ),
            "capabilities": {
                name: capability.to_json() for name, capability in self.capabilities.items()
            },
            "rbd_driver": self.rbd_driver.to_json() if self.rbd_driver is not None else None,
        }


def libvirt_facts(runtime: LibvirtRuntime, package_version: str | None) -> LibvirtFacts:
    """Parse the hypervisor layer's strings; a malformed one raises ``InvalidInput``."""
    library = _libvirt_version(runtime.library_version, "library_version")
    daemon = (
        _libvirt_version(runtime.daemon_version, "daemon_version")
        if runtime.daemon_version is not None
        else None
    )
    return LibvirtFacts(
        version=daemon if daemon is not None else library,
        library_version=library,
        daemon_version=daemon,
        package_version=package_version,
        uri=runtime.uri,
    )


def build_host_facts(
    *,
    qemu: QemuFacts,
    libvirt: LibvirtFacts,
    kvm: KvmProbe,
    cpus: int,
    memory_bytes: int | None,
    domain_caps: DomainCapsFlags | None = None,
    requested_accel: str = "auto",
    rbd_driver: RbdDriverProbe | None = None,
) -> HostFacts:
    """Pure assembly; raises ``CapabilityMissing`` for ``requested_accel='kvm'`` without KVM."""
    return HostFacts(
        qemu=qemu,
        libvirt=libvirt,
        kvm=kvm,
        accel=choose_accel(requested_accel, kvm),
        cpus=cpus,
        memory_bytes=memory_bytes,
        domain_caps=domain_caps,
        rbd_driver=rbd_driver,
    )


def gather_host_facts(
    libvirt_runtime: LibvirtRuntime,
    domain_caps_xml: str | None,
    *,
    requested_accel: str = "auto",
    kvm_timeout: float = probe.KVM_PROBE_TIMEOUT,
    linux: ProbeKernel | None = None,
) -> HostFacts:
    """Probe this host (QEMU binary, packages, CPUs, memory, KVM) and assemble ``HostFacts``.

    The QEMU binary is the domain capabilities' ``<path>`` when given, so the version matches the
    emulator libvirt will run. ``linux``: a kernel that KVM must also boot to count as usable.
    """
    domain_caps = parse_domain_caps(domain_caps_xml) if domain_caps_xml is not None else None
    binary = probe.find_qemu_binary(domain_caps.emulator if domain_caps is not None else None)
    qemu = QemuFacts(
        version=probe.probe_qemu_version(binary) if binary is not None else None,
        package_version=probe.probe_qemu_package_version(),
        binary=binary,
    )
    return build_host_facts(
        qemu=qemu,
        libvirt=libvirt_facts(libvirt_runtime, probe.probe_libvirt_package_version()),
        kvm=probe.probe_kvm(binary, timeout=kvm_timeout, linux=linux),
        cpus=probe.probe_cpu_count(),
        memory_bytes=probe.probe_memory_bytes(),
        domain_caps=domain_caps,
        requested_accel=requested_accel,
        rbd_driver=probe_rbd_driver(),
    )


def _libvirt_version(text: str, field: str) -> Version:
    stripped = text.strip() if isinstance(text, str) else text
    try:
        if isinstance(stripped, str) and stripped.isdigit():
            return version_from_libvirt_int(int(stripped))
        return parse_version(stripped)
    except InvalidInput as error:
        raise InvalidInput(f"libvirt {field}: {error.message}") from error


def _str_or_none(version: Version | None) -> str | None:
    return str(version) if version is not None else None
