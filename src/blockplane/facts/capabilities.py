"""The capability matrix: which disk features this (or another) host's QEMU and libvirt support.

Owns the minimum versions, each with the document it was taken from, and the pure functions that
turn versions (plus, when known, libvirt's domain capabilities) into ``Capability`` verdicts with
a reason a person can act on. ``capabilities_from_facts_json`` does the same for another host's
``blockplane facts --json`` document (``vm migrate-check --to-facts``). No probing happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.errors import CapabilityMissing, InvalidInput
from blockplane.facts.rbd_capability import (
    NEEDS as RBD_MULTI_IOTHREAD_NEEDS,
)
from blockplane.facts.rbd_capability import (
    RBD_MULTI_IOTHREAD,
    RbdDriverProbe,
    rbd_multi_iothread,
)
from blockplane.facts.versions import Version, parse_version
from blockplane.xml.domain_caps import DomainCapsFlags

# virtio-blk IOThread virtqueue mapping (<driver queues='N'><iothreads>...).
# QEMU: QMP reference, IOThreadVirtQueueMapping "Since: 9.0" (virtio-blk iothread-vq-mapping).
IOTHREAD_VQ_MAPPING_QEMU = Version(9, 0)
# libvirt 10.0.0 news: "qemu: Add support for mapping iothreads to virtqueues of virtio-blk
# devices"; formatdomain: "Since 10.0.0 (QEMU 9.0, virtio disks only)".
IOTHREAD_VQ_MAPPING_LIBVIRT = Version(10, 0)

# virtio-scsi controller IOThread virtqueue mapping.
# QEMU 10.0: block pull of 2025-03-11, "virtio-scsi: add iothread-vq-mapping parameter"
# (commit 2e8e18c2e463), released in QEMU 10.0.0.
SCSI_IOTHREAD_VQ_MAPPING_QEMU = Version(10, 0)
# libvirt 11.2.0 news: "qemu: Add support for multiple iothreads for virtio-scsi controller".
SCSI_IOTHREAD_VQ_MAPPING_LIBVIRT = Version(11, 2)

# Throttle groups shared by disks through <throttlefilters> chains.
# QEMU: QMP reference, ThrottleGroupProperties and BlockdevOptionsThrottle "Since: 2.11".
THROTTLE_GROUPS_QEMU = Version(2, 11)
# libvirt 11.2.0 news: "qemu: Support for Block Disk Along with Throttle Filters";
# hvsupport.html: virDomainSetThrottleGroup 11.2.0 (qemu driver 11.2.0).
THROTTLE_GROUPS_LIBVIRT = Version(11, 2)

# Write threshold events for thin provisioning.
# QEMU: QMP reference, block-set-write-threshold and BLOCK_WRITE_THRESHOLD "Since: 2.3".
BLOCK_THRESHOLD_QEMU = Version(2, 3)
# libvirt 3.2.0 news: "Add support for block device threshold event";
# hvsupport.html: virDomainSetBlockThreshold, qemu driver 3.2.0.
BLOCK_THRESHOLD_LIBVIRT = Version(3, 2)

# Incremental backup (checkpoints + virDomainBackupBegin with <incremental>).
# libvirt 7.6.0 news: "qemu: Incremental backup support via virDomainBackupBegin ... libvirt-7.6
# along with the unreleased qemu-6.1 will fully support the change block tracking features".
# (kbase/live_full_disk_backup: *full* backups via virDomainBackupBegin need libvirt 7.2.0 and
# QEMU 4.2; libvirt 7.2.0 news: "Full disk backups via virDomainBackupBegin".)
INCREMENTAL_BACKUP_QEMU = Version(6, 1)
INCREMENTAL_BACKUP_LIBVIRT = Version(7, 6)


@dataclass(frozen=True)
class Capability:
    """One verdict of the matrix."""

    supported: bool
    reason: str
    needs: str

    def to_json(self) -> dict[str, Any]:
        return {"supported": self.supported, "reason": self.reason, "needs": self.needs}


@dataclass(frozen=True)
class _Verdict:
    """What libvirt's domain capabilities say about a feature, when they say anything."""

    supported: bool
    reason: str


_DomcapsCheck = Callable[[DomainCapsFlags], list[_Verdict]]


@dataclass(frozen=True)
class Requirement:
    """Minimum QEMU and libvirt for a feature."""

    name: str
    qemu: Version
    libvirt: Version

    @property
    def needs(self) -> str:
        return f"QEMU >= {self.qemu.short()}, libvirt >= {self.libvirt.short()}"


