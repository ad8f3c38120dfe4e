"""resolve_accel: auto takes KVM only when the probe proved it; explicit kvm fails loudly."""

from __future__ import annotations

import pytest

from blockplane.errors import CapabilityMissing, InvalidInput
from blockplane.facts.accel import AccelChoice, KvmProbe, choose_accel, resolve_accel

WORKS = KvmProbe(True, "`qemu-system-x86_64 -accel kvm -cpu host`: a test vCPU ran guest code")
BROKEN = KvmProbe(False, "`qemu-system-x86_64 -accel kvm -cpu host` failed: failed to set MSR")


@pytest.mark.parametrize(
    ("requested", "probe", "selected"),
    [
        ("auto", WORKS, "kvm"),
        ("auto", BROKEN, "tcg"),
        ("kvm", WORKS, "kvm"),
        ("tcg", WORKS, "tcg"),
        ("tcg", BROKEN, "tcg"),
    ],
)
def test_resolve_accel(requested: str, probe: KvmProbe, selected: str) -> None:
    accel, reason = resolve_accel(requested, probe)
    assert accel == selected
    assert reason


def test_auto_fallback_reason_carries_the_probe_reason() -> None:
    _, reason = resolve_accel("auto", BROKEN)
    assert reason == f"auto: KVM is not usable, falling back to TCG: {BROKEN.reason}"


def test_explicit_kvm_on_broken_host_raises() -> None:
    with pytest.raises(CapabilityMissing) as caught:
        resolve_accel("kvm", BROKEN)
    assert caught.value.code == "capability.missing"
    assert "failed to set MSR" in str(caught.value)
    assert "--accel tcg" in str(caught.value)


@pytest.mark.parametrize("requested", ["", "KVM", "hvf", "xen"])
def test_unknown_accel_is_invalid_input(requested: str) -> None:
    with pytest.raises(InvalidInput):
        resolve_accel(requested, WORKS)


def test_choose_accel_and_json() -> None:
    choice = choose_accel("auto", BROKEN)
    assert choice == AccelChoice("auto", "tcg", resolve_accel("auto", BROKEN)[1])
    assert choice.to_json() == {
        "requested": "auto",
        "selected": "tcg",
        "reason": choice.reason,
    }
    assert BROKEN.to_json() == {"usable": False, "reason": BROKEN.reason}
