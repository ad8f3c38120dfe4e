"""The kernel half of the KVM probe, run for real: the test guest's kernel under TCG and KVM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockplane.facts import probe
from blockplane.facts.kernel_probe import ProbeKernel, probe_kernel_boots
from tests.harness import IMAGES

QEMU = probe.find_qemu_binary()
LINUX = ProbeKernel.in_images(IMAGES)

needs_kernel = pytest.mark.skipif(
    QEMU is None or LINUX is None, reason="needs QEMU and the test guest (make setup)"
)


def qemu_and_linux() -> tuple[str, ProbeKernel]:
    assert QEMU is not None and LINUX is not None
    return QEMU, LINUX


@needs_kernel
def test_a_kernel_that_boots_is_usable_and_the_verdict_is_kept(tmp_path: Path) -> None:
    binary, linux = qemu_and_linux()
    # a TCG boot on a loaded host can take longer than the agent's 10 s; this checks the verdict
    first = probe_kernel_boots(binary, linux, cache_dir=tmp_path, timeout=120,
                               accel_args=("-accel", "tcg"))
    assert first.usable, first.reason
    assert "booted and powered off" in first.reason
    assert len(list(tmp_path.iterdir())) == 1
    kept = probe_kernel_boots(binary, linux, cache_dir=tmp_path, timeout=120,
                              accel_args=("-accel", "tcg"))
    assert kept.usable
    assert kept.reason.endswith("(this boot's kept verdict)")


@needs_kernel
def test_a_kernel_that_never_powers_off_is_not_usable(tmp_path: Path) -> None:
    binary, linux = qemu_and_linux()
    stopped = ("-accel", "tcg", "-S")  # the vCPU never starts, as when KVM spins in the kernel
    verdict = probe_kernel_boots(binary, linux, cache_dir=tmp_path, timeout=2,
                                 accel_args=stopped)
    assert not verdict.usable
    assert "did not power the VM off within 2 s" in verdict.reason


def test_no_images_no_kernel(tmp_path: Path) -> None:
    assert ProbeKernel.in_images(tmp_path) is None


@needs_kernel
def test_the_kvm_verdict_on_this_host_needs_the_kernel_too() -> None:
    binary, linux = qemu_and_linux()
    firmware_only = probe.probe_kvm(binary)
    with_kernel = probe.probe_kvm(binary, linux=linux)
    if not firmware_only.usable or not os.path.exists(probe.KVM_DEVICE):
        assert with_kernel == firmware_only
    else:
        # Both are real verdicts of this host; the kernel's is the one that counts.
        assert "-kernel vmlinuz" in with_kernel.reason