def _iothreads_off(flags: DomainCapsFlags) -> list[_Verdict]:
    if flags.iothreads is False:
        return [_Verdict(False, "libvirt's domain capabilities report <iothreads supported='no'/>")]
    return []


def _needs_bus(bus: str) -> _DomcapsCheck:
    def check(flags: DomainCapsFlags) -> list[_Verdict]:
        verdicts = _iothreads_off(flags)
        if flags.disk_supported is False:
            verdicts.append(
                _Verdict(False, "libvirt's domain capabilities report <disk supported='no'/>")
            )
        elif flags.disk_buses is not None and bus not in flags.disk_buses:
            listed = ", ".join(flags.disk_buses) or "none"
            verdicts.append(
                _Verdict(
                    False,
                    f"libvirt's domain capabilities list no {bus} disk bus (buses: {listed})",
                )
            )
        return verdicts

    return check


def _backup_flag(flags: DomainCapsFlags) -> list[_Verdict]:
    if flags.backup is True:
        return [_Verdict(True, "libvirt's domain capabilities report <backup supported='yes'/>")]
    if flags.backup is False:
        return [_Verdict(False, "libvirt's domain capabilities report <backup supported='no'/>")]
    return []


def _no_flags(flags: DomainCapsFlags) -> list[_Verdict]:
    return []


REQUIREMENTS: tuple[tuple[Requirement, _DomcapsCheck], ...] = (
    (
        Requirement("iothread_vq_mapping", IOTHREAD_VQ_MAPPING_QEMU, IOTHREAD_VQ_MAPPING_LIBVIRT),
        _needs_bus("virtio"),
    ),
    (
        Requirement(
            "scsi_iothread_vq_mapping",
            SCSI_IOTHREAD_VQ_MAPPING_QEMU,
            SCSI_IOTHREAD_VQ_MAPPING_LIBVIRT,
        ),
        _needs_bus("scsi"),
    ),
    (Requirement("throttle_groups", THROTTLE_GROUPS_QEMU, THROTTLE_GROUPS_LIBVIRT), _no_flags),
    (Requirement("block_threshold", BLOCK_THRESHOLD_QEMU, BLOCK_THRESHOLD_LIBVIRT), _no_flags),
    (
        Requirement("incremental_backup", INCREMENTAL_BACKUP_QEMU, INCREMENTAL_BACKUP_LIBVIRT),
        _backup_flag,
    ),
)

# One disk's queues in several IOThreads (iothread-vq-mapping) while QEMU throttles that disk.
# QEMU's block/throttle-groups.c (10.0.2, and unchanged upstream as far as checked, 2026-12):
# schedule_next_request() runs with the group's QemuMutex tg->lock held and calls
# throttle_group_co_restart_queue(), which takes the member's CoMutex throttled_reqs_lock. With
# the member's requests coming from two IOThreads that CoMutex can be held by the other thread,
# so the coroutine yields still holding tg->lock, and every later request of the group (and the
# main loop, on any change of the group's limits) blocks on tg->lock for ever. Reproduced here:
# fio on two throttled 2-queue disks, deadlocked after ~6 minutes (gdb: both IOThreads in
# qemu_mutex_lock <- throttle_group_co_io_limits_intercept). No QEMU release is known to fix it.
THROTTLE_MULTI_IOTHREAD = "throttle_multi_iothread"
THROTTLE_MULTI_IOTHREAD_FIXED_QEMU: Version | None = None

CAPABILITY_NAMES: tuple[str, ...] = (
    *(requirement.name for requirement, _ in REQUIREMENTS),
    THROTTLE_MULTI_IOTHREAD,
    RBD_MULTI_IOTHREAD,
)


def capability_matrix(
    qemu: Version | None,
    libvirt: Version | None,
    domain_caps: DomainCapsFlags | None = None,
    rbd_driver: RbdDriverProbe | None = None,
) -> dict[str, Capability]:
    """Every feature's verdict, in a stable order. ``None`` versions count as unknown (unmet).

    ``rbd_driver``: what the installed rbd block module shows (``facts.rbd_capability``); it
    can only enable ``rbd_multi_iothread`` on a version the rule would refuse.

    Domain capabilities win where they speak: a ``supported='no'`` flag makes the feature
    unsupported even when the versions pass, and ``<backup supported='yes'/>`` makes incremental
    backup supported even when a vendor's version numbers look too old (backports).
    """
    matrix: dict[str, Capability] = {}
    for requirement, check in REQUIREMENTS:
        verdicts = check(domain_caps) if domain_caps is not None else []
        matrix[requirement.name] = _evaluate(requirement, qemu, libvirt, verdicts)
    matrix[THROTTLE_MULTI_IOTHREAD] = _throttle_multi_iothread(qemu)
    supported, reason = rbd_multi_iothread(qemu, rbd_driver)
    matrix[RBD_MULTI_IOTHREAD] = Capability(supported, reason, RBD_MULTI_IOTHREAD_NEEDS)
    return matrix


