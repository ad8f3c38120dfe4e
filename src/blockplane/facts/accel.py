"""Choosing the accelerator: KVM when a probe proved it works, TCG otherwise.

Owns ``KvmProbe`` (the probe's verdict), ``AccelChoice`` and the pure ``resolve_accel``. The probe
itself, which starts QEMU, lives in ``facts.probe``; nothing here touches the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from blockplane.errors import CapabilityMissing, InvalidInput

Accel = Literal["kvm", "tcg"]
AccelRequest = Literal["auto", "kvm", "tcg"]
ACCEL_REQUESTS: tuple[str, ...] = get_args(AccelRequest)


@dataclass(frozen=True)
class KvmProbe:
    """Whether KVM can really run a vCPU here, and why (QEMU's own error when it cannot)."""

    usable: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"usable": self.usable, "reason": self.reason}


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator VMs will use, what was asked for, and why."""

    requested: AccelRequest
    selected: Accel
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"requested": self.requested, "selected": self.selected, "reason": self.reason}


def resolve_accel(requested: str, probe: KvmProbe) -> tuple[Accel, str]:
    """Pick ``kvm`` or ``tcg``: ``auto`` takes KVM only when the probe says it is usable.

    An explicit ``kvm`` on a host where KVM does not work raises ``CapabilityMissing``.
    """
    if requested not in ACCEL_REQUESTS:
        raise InvalidInput(
            f"unknown accelerator {requested!r}; use one of {', '.join(ACCEL_REQUESTS)}",
            code="accel.invalid",
        )
    if requested == "tcg":
        return "tcg", "TCG requested"
    if requested == "kvm":
        if not probe.usable:
            raise CapabilityMissing(
                f"--accel kvm was requested but KVM does not work on this host: {probe.reason}; "
                "use --accel tcg or --accel auto",
                capability="kvm",
            )
        return "kvm", f"KVM requested and usable: {probe.reason}"
    if probe.usable:
        return "kvm", f"auto: KVM is usable: {probe.reason}"
    return "tcg", f"auto: KVM is not usable, falling back to TCG: {probe.reason}"


def choose_accel(requested: str, probe: KvmProbe) -> AccelChoice:
    """``resolve_accel`` packed into a value for ``HostFacts``."""
    selected, reason = resolve_accel(requested, probe)
    request: AccelRequest = "kvm" if requested == "kvm" else "tcg" if requested == "tcg" else "auto"
    return AccelChoice(request, selected, reason)
