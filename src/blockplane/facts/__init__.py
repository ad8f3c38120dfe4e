"""blockplane.facts: host facts, the KVM probe and the capability matrix.

Pure parts: ``versions`` (Version parsing; the domain capabilities flags are read by
``xml.domain_caps``), ``capabilities`` (minimum versions and the matrix), ``accel`` (choosing KVM
or TCG). Side effects live only in ``probe``; ``host`` assembles ``HostFacts`` from both. Nothing
here imports libvirt: the hypervisor layer hands in strings.
"""

from blockplane.facts.accel import Accel, AccelChoice, AccelRequest, KvmProbe, resolve_accel
from blockplane.facts.capabilities import (
    CAPABILITY_NAMES,
    Capability,
    capabilities_from_facts_json,
    capability_matrix,
    require_capability,
)
from blockplane.facts.host import (
    HostFacts,
    LibvirtFacts,
    LibvirtRuntime,
    QemuFacts,
    build_host_facts,
    gather_host_facts,
    libvirt_facts,
)
from blockplane.facts.probe import probe_kvm
from blockplane.facts.versions import Version, parse_version, version_from_libvirt_int
from blockplane.xml.domain_caps import DomainCapsFlags, parse_domain_caps

__all__ = [
    "CAPABILITY_NAMES",
    "Accel",
    "AccelChoice",
    "AccelRequest",
    "Capability",
    "DomainCapsFlags",
    "HostFacts",
    "KvmProbe",
    "LibvirtFacts",
    "LibvirtRuntime",
    "QemuFacts",
    "Version",
    "build_host_facts",
    "capabilities_from_facts_json",
    "capability_matrix",
    "gather_host_facts",
    "libvirt_facts",
    "parse_domain_caps",
    "parse_version",
    "probe_kvm",
    "require_capability",
    "resolve_accel",
    "version_from_libvirt_int",
]