def _throttle_multi_iothread(qemu: Version | None) -> Capability:
    fixed = THROTTLE_MULTI_IOTHREAD_FIXED_QEMU
    needs = (
        f"QEMU >= {fixed.short()}" if fixed else "a QEMU whose throttle groups are multiqueue-safe"
    )
    if fixed is not None and qemu is not None and qemu >= fixed:
        return Capability(True, f"QEMU {qemu} has the throttle-group multiqueue fix", needs)
    return Capability(
        False,
        f"QEMU {qemu or '(unknown version)'} deadlocks a throttled disk whose queues run in "
        "several IOThreads (block/throttle-groups.c yields holding the group's lock)",
        needs,
    )


def _evaluate(
    requirement: Requirement,
    qemu: Version | None,
    libvirt: Version | None,
    verdicts: list[_Verdict],
) -> Capability:
    refusals = [verdict.reason for verdict in verdicts if not verdict.supported]
    confirmations = [verdict.reason for verdict in verdicts if verdict.supported]
    gap = _version_gap(requirement, qemu, libvirt)
    if gap is None and not refusals:
        return Capability(True, f"QEMU {qemu} and libvirt {libvirt} support it", requirement.needs)
    if gap is not None and confirmations and not refusals:
        reason = f"{confirmations[0]} (the version check alone would fail: {gap})"
        return Capability(True, reason, requirement.needs)
    reasons = ([gap] if gap is not None else []) + refusals
    return Capability(False, "; ".join(reasons), requirement.needs)


def _version_gap(
    requirement: Requirement, qemu: Version | None, libvirt: Version | None
) -> str | None:
    gaps = [
        (component, minimum, have)
        for component, minimum, have in (
            ("QEMU", requirement.qemu, qemu),
            ("libvirt", requirement.libvirt, libvirt),
        )
        if have is None or have < minimum
    ]
    if not gaps:
        return None
    if len(gaps) == 1:
        component, minimum, have = gaps[0]
        has = f"host has {have}" if have is not None else f"host {component} version unknown"
        return f"needs {component} >= {minimum.short()}, {has}"
    needs = " and ".join(f"{component} >= {minimum.short()}" for component, minimum, _ in gaps)
    haves = " and ".join(
        f"{component} {have}" if have is not None else f"an unknown {component} version"
        for component, _, have in gaps
    )
    return f"needs {needs}, host has {haves}"


def require_capability(matrix: Mapping[str, Capability], name: str) -> Capability:
    """Return the named capability, or raise ``CapabilityMissing`` carrying its reason."""
    try:
        capability = matrix[name]
    except KeyError:
        raise InvalidInput(
            f"unknown capability {name!r}; known: {', '.join(CAPABILITY_NAMES)}"
        ) from None
    if not capability.supported:
        raise CapabilityMissing(
            f"{name} is not available on this host: {capability.reason}",
            capability=name,
            needs=capability.needs,
        )
    return capability


def capabilities_from_facts_json(doc: Mapping[str, Any]) -> dict[str, Capability]:
    """Recompute the matrix from another host's ``facts --json`` (its version fields only)."""
    if not isinstance(doc, Mapping):
        raise InvalidInput(
            "facts file must hold a JSON object (the output of `blockplane facts --json`), "
            f"got {type(doc).__name__}"
        )
    qemu = _version_field(doc, "qemu")
    libvirt = _version_field(doc, "libvirt")
    return capability_matrix(qemu, libvirt, None)


def _version_field(doc: Mapping[str, Any], section_name: str) -> Version | None:
    section = doc.get(section_name)
    if section is None:
        raise InvalidInput(
            f"facts file has no '{section_name}' object "
            "(expected the output of `blockplane facts --json`)"
        )
    if not isinstance(section, Mapping):
        raise InvalidInput(
            f"facts file: '{section_name}' must be an object, got {type(section).__name__}"
        )
    if "version" not in section:
        raise InvalidInput(f"facts file: '{section_name}.version' is missing")
    value = section["version"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"facts file: '{section_name}.version' must be a string or null, "
            f"got {type(value).__name__}"
        )
    try:
        return parse_version(value)
    except InvalidInput as error:
        raise InvalidInput(f"facts file: '{section_name}.version': {error.message}") from error
